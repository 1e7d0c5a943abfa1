"""The benchmark's pieces: Figshare folds and LGG splits kept apart, per-patient Dice, the cross-
validation summary, tiny real-data fold runs, and `python -m tumorlens.bench` end to end on a subset."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tumorlens.bench import figshare_cv
from tumorlens.data import figshare, lgg
from tumorlens.errors import ConfigError
from tumorlens.metrics import dice_per_patient, volume_dice
from tumorlens.training.specs import DataSpec
from tumorlens.training.splits import FIGSHARE_CLASSES, block_holdout, train_val_packs


def _packs(task: str, **kw):
    packs = train_val_packs(task, 64, DataSpec(**kw))
    return packs.train, packs.val, packs.class_names


def test_volume_dice_on_hand_computed_stacks():
    assert volume_dice([]) == 1.0
    assert volume_dice([(0, 0, 0), (0, 0, 0)]) == 1.0                  # empty volume predicted empty
    assert volume_dice([(0, 5, 0), (0, 0, 0)]) == 0.0                  # false alarm on a healthy patient
    assert volume_dice([(10, 10, 10), (0, 0, 0)]) == 1.0               # perfect
    assert volume_dice([(4, 6, 8), (2, 2, 4)]) == pytest.approx(2 * 6 / (8 + 12))
    # not the mean of the slices' Dice: big slices weigh more
    assert volume_dice([(90, 100, 100), (0, 10, 0)]) == pytest.approx(180 / 210)


def test_dice_per_patient_stacks_each_patients_slices():
    slices = [("a", 4, 6, 8), ("b", 0, 5, 0), ("a", 2, 2, 4), ("c", 0, 0, 0)]
    assert dice_per_patient(slices) == pytest.approx({"a": 2 * 6 / (8 + 12), "b": 0.0, "c": 1.0})


def test_block_holdout_keeps_runs_of_ids_together():
    ids = np.arange(1, 1001)
    tr, va = block_holdout(ids, 0.1, seed=0, block=40)
    assert len(set(tr) & set(va)) == 0 and len(tr) + len(va) == len(ids)
    assert set(ids[va] // 40).isdisjoint(set(ids[tr] // 40))
    assert 0.05 < len(va) / len(ids) < 0.15
    assert np.array_equal(va, block_holdout(ids, 0.1, seed=0, block=40)[1])  # seeded


@pytest.mark.usefixtures("data_home")
def test_figshare_fold_packs_never_hold_the_test_fold():
    ds = figshare.load()["train"]
    fold_of = dict(zip(ds["file_name"], ds["fold"]))
    tr, va, names = _packs("classification", dataset="figshare", fold=3, limit=24)
    assert names == list(FIGSHARE_CLASSES)
    for pack in (tr, va):
        assert all(fold_of[n] != 3 for n in pack["file_names"])
        assert set(pack["labels"]) <= {0, 1, 2}
    assert not set(tr["file_names"]) & set(va["file_names"])


@pytest.mark.usefixtures("data_home")
def test_lgg_packs_are_patient_wise():
    split = lgg.recorded_split()
    tr, va, names = _packs("segmentation", dataset="lgg", limit=16)
    assert names is None
    assert set(tr["patient_ids"]) <= set(split["train"])
    assert set(va["patient_ids"]) <= set(split["validation"])
    assert tr["masks"].shape[1:] == (64, 64) and tr["images"].shape[-1] == 3


def _fake_fold(kind, fold, n, correct_or_dice):
    base = {"made": {"when": "2026-11-23T00:00:00+00:00", "command": "x"}, "init": "test start",
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


@pytest.mark.usefixtures("data_home")
@pytest.mark.parametrize("kind", ["classifier", "segmenter"])
def test_a_tiny_real_figshare_fold_trains_scores_and_records_how(kind, tmp_path):
    r = figshare_cv.run_fold(kind, 2, run_root=tmp_path / "runs", out_dir=tmp_path / "out", epochs=1, threads=2,
                             smoke=figshare_cv.Smoke(limit=12, max_steps=1, batch_size=4))
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


@pytest.mark.usefixtures("data_home")
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


# -- the BRISC-minus-Figshare start ------------------------------------------------------------

def _plant_figshare_slice_in_brisc_train(brisc_root, figshare_root) -> str:
    """Copy a Figshare slice into BRISC train as BRISC did (resized, re-encoded JPEG); its name."""
    from PIL import Image
    name = "brisc2025_train_09999_gl_ax_t1.jpg"
    im = Image.open(figshare_root / "images" / "1.jpg").convert("L").resize((300, 300), Image.BILINEAR)
    im.save(brisc_root / "classification_task" / "train" / "glioma" / name, quality=90)
    return name


@pytest.fixture
def trees_with_a_shared_slice(data_home, tmp_path, monkeypatch):
    from conftest import build_brisc_tree, build_figshare_tree
    from tumorlens import audit
    monkeypatch.setenv(audit.CACHE_ENV, str(tmp_path / "audit-cache"))
    root = tmp_path / "data"
    build_brisc_tree(data_home, root / "brisc2025")
    build_figshare_tree(data_home, root / "figshare")
    return root, _plant_figshare_slice_in_brisc_train(root / "brisc2025", root / "figshare")


def test_brisc_training_leaves_out_the_images_the_audit_finds_in_figshare(trees_with_a_shared_slice):
    from tumorlens import audit
    root, planted = trees_with_a_shared_slice
    assert audit.brisc_train_overlap("figshare", root, progress=False) == {planted}
    assert audit.brisc_train_overlap("figshare", root / "brisc2025", progress=False) == {planted}
    with pytest.raises(ValueError):
        audit.brisc_train_overlap("brisc2025", root)

    packs = train_val_packs("classification", 64, DataSpec(root=root / "brisc2025", exclude_duplicates_of="figshare"))
    kept = set(packs.train["file_names"]) | set(packs.val["file_names"])
    tr, va, _ = _packs("classification", root=root / "brisc2025")
    assert planted not in kept and planted in set(tr["file_names"]) | set(va["file_names"])
    assert packs.provenance["excluded_duplicates_of"] == "figshare"
    assert packs.provenance["n_excluded"] == 1 and packs.provenance["n_kept"] == len(kept)


def test_a_classifier_start_keeps_the_head_rows_of_figshares_classes():
    from tumorlens.models import load_classifier
    from tumorlens.training.recipes import init_state_from
    shipped = "models/tumorlens-efficientnet-lite0-brisc2025"
    model, _, labels = load_classifier(shipped)
    head = model.pretrained_cfg["classifier"]
    state = init_state_from(shipped, "classifier", list(FIGSHARE_CLASSES))
    rows = [labels.index(c) for c in FIGSHARE_CLASSES]
    assert torch_equal(state[f"{head}.weight"], model.state_dict()[f"{head}.weight"].float()[rows])
    assert torch_equal(state[f"{head}.bias"], model.state_dict()[f"{head}.bias"].float()[rows])
    with pytest.raises(ConfigError, match="no head"):
        init_state_from(shipped, "classifier", ["glioma", "astrocytoma"])


def torch_equal(a, b) -> bool:
    import torch
    return torch.equal(a, b)


def test_a_model_that_saw_figshare_slices_cannot_start_a_fold():
    with pytest.raises(ConfigError, match="exclude-duplicates-of figshare"):
        figshare_cv.checked_start("models/tumorlens-efficientnet-lite0-brisc2025")


def test_a_tiny_brisc_start_is_trained_without_figshare_and_starts_a_fold(trees_with_a_shared_slice, tmp_path):
    root, _ = trees_with_a_shared_slice
    tiny = figshare_cv.Smoke(limit=12, max_steps=1, batch_size=4)
    folder, start = figshare_cv.train_start("classifier", run_root=tmp_path / "runs", epochs=1, threads=2,
                                            data_home=root, smoke=tiny)
    assert start["data"]["n_excluded"] == 1 and "--exclude-duplicates-of figshare" in start["command"]
    assert figshare_cv.train_start("classifier", run_root=tmp_path / "runs", data_home=root)[0] == folder  # reused
    out = figshare_cv.results_dir(tmp_path / "out", "brisc")
    r = figshare_cv.run_fold("classifier", 2, run_root=tmp_path / "runs", out_dir=out, epochs=1, threads=2,
                             smoke=tiny, start=start)
    stored = json.loads((out / "fold2-classifier.json").read_text())
    assert f"--init-from {folder}" in stored["made"]["command"] and stored["start"]["model"] == str(folder)
    assert stored["init"].startswith("BRISC-trained classifier with the 1 BRISC train images")
    assert "--start brisc" in stored["made"]["rerun"] and r["class_names"] == list(FIGSHARE_CLASSES)


def test_the_figshare_headline_is_the_brisc_start_only_once_all_its_folds_are_stored(tmp_path):
    from tumorlens.bench.report import write_markdown
    from tumorlens.bench.run import figshare_section
    brisc_dir = figshare_cv.results_dir(tmp_path, "brisc")
    brisc_dir.mkdir()
    for fold in range(1, 6):
        (tmp_path / f"fold{fold}-classifier.json").write_text(json.dumps(_fake_fold("classifier", fold, 100, 90)))
    for fold in range(1, 5):
        (brisc_dir / f"fold{fold}-classifier.json").write_text(json.dumps(_fake_fold("classifier", fold, 100, 95)))
    f = figshare_section(tmp_path)
    assert f["classification"]["start"] == "imagenet" and f["classification"]["accuracy"] == pytest.approx(0.9)
    assert f["starts"]["brisc"]["classification"]["folds"] == [1, 2, 3, 4] and "segmentation" not in f
    (brisc_dir / "fold5-classifier.json").write_text(json.dumps(_fake_fold("classifier", 5, 100, 95)))
    f = figshare_section(tmp_path)
    assert f["classification"]["start"] == "brisc" and f["classification"]["accuracy"] == pytest.approx(0.95)
    results = {**json.loads(open("benchmarks/results.json").read()), "figshare": f}
    md = write_markdown(results, tmp_path / "results.md").read_text()
    assert "| brisc | 3-class accuracy (folds [1, 2, 3, 4, 5], n=500) | **95.00%** |" in md
    assert "| imagenet | 3-class accuracy (folds [1, 2, 3, 4, 5], n=500) | 90.00% |" in md
