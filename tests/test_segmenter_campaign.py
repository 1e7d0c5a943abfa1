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
    campaign.write_report([stage("long", 0.8751, 0.8731), stage("worse", 0.8700, 0.8731, done=False)],
                          {"brisc2025": {**speed, "folders": {"shipped": "a/shipped", "candidate": "b/cand"}}}, {},
                          tmp_path)
    md = (tmp_path / "segmenter_v3.md").read_text()
    rows = {line.split("|")[1].strip(): line for line in md.splitlines() if line.startswith("| long") or
            line.startswith("| worse")}
    assert rows["long"].rstrip().endswith("| yes |") and "0.8751" in rows["long"] and "0.8731" in rows["long"]
    assert rows["worse"].rstrip().endswith("| no |") and "24/30 (not finished)" in rows["worse"]
    assert "shipped 40.0 ms (shipped), candidate 50.0 ms p50 (cand) = **1.25x** (limit 2x: met)" in md
    assert "not scored on test" in md and "## LGG" not in md
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
    campaign.write_report([stage("long", 0.8751, 0.8731)], {}, {"brisc2025": candidate}, tmp_path / "with")
    md = (tmp_path / "with" / "segmenter_v3.md").read_text()
    assert "| candidate (candidate) | 0.8912 | 0.9401 |" in md and "not scored on test" not in md
    assert json.loads((tmp_path / "with" / "segmenter_v3.json").read_text())["candidates"] == {
        "brisc2025": str(candidate)}
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


def test_lgg_candidate_gets_its_own_test_section_beside_the_shipped_lgg_model(tmp_path):
    shipped = json.loads((campaign.SHIPPED_BY_DATASET["lgg"] / "eval.json").read_text())
    candidate = tmp_path / "lgg-candidate"
    candidate.mkdir()
    (candidate / "eval.json").write_text(json.dumps({**shipped, "dice_per_patient_mean": 0.8712,
                                                     "dice_per_patient_median": 0.8899}))
    campaign.write_report([stage("lgg-stage", 0.79, 0.75)], {}, {"lgg": candidate}, tmp_path / "out")
    md = (tmp_path / "out" / "segmenter_v3.md").read_text()
    section = md.split("## LGG test patients (eval.json)")[1]
    assert f"| {shipped['dice_per_patient_mean']:.4f} | {shipped['dice_per_patient_median']:.4f} |" in section
    assert "| candidate (lgg-candidate) | 0.8712 | 0.8899 |" in section
    assert "## BRISC 2025 test" in md.split("## LGG")[0]  # the BRISC section stays, its candidate not scored
    summary = json.loads((tmp_path / "out" / "segmenter_v3.json").read_text())
    assert summary["test"]["lgg"]["candidate"]["dice_per_patient_mean"] == 0.8712
    assert summary["compared_with"]["lgg"] == campaign.SHIPPED_BY_DATASET["lgg"].name


def test_earlier_stages_are_kept_unless_scored_again_and_old_speed_files_read_as_brisc(tmp_path):
    earlier = [stage("a", 0.87, 0.87), stage("b", 0.86, 0.87)]
    again = stage("b", 0.88, 0.87)
    merged = campaign.merge_stages(earlier, [again, stage("c", 0.85, 0.87)])
    assert [s["stage"] for s in merged] == ["a", "b", "c"] and merged[1] is again
    old = tmp_path / "speed.json"
    old.write_text(json.dumps({"ms": {}, "ratio": 1.1}))
    assert campaign.read_speeds(old) == {"brisc2025": {"ms": {}, "ratio": 1.1}}
    old.write_text(json.dumps({"lgg": {"ms": {}, "ratio": 1.2}}))
    assert campaign.read_speeds(old) == {"lgg": {"ms": {}, "ratio": 1.2}}
    assert campaign.read_speeds(tmp_path / "missing.json") == {}
