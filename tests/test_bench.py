"""The benchmark's pieces: Figshare folds and LGG splits kept apart, per-patient Dice, the cross-
validation summary, tiny real-data fold runs, and `python -m tumorlens.bench` end to end on a subset."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest

from tumorlens.bench import figshare_cv
from tumorlens.data import figshare, lgg
from tumorlens.metrics import volume_dice
from tumorlens.training.cli import FIGSHARE_CLASSES, block_holdout, train_val_packs


def _args(**kw):
    base = dict(dataset="brisc2025", fold=None, data_root=None, val_fraction=0.1, seed=42, limit=None)
    return argparse.Namespace(**{**base, **kw})


def test_volume_dice_on_hand_computed_stacks():
    assert volume_dice([]) == 1.0
    assert volume_dice([(0, 0, 0), (0, 0, 0)]) == 1.0                  # empty volume predicted empty
    assert volume_dice([(0, 5, 0), (0, 0, 0)]) == 0.0                  # false alarm on a healthy patient
    assert volume_dice([(10, 10, 10), (0, 0, 0)]) == 1.0               # perfect
    assert volume_dice([(4, 6, 8), (2, 2, 4)]) == pytest.approx(2 * 6 / (8 + 12))
    # not the mean of the slices' Dice: big slices weigh more
    assert volume_dice([(90, 100, 100), (0, 10, 0)]) == pytest.approx(180 / 210)


def test_block_holdout_keeps_runs_of_ids_together():
    ids = np.arange(1, 1001)
    tr, va = block_holdout(ids, 0.1, seed=0, block=40)
    assert len(set(tr) & set(va)) == 0 and len(tr) + len(va) == len(ids)
    assert set(ids[va] // 40).isdisjoint(set(ids[tr] // 40))
    assert 0.05 < len(va) / len(ids) < 0.15
    assert np.array_equal(va, block_holdout(ids, 0.1, seed=0, block=40)[1])  # seeded


def test_figshare_fold_packs_never_hold_the_test_fold():
    ds = figshare.load()["train"]
    fold_of = dict(zip(ds["file_name"], ds["fold"]))
    tr, va, names = train_val_packs("classification", 64, _args(dataset="figshare", fold=3, limit=24))
    assert names == list(FIGSHARE_CLASSES)
    for pack in (tr, va):
        assert all(fold_of[n] != 3 for n in pack["file_names"])
        assert set(pack["labels"]) <= {0, 1, 2}
    assert not set(tr["file_names"]) & set(va["file_names"])


def test_lgg_packs_are_patient_wise():
    split = lgg.recorded_split()
    tr, va, names = train_val_packs("segmentation", 64, _args(dataset="lgg", limit=16))
    assert names is None
    assert set(tr["patient_ids"]) <= set(split["train"])
    assert set(va["patient_ids"]) <= set(split["validation"])
    assert tr["masks"].shape[1:] == (64, 64) and tr["images"].shape[-1] == 3


def _fake_fold(kind, fold, n, correct_or_dice):
    base = {"made": {"when": "2026-11-23T00:00:00+00:00", "command": "x"},
            "training": {"epochs": 1, "best_epoch": 1, "train_seconds": 1.0, "hardware": {"cpu": "test"}}}
    if kind == "classifier":
        cm = np.zeros((3, 3), int)
        cm[0, 0], cm[1, 2] = correct_or_dice, n - correct_or_dice
        return {**base, "n": n, "accuracy": correct_or_dice / n, "macro_f1": 0.5, "confusion_matrix": cm.tolist(),
                "class_names": list(FIGSHARE_CLASSES)}
    return {**base, "n_tumor_slices": n, "dice_mean": correct_or_dice, "miou": correct_or_dice - 0.1}


def test_cross_validation_summary_pools_every_slice_once(tmp_path):
    for fold, (n, c) in enumerate([(100, 90), (300, 297)], start=1):
        (tmp_path / f"fold{fold}-classifier.json").write_text(json.dumps(_fake_fold("classifier", fold, n, c)))
    for fold, (n, d) in enumerate([(100, 0.8), (300, 0.9)], start=1):
        (tmp_path / f"fold{fold}-segmenter.json").write_text(json.dumps(_fake_fold("segmenter", fold, n, d)))
    s = figshare_cv.summarize(figshare_cv.load_results(tmp_path))
    assert s["classification"]["accuracy"] == pytest.approx(387 / 400)   # pooled, not the mean of 0.9 and 0.99
    assert s["classification"]["folds"] == [1, 2] and not s["classification"]["complete"]
    assert np.asarray(s["classification"]["confusion_matrix"]).sum() == 400
    assert s["segmentation"]["dice_mean"] == pytest.approx((80 + 270) / 400)


@pytest.mark.parametrize("kind", ["classifier", "segmenter"])
def test_a_tiny_real_figshare_fold_trains_scores_and_records_how(kind, tmp_path):
    r = figshare_cv.run_fold(kind, 2, run_root=tmp_path / "runs", out_dir=tmp_path / "out", epochs=1, threads=2,
                             extra_argv=["--limit", "12", "--max-steps", "1", "--batch-size", "4"])
    fold2 = int((np.asarray(figshare.load()["train"]["fold"]) == 2).sum())
    stored = json.loads((tmp_path / "out" / f"fold2-{kind}.json").read_text())
    assert stored["fold"] == 2 and stored["dataset_id"] == "figshare" and "per_image" not in stored
    assert stored["made"]["command"].startswith(f"python train/train_{kind}.py --dataset figshare --fold 2")
    assert stored["training"]["hardware"]["threads"] == 2
    if kind == "classifier":
        assert r["n"] == fold2 and r["class_names"] == list(FIGSHARE_CLASSES)
        assert np.asarray(r["confusion_matrix"]).sum() == fold2
    else:
        assert r["n_tumor_slices"] == fold2 and 0.0 <= r["dice_mean"] <= 1.0


def test_bench_runs_end_to_end_on_a_subset(tmp_path, capsys):
    """`python -m tumorlens.bench` on 6 test images per dataset, tiny speed rows, stored Figshare folds."""
    from tumorlens.bench.__main__ import main
    out = tmp_path / "bench"
    assert main(["--subset", "6", "--speed-runs", "2", "--out", str(out), "--cases-dir", str(tmp_path / "cases")]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["complete"] is False and "Subset run" in (out / "results.md").read_text()
    assert results["brisc"]["segmentation"]["n_tumor_slices"] == 6
    assert results["brisc"]["classification"]["n"] == 6
    assert results["lgg"]["n_slices"] == 6 and 0 <= results["lgg"]["dice_per_patient_mean"] <= 1
    audit = {(c["a"], c["b"]): c for c in results["audit"]["comparisons"]}
    assert audit[("brisc2025/train", "brisc2025/test")]["exact_pairs"] >= 7        # the README's byte-identical pairs
    assert any(c["scope"] == "across" and c["b_images_with_duplicate"] > 0 for c in audit.values())  # Figshare in BRISC
    assert (out / "audit" / "duplicates.json").is_file()
    assert {"vs_seed004_p50", "vs_seed001_pair_p50"} <= set(results["speed"]["ratios"])
    assert set(results["targets"]) >= {"brisc_dice_mean", "lgg_dice_per_patient_mean", "speed_vs_seed004"}
    for plot in results["plots"]:
        assert (out / plot).stat().st_size > 1000
    assert sorted(p.name for p in (tmp_path / "cases" / "brisc").iterdir()) == ["best.png", "worst.png"]
    assert "TumorLens benchmark" in capsys.readouterr().out
