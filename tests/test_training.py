"""The shared training loop: exact resume, the precision picker, and the metric edge cases."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tumorlens.metrics import classification_report, dice, iou, pixel_accuracy
from tumorlens.training.loop import TrainConfig, Trainer
from tumorlens.hardware import cpu_flags, pick_precision
from tumorlens.training.tasks import ClassificationSetup, ClassificationTask, SegmentationSetup, SegmentationTask


def _tiny_seg_pack(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 255, (n, 64, 64, 3), dtype=np.uint8)
    masks = np.zeros((n, 64, 64), np.uint8)
    for i in range(0, n, 2):
        masks[i, 20:40, 16:36] = 1
    return {"images": images, "masks": masks, "labels": np.arange(n) % 4}


def _seg_trainer(run_dir, **kw):
    task = SegmentationTask(_tiny_seg_pack(8, 0), _tiny_seg_pack(4, 1),
                            SegmentationSetup(imagenet_init=False, input_size=64, crop=48, val_batch=4))
    cfg = TrainConfig(epochs=2, batch_size=2, lr=1e-3, precision="fp32", seed=7, num_threads=2, **kw)
    return Trainer(task, cfg, run_dir)


def _cls_trainer(run_dir):
    pack = {"images": np.random.default_rng(0).integers(0, 255, (8, 64, 64, 3), dtype=np.uint8),
            "labels": np.arange(8) % 4}
    task = ClassificationTask(pack, pack, ["a", "b", "c", "d"],
                              ClassificationSetup(arch="mobilenetv2_100", imagenet_init=False, input_size=64, val_batch=8))
    return Trainer(task, TrainConfig(epochs=2, batch_size=2, precision="fp32", seed=3, num_threads=2), run_dir)


@pytest.mark.slow  # trains
@pytest.mark.parametrize("make", [_seg_trainer, _cls_trainer], ids=["segmenter", "classifier"])
def test_resume_gives_the_same_state_as_an_uninterrupted_run(tmp_path, make):
    whole = make(tmp_path / "whole")
    whole.fit()
    first = make(tmp_path / "split")
    first.fit(stop_after=5)  # killed mid-epoch 2 (4 steps per epoch)
    assert first.state["global_step"] == 5 and not first.state["done"]
    second = make(tmp_path / "split")
    second.fit()
    assert second.state["global_step"] == whole.state["global_step"] == 8
    a = whole.accelerator.unwrap_model(whole.model).state_dict()
    b = second.accelerator.unwrap_model(second.model).state_dict()
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert second.state["history"] == whole.state["history"] or \
        [h["score"] for h in second.state["history"]] == [h["score"] for h in whole.state["history"]]
    assert (tmp_path / "split" / "best" / "model.safetensors").is_file()


CPUINFO_AVX2 = "processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu sse avx avx2 fma\n"
CPUINFO_BF16 = "processor\t: 0\nmodel name\t: Intel Xeon\nflags\t\t: fpu avx2 avx512f avx512_bf16\n"
CPUINFO_AMX = "processor\t: 0\nmodel name\t: Intel Xeon\nflags\t\t: fpu avx2 avx512f amx_bf16 amx_tile\n"


def test_precision_picker_follows_the_cpu_flags():
    assert pick_precision("auto", "cpu", cpu_flags(CPUINFO_AVX2)) == "fp32"
    assert pick_precision("auto", "cpu", cpu_flags(CPUINFO_BF16)) == "bf16"
    assert pick_precision("auto", "cpu", cpu_flags(CPUINFO_AMX)) == "bf16"
    assert pick_precision("auto", "cuda", cpu_flags(CPUINFO_AVX2)) == "bf16"
    assert pick_precision("fp32", "cpu", cpu_flags(CPUINFO_BF16)) == "fp32"
    assert pick_precision("bf16", "cpu", cpu_flags(CPUINFO_AVX2)) == "bf16"
    with pytest.raises(ValueError):
        pick_precision("fp8")


@pytest.mark.slow  # trains
def test_trainer_records_the_precision_and_cpu_it_used(tmp_path):
    trainer = _seg_trainer(tmp_path, max_steps=1)
    assert trainer.hardware["precision"] in ("bf16", "fp32") and trainer.hardware["cpu"]
    trainer.fit()
    info = (tmp_path / "best" / "training_info.json").read_text()
    assert '"precision": "fp32"' in info and '"cpu"' in info


def test_dice_iou_pixel_accuracy_edge_cases():
    empty = np.zeros((4, 4), bool)
    a = empty.copy()
    a[:2, :2] = True  # 4 px
    b = empty.copy()
    b[1:3, 1:3] = True  # 4 px, 1 shared with a
    far = empty.copy()
    far[3, 3] = True
    assert dice(empty, empty) == 1.0 and iou(empty, empty) == 1.0
    assert dice(a, a) == 1.0 and iou(a, a) == 1.0
    assert dice(a, far) == 0.0 and iou(a, far) == 0.0
    assert dice(a, empty) == 0.0 and dice(empty, a) == 0.0 and iou(empty, a) == 0.0
    assert dice(a, b) == pytest.approx(2 * 1 / 8) and iou(a, b) == pytest.approx(1 / 7)
    assert pixel_accuracy(a, b) == pytest.approx(10 / 16)


def test_classification_report_by_hand():
    truth = [0, 0, 1, 1, 2, 2]
    pred = [0, 1, 1, 1, 2, 0]
    r = classification_report(truth, pred, ["x", "y", "z"])
    assert r["accuracy"] == pytest.approx(4 / 6)
    assert r["per_class"]["x"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert r["per_class"]["y"]["precision"] == pytest.approx(2 / 3) and r["per_class"]["y"]["recall"] == 1.0
    assert r["per_class"]["z"]["f1"] == pytest.approx(2 / 3)
    assert r["macro_f1"] == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    assert r["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]


def test_postprocess_tuning_picks_the_best_tumor_dice_that_keeps_healthy_slices_clean():
    from tumorlens.postprocess import tune_postprocess
    truth = np.zeros((64, 64), bool)
    truth[8:40, 8:40] = True
    prob = np.where(truth, 0.42, 0.05).astype(np.float32)  # the tumor only clears thresholds under 0.42
    small_truth = np.zeros((64, 64), bool)
    small_truth[50:53, 50:53] = True  # a 9 px tumor: only a light clean-up keeps it
    small = np.where(small_truth, 0.9, 0.05).astype(np.float32)
    healthy_truth = np.zeros((64, 64), bool)
    healthy = np.zeros((64, 64), np.float32)
    healthy[2:6, 2:6] = 0.9  # a 16 px false alarm (>= 50 px at 512): a clean-up must remove it
    tuned = tune_postprocess([prob, small, healthy], [truth, small_truth, healthy_truth], thresholds=(0.3, 0.4, 0.5),
                             fractions=(0.0, 0.002, 0.005))
    # 0.002 x 4096 = 8 px keeps the 16 px alarm; 0.005 (20 px) drops it, and the 9 px tumor with it
    assert tuned["threshold"] in (0.3, 0.4) and tuned["min_component_fraction"] == 0.005
    assert tuned["val_healthy_fp_rate"] == 0.0
    assert tuned["val_dice_tumor"] == pytest.approx(0.5)
    assert tuned["n_val_tumor"] == 2 and tuned["n_val_healthy"] == 1
    # allowing every healthy slice to be masked, the clean-up that keeps the small tumor wins
    loose = tune_postprocess([prob, small, healthy], [truth, small_truth, healthy_truth], thresholds=(0.3, 0.4, 0.5),
                             fractions=(0.0, 0.002, 0.005), max_healthy_fp=1.0)
    assert loose["min_component_fraction"] in (0.0, 0.002) and loose["val_dice_tumor"] == pytest.approx(1.0)
    assert loose["val_healthy_fp_rate"] == 1.0


def test_postprocess_tuning_per_patient_scores_stacked_volumes():
    from tumorlens.postprocess import tune_postprocess
    truth = np.zeros((32, 32), bool)
    truth[8:24, 8:24] = True
    faint = np.where(truth, 0.25, 0.0).astype(np.float32)  # an under-confident model: only a low threshold finds it
    empty_truth = np.zeros((32, 32), bool)
    speck = np.zeros((32, 32), np.float32)
    speck[0, 0] = 0.9  # one stray pixel on a healthy slice of the same patient
    tuned = tune_postprocess([faint, speck, faint], [truth, empty_truth, truth], thresholds=(0.2, 0.5),
                             fractions=(0.0, 0.002), patients=["a", "a", "b"])
    assert tuned["threshold"] == 0.2 and tuned["min_component_fraction"] == 0.002
    assert tuned["val_dice_per_patient"] == pytest.approx(1.0) and tuned["n_val_patients"] == 2
    # without the clean-up patient a's volume carries the stray pixel: 2*256 / (257 + 256)
    assert tuned["grid"]["dice_per_patient"][0][0] == pytest.approx((2 * 256 / 513 + 1) / 2, abs=1e-5)
    assert "per-patient" in tuned["rule"]


def test_default_threshold_grid_reaches_faint_maps():
    from tumorlens.postprocess import THRESHOLD_GRID, tune_postprocess
    truth = np.zeros((32, 32), bool)
    truth[8:24, 8:24] = True
    rim = truth & ~np.pad(np.ones((12, 12), bool), 10)  # the margin of the tumor, as LGG maps show it
    faint = np.where(truth, np.where(rim, 0.015, 0.6), 0.0).astype(np.float32)
    tuned = tune_postprocess([faint, faint], [truth, truth], patients=["a", "b"])
    assert min(THRESHOLD_GRID) <= 0.01 and tuned["threshold"] == 0.01
    assert tuned["val_dice_per_patient"] == pytest.approx(1.0)


def test_classifier_tta_is_chosen_on_validation_by_accuracy_then_nll():
    from tumorlens.postprocess import choose_tta
    labels = np.array([0, 1, 1])
    plain = np.array([[2.0, 0.0], [0.0, 1.0], [1.0, 0.0]])  # third wrong
    flipped = np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0]])  # mean of both views gets it right
    chosen = choose_tta(plain, flipped, labels)
    assert chosen["tta_hflip"] and chosen["val_accuracy"] == {"plain": 2 / 3, "hflip_tta": 1.0}
    worse = np.array([[0.0, 3.0], [0.0, 1.0], [1.0, 0.0]])  # the mean now gets the first wrong
    assert choose_tta(plain, worse, labels)["tta_hflip"] is False
    # equal accuracy: the lower NLL decides (a flipped view more confident where right)
    sure = np.array([[4.0, 0.0], [0.0, 3.0], [1.0, 0.0]])
    assert choose_tta(plain, sure, labels)["tta_hflip"] is True
    assert choose_tta(plain, plain, labels)["tta_hflip"] is False  # no better: off


def test_segmenter_validation_scores_lgg_per_patient_and_other_data_per_slice():
    from tumorlens.training.tasks import SegmentationTask
    truth = np.zeros((3, 32, 32), np.uint8)
    truth[0, 4:12, 4:12] = 1  # patient a: one tumor slice and one healthy slice
    truth[2, 4:20, 4:20] = 1  # patient b
    probs = np.zeros((3, 32, 32), np.float32)
    probs[0, 4:12, 4:12] = 0.9
    probs[1, 0:4, 0:4] = 0.9  # a 16 px false alarm on a's healthy slice
    probs[2, 4:20, 4:12] = 0.9  # half of b's tumor
    train = {"images": np.zeros((1, 32, 32, 3), np.uint8), "masks": np.zeros((1, 32, 32), np.uint8)}
    images = np.zeros((3, 32, 32, 3), np.uint8)

    def scored(val):
        task = SegmentationTask(train, val)
        task.predict_probs = lambda model, imgs, device, autocast: probs
        return task.validate(None, "cpu", None)

    per_patient = scored({"images": images, "masks": truth, "patient_ids": np.array(["a", "a", "b"])})
    expected = (2 * 64 / (80 + 64) + 2 * 128 / (128 + 256)) / 2
    assert per_patient["val_dice_per_patient"] == pytest.approx(expected)
    assert per_patient["score"] == per_patient["val_dice_per_patient"]
    per_slice = scored({"images": images, "masks": truth, "patient_ids": np.array(["", "", ""])})  # Figshare: ids lost
    assert "val_dice_per_patient" not in per_slice
    assert per_slice["score"] == pytest.approx((1 + 0 + 2 * 128 / (128 + 256)) / 3)
