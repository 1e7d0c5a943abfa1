"""The segmenter ablation options (encoder, decoder, loss, joint head, encoder start): each builds,
trains two steps, and round-trips through save_pretrained / smp.from_pretrained with identical outputs.
The ImageNet checkpoints' checksums and their mapping onto timm are checked on a real photo."""

from __future__ import annotations

import hashlib
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import segmentation_models_pytorch as smp
import torch
from PIL import Image

from tumorlens import imagenet
from tumorlens.models import load_segmenter
from tumorlens.training.loop import TrainConfig, Trainer
from tumorlens.training.tasks import SegmentationSetup, SegmentationTask, encoder_normalization

GRACE_HOPPER = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
MILITARY_UNIFORM = 652  # ImageNet class of the portrait in every ImageNet tutorial


def _pack(n: int, seed: int) -> dict:
    rng = np.random.default_rng(seed)
    masks = np.zeros((n, 64, 64), np.uint8)
    masks[::2, 20:40, 16:36] = 1
    return {"images": rng.integers(0, 255, (n, 64, 64, 3), dtype=np.uint8), "masks": masks,
            "labels": np.arange(n) % 4, "file_names": np.asarray([f"s{i}.jpg" for i in range(n)])}


OPTIONS = {
    "scse": dict(decoder="unet-scse"),
    "unetplusplus": dict(decoder="unetplusplus"),
    "fpn": dict(decoder="fpn"),
    "pos-weight": dict(bce_pos_weight=3.0),
    "joint": dict(joint_weight=0.5),
    "lite2": dict(encoder="tu-tf_efficientnet_lite2"),
}


@pytest.mark.slow  # trains
@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_option_trains_two_steps_and_round_trips(tmp_path, option):
    setup = SegmentationSetup(imagenet_init=False, input_size=64, crop=64, val_batch=4, **OPTIONS[option])
    task = SegmentationTask(_pack(8, 0), _pack(4, 1), setup)
    trainer = Trainer(task, TrainConfig(epochs=1, batch_size=4, max_steps=2, precision="fp32", seed=1, num_threads=2),
                      tmp_path / "run")
    state = trainer.fit()
    assert state["global_step"] == 2
    best = tmp_path / "run" / "best"
    loaded = smp.from_pretrained(str(best)).eval()
    assert loaded.classification_head is None  # the joint head trains, it does not ship
    ours, pre = load_segmenter(best)
    assert tuple(pre.mean) == encoder_normalization(setup.encoder)[0]
    trained = trainer.accelerator.unwrap_model(trainer.model).float().eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = trained(x)
        expected = expected[0] if isinstance(expected, tuple) else expected
        torch.testing.assert_close(loaded(x), expected)
        torch.testing.assert_close(ours(x), expected)


def test_joint_loss_adds_the_tumor_type_term():
    pack = _pack(4, 0)
    plain = SegmentationTask(pack, pack, SegmentationSetup(imagenet_init=False, input_size=64, crop=64))
    joint = SegmentationTask(pack, pack, SegmentationSetup(imagenet_init=False, input_size=64, crop=64, joint_weight=1.0))
    torch.manual_seed(0)
    model = joint.build_model().eval()
    batch = joint.make_batch(np.arange(4), torch.Generator().manual_seed(0), torch.device("cpu"))
    with torch.no_grad():
        masks, types = model(batch["x"])
        expected = (plain.bce(masks, batch["mask"]) + plain.dice_loss(masks, batch["mask"])
                    + torch.nn.functional.cross_entropy(types, batch["label"]))
        torch.testing.assert_close(joint.loss(model, batch), expected)


def test_pos_weight_weighs_tumor_pixels():
    task = SegmentationTask(_pack(2, 0), _pack(2, 1), SegmentationSetup(imagenet_init=False, bce_pos_weight=3.0))
    logits, target = torch.zeros(1, 1, 2, 2), torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
    # log(2) per pixel; the one tumor pixel counts three times: (3 + 1 + 1 + 1) / 4 x log 2
    assert task.bce(logits, target).item() == pytest.approx(1.5 * np.log(2), rel=1e-6)


