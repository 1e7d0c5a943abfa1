"""The Segmentation v3 campaign report: stages, the shipping decision, the speed ratio and the test rows come
from the inputs, never typed in (no model runs here)."""

from __future__ import annotations

import json
import shutil

from tumorlens.bench import segmenter_campaign as campaign


def stage(name: str, candidate: float, shipped: float, done: bool = True) -> dict:
    tuned = {"val_healthy_fp_rate": 0.0093, "threshold": 0.5, "min_component_fraction": 0.001, "n_val_tumor": 394,
             "n_val_healthy": 107}
    return {"stage": name, "setup": {"encoder": "tu-tf_efficientnet_lite2", "decoder": "unet", "crop": 192,
                                     "input_size": 256},
            "init_from": None, "extra_train": None, "epochs": 30, "epochs_done": 24, "done": done, "best_epoch": 21,
            "cpu_hours_estimate": 4.5, "candidate": {**tuned, "val_dice_tumor": candidate},
            "shipped": {**tuned, "val_dice_tumor": shipped}, "average_with_shipped": {**tuned, "val_dice_tumor": 0.88},
            "beats_shipped": candidate > shipped,
            "curve": [{"epoch": e, "train_loss": 1 / e, "val_dice_tumor": 0.8 + e / 100} for e in (1, 2, 3)]}


def test_report_says_which_stage_ships_and_reads_the_test_scores(tmp_path):
    speed = {"ms": {"shipped": {"p50_ms": 40.0}, "candidate": {"p50_ms": 50.0}}, "ratio": 1.25, "within_limit": True,
             "input": "one 512x512 px slice", "precision": "bf16", "hardware": {"cpu": "X", "threads": 2},
             "measured": "2026-12-03 08:00"}
    campaign.write_report([stage("long", 0.8751, 0.8731), stage("worse", 0.8700, 0.8731, done=False)], speed, None,
                          tmp_path)
    md = (tmp_path / "segmenter_v3.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| long") or
            line.startswith("| worse")}
    assert rows["long"].rstrip().endswith("| yes |") and "0.8751" in rows["long"] and "0.8731" in rows["long"]
    assert rows["worse"].rstrip().endswith("| no |") and "24/30 (running)" in rows["worse"]
    assert "**1.25x** (limit 2x: met)" in md and "not scored on test" in md
    assert (tmp_path / "segmenter_v3_curves.png").stat().st_size > 0
    assert "stages long 4.50, worse 4.50 = **9.00 CPU-hours**" in md  # no ablation.json beside it here
    (tmp_path / "ablation.json").write_text(json.dumps({"arms": [{"cpu_hours": 1.25}, {"cpu_hours": 0.5}]}))
    assert campaign.compute_line([stage("long", 0.8751, 0.8731)], tmp_path / "ablation.json").endswith(
        "ablation 1.75 CPU-hours (2 arms, ablation.json) + stages long 4.50 = **6.25 CPU-hours**.")
    shipped = json.loads((campaign.SHIPPED / "eval.json").read_text())
    assert f"| {shipped['dice_mean']:.4f} | {shipped['dice_median']:.4f} |" in md

    candidate = tmp_path / "candidate"  # a released folder: its eval.json's numbers become the test row
    candidate.mkdir()
    ev = {**shipped, "dice_mean": 0.8912, "dice_median": 0.9401}
    (candidate / "eval.json").write_text(json.dumps(ev))
    campaign.write_report([stage("long", 0.8751, 0.8731)], None, candidate, tmp_path / "with")
    md = (tmp_path / "with" / "segmenter_v3.md").read_text()
    assert "| candidate (candidate) | 0.8912 | 0.9401 |" in md and "not scored on test" not in md
    assert json.loads((tmp_path / "with" / "segmenter_v3.json").read_text())["candidate"] == str(candidate)
    shutil.rmtree(candidate)


def test_cpu_hours_follow_each_starts_threads(tmp_path):
    log = tmp_path / "log.jsonl"
    events = [("2026-12-03T04:00:00", "start", 1), ("2026-12-03T05:00:00", "epoch", None),
              ("2026-12-03T06:00:00", "start", 2), ("2026-12-03T06:30:00", "epoch", None),
              ("2026-12-03T07:00:00", "epoch", None)]
    log.write_text("\n".join(json.dumps({"time": t, "event": e, **({"hardware": {"threads": n}} if n else {})})
                             for t, e, n in events) + "\n")
    assert campaign.logged_cpu_hours(log) == 1.0 * 1 + 1.0 * 2


def test_per_slice_dice_is_what_tuning_averages_and_the_bootstrap_brackets_it():
    import numpy as np
    from tumorlens.postprocess import tune_postprocess
    rng = np.random.default_rng(1)
    truths = [np.zeros((64, 64), bool) for _ in range(12)]
    for k, t in enumerate(truths[:9]):
        t[10 + k:30 + k, 12:34] = True
    probs = [np.clip(t * 0.8 + rng.random(t.shape) * 0.45, 0, 1).astype(np.float32) for t in truths]
    tuned = tune_postprocess(probs, truths)
    per_slice = campaign.tumor_slice_dice(probs, truths, tuned)
    assert len(per_slice) == 9 and abs(per_slice.mean() - tuned["val_dice_tumor"]) < 1e-9
    same = campaign.paired_bootstrap(per_slice, per_slice)
    assert same["mean_difference"] == 0 and same["ci95"] == [0, 0]
    better = campaign.paired_bootstrap(per_slice + 0.01, per_slice)
    assert better["ci95"][0] > 0 and better["mean_difference"] == 0.01
    noisy = campaign.paired_bootstrap(per_slice + rng.normal(0, 0.1, 9), per_slice)
    assert noisy["ci95"][0] < noisy["mean_difference"] < noisy["ci95"][1]