def test_lite2_checkpoint_checksum_is_verified():
    path = imagenet.checkpoint_path("efficientnet_lite2")
    assert hashlib.sha256(path.read_bytes()).hexdigest() == imagenet.CHECKPOINTS["efficientnet_lite2"].sha256
    assert path.name.split("-")[-1].split(".")[0] == imagenet.CHECKPOINTS["efficientnet_lite2"].sha256[:8]


def test_a_wrong_checksum_is_refused(monkeypatch):
    ck = imagenet.CHECKPOINTS["efficientnet_lite2"]
    monkeypatch.setitem(imagenet.CHECKPOINTS, "efficientnet_lite2", ck.__class__(ck.package, ck.relpath, "0" * 64, ck.install))
    with pytest.raises(Exception, match="checksum mismatch"):
        imagenet.checkpoint_path("efficientnet_lite2")


@pytest.mark.parametrize("arch", ["tf_efficientnet_lite2", "tf_efficientnet_lite0"])
def test_lite_checkpoints_map_onto_timm_by_an_imagenet_prediction(arch):
    import timm
    model = imagenet.timm_imagenet_model(arch)
    cfg = timm.get_pretrained_cfg(arch)
    size = cfg.input_size[-1]
    img = Image.open(GRACE_HOPPER).convert("RGB").resize((size, size), Image.BICUBIC)
    x = (torch.from_numpy(np.array(img)).permute(2, 0, 1).float() / 255 - torch.tensor(cfg.mean)[:, None, None]) \
        / torch.tensor(cfg.std)[:, None, None]
    with torch.no_grad():
        assert model(x[None]).argmax(1).item() == MILITARY_UNIFORM


def test_smp_lite2_encoder_gets_the_imagenet_backbone():
    model = smp.Unet("tu-tf_efficientnet_lite2", encoder_weights=None, classes=1)
    state = imagenet.smp_encoder_imagenet_state("tu-tf_efficientnet_lite2", model.encoder)
    model.encoder.load_state_dict(state)  # strict: every encoder tensor has a source
    full = imagenet.timm_imagenet_model("tf_efficientnet_lite2").state_dict()
    torch.testing.assert_close(model.encoder.state_dict()["model.conv_stem.weight"], full["conv_stem.weight"])


def test_encoder_from_the_shipped_classifier(tmp_path):
    from tumorlens.models import load_classifier
    clf_dir = Path(__file__).resolve().parents[1] / "models" / "tumorlens-efficientnet-lite0-brisc2025"
    setup = SegmentationSetup(encoder="tu-tf_efficientnet_lite0", imagenet_init=False, input_size=64, crop=64,
                              encoder_from_classifier=str(clf_dir))
    model = SegmentationTask(_pack(2, 0), _pack(2, 1), setup).build_model()
    clf = load_classifier(clf_dir)[0]
    torch.testing.assert_close(model.encoder.state_dict()["model.blocks.1.0.conv_pw.weight"],
                               clf.state_dict()["blocks.1.0.conv_pw.weight"].float())
    with pytest.raises(ValueError, match="must be tu-tf_efficientnet_lite0"):
        SegmentationTask(_pack(2, 0), _pack(2, 1), SegmentationSetup(
            encoder="mobilenet_v2", imagenet_init=False, encoder_from_classifier=str(clf_dir))).build_model()


@pytest.mark.slow  # trains
def test_learning_curve_is_recorded_once_per_epoch_across_a_resume(tmp_path):
    import json

    def trainer(run: str):
        setup = SegmentationSetup(imagenet_init=False, input_size=64, crop=64, val_batch=4)
        return Trainer(SegmentationTask(_pack(8, 0), _pack(4, 1), setup),
                       TrainConfig(epochs=3, batch_size=4, precision="fp32", seed=1, num_threads=2, patience=3),
                       tmp_path / run)
    trainer("resumed").fit(stop_after=3)  # killed in the middle of epoch 2 (2 steps an epoch)
    resumed = trainer("resumed").fit()    # a new process resumes
    straight = trainer("straight").fit()
    assert [r["epoch"] for r in resumed["history"]] == [1, 2, 3]
    for a, b in zip(resumed["history"], straight["history"]):  # the resumed epoch averages all its steps
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)
        assert a["val_dice_tumor"] == pytest.approx(b["val_dice_tumor"], abs=1e-4)
    info = json.loads((tmp_path / "resumed" / "best" / "training_info.json").read_text())
    assert [r["epoch"] for r in info["history"]] == list(range(1, info["best_epoch"] + 1))


def test_each_ablation_arm_changes_one_factor_and_shares_the_budget(tmp_path):
    from dataclasses import asdict
    from tumorlens.bench import ablation
    base = ablation.arm_specs(ablation.arm("baseline"), tmp_path)
    for a in ablation.ARMS[1:]:
        data, setup, schedule, release, run_dir = ablation.arm_specs(a, tmp_path)
        assert (data, schedule, release) == base[:1] + base[2:4] and run_dir == tmp_path / a.name
        changed = {k for k, v in asdict(setup).items() if asdict(base[1])[k] != v}
        assert changed == set(a.setup) and changed  # what the arm says it changes, and nothing else
        assert ablation.rerun_command(a).startswith("python train/train_segmenter.py ")


def test_ablation_report_lists_scored_and_pending_arms(tmp_path):
    import json
    from tumorlens.bench import ablation
    curve = [{"epoch": e, "train_loss": 1.0 / e, "val_dice_tumor": 0.7 + e / 100, "val_healthy_fp_rate": 0.02} for e in (1, 2)]
    scores = [{"arm": "baseline", "change": "today", "val_dice_tumor": 0.80, "val_healthy_fp_rate": 0.0187,
               "n_val_healthy": 107, "best_epoch": 2, "epochs": 2, "cpu_hours": 1.5, "curve": curve, "command": "c0"},
              {"arm": "decoder-scse", "change": "scSE", "val_dice_tumor": 0.81, "val_healthy_fp_rate": 0.0,
               "n_val_healthy": 107, "best_epoch": 2, "epochs": 2, "cpu_hours": 1.6, "curve": curve, "command": "c1"},
              {"arm": "joint-type-head", "change": "joint", "status": "not run yet", "command": "c2"}]
    ablation.write_report(scores, {"arms": {"baseline": {"p50_ms": 12.5}}, "precision": "bf16",
                                   "hardware": {"cpu": "X", "threads": 2}, "measured": "today"}, tmp_path)
    md = (tmp_path / "ablation.md").read_text()
    assert "| baseline | today | 0.8000 | 1.9% of 107 | 2/2 | 1.50 | 12.5 | scored |" in md
    assert "0.8100 (+0.0100)" in md and "| joint-type-head | joint | - |" in md and "not run yet" in md
    assert json.loads((tmp_path / "ablation.json").read_text())["arms"][1]["arm"] == "decoder-scse"
    assert (tmp_path / "ablation_curves.png").stat().st_size > 1000


def test_ablation_keeps_recorded_scores_when_the_run_folders_are_gone(tmp_path):
    """A new machine has no run folders; the committed report's scores stay, and a rerun arm replaces them."""
    import json
    from tumorlens.bench import ablation
    recorded = tmp_path / "benchmarks"
    recorded.mkdir()
    (recorded / "ablation.json").write_text(json.dumps({"arms": [
        {"arm": "baseline", "val_dice_tumor": 0.8349}, {"arm": "decoder-scse", "val_dice_tumor": 0.84}]}))
    runs = tmp_path / "runs"
    (runs / "decoder-scse" / "state").mkdir(parents=True)  # scse is being retrained here
    (runs / "decoder-scse" / "state" / "trainer_state.json").write_text(json.dumps({"epoch": 3, "step_in_epoch": 7}))
    rows = {r["arm"]: r for r in ablation.collect(runs, recorded)}
    assert rows["baseline"]["val_dice_tumor"] == 0.8349
    assert rows["decoder-scse"]["status"] == "training: epoch 3/8, step 7"
    assert rows["encoder-lite2"]["status"] == "not run yet"
    assert all("val_dice_tumor" not in r for r in ablation.collect(runs))  # nothing recorded, nothing kept
