"""Both model kinds: a tiny real-data training run, Hub-layout round trips, offline Hub-cache loading,
the three classifier loaders, ONNX/torch parity, the predict CLI and the card rendered from eval.json."""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import segmentation_models_pytorch as smp
import timm
import torch

from _hub_cache import as_hub_cache, offline_env
from _tiny_models import REPO, train_tiny
from tumorlens import models
from tumorlens.data import TUMOR_CLASSES
from tumorlens.inference import Classifier, Segmenter
from tumorlens.preprocess import PreprocessConfig, decode_image

BRISC = REPO.parent / "shared" / "data" / "brisc2025"
TEST_IMAGES = sorted((BRISC / "classification_task" / "test" / "glioma").glob("*.jpg"))[:2] + \
    sorted((BRISC / "classification_task" / "test" / "no_tumor").glob("*.jpg"))[:1]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory, data_home):
    """Both model kinds, trained 2 steps on 12 shared-data slices (asking for data_home marks their tests slow)."""
    work = tmp_path_factory.mktemp("tiny")
    return {"segmenter": train_tiny("segmenter", work), "classifier": train_tiny("classifier", work)}


def test_segmenter_folder_is_hub_layout_and_smp_loads_it(tiny):
    best, shipped = tiny["segmenter"]
    for name in ("config.json", "model.safetensors", "README.md", "preprocessor_config.json", "training_info.json"):
        assert (shipped / name).is_file(), name
    config = json.loads((shipped / "config.json").read_text())
    assert config["_model_class"] == "Unet" and config["encoder_weights"] is None
    x = torch.randn(1, 3, 256, 256, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = models.load_segmenter(best)[0](x)
        plain = smp.from_pretrained(str(best)).eval()(x)
        half = smp.from_pretrained(str(shipped)).eval().float()(x)
    assert torch.equal(ours, plain)
    # fp16 storage rounds each weight (by at most 2**-11 of it), nothing more. What that must keep is
    # the mask, and the logits up to an error small against their own scale: an absolute bound is
    # not, as the error grows with the logits and differs between CPUs' kernels (AVX2, AVX-512)
    err, scale = (plain - half).abs().max().item(), plain.abs().max().item()
    assert err <= 0.02 * scale, f"fp16-stored logits off by {err:.4f}, {err / scale:.2%} of their largest value"
    a, b = plain > 0, half > 0  # the mask at the 0.5 probability threshold
    assert (a != b).float().mean().item() < 0.005
    assert (2 * (a & b).sum() / (a.sum() + b.sum())).item() >= 0.99


def test_segmenter_save_load_round_trip_is_exact(tmp_path):
    model = models.build_segmenter().eval()
    models.save_segmenter(model, tmp_path / "m", PreprocessConfig(256))
    loaded, pre = models.load_segmenter(tmp_path / "m")
    x = torch.randn(2, 3, 128, 128)
    with torch.no_grad():
        assert torch.equal(model(x), loaded(x))
    assert pre == PreprocessConfig.from_dict(PreprocessConfig(256).to_dict())


def test_classifier_round_trip_and_three_loaders_agree(tiny):
    from transformers import AutoModelForImageClassification, pipeline
    best, shipped = tiny["classifier"]
    config = json.loads((shipped / "config.json").read_text())
    assert config["label_names"] == list(TUMOR_CLASSES)
    assert "num_classes" not in config.get("model_args", {})
    assert config["pretrained_cfg"]["mean"] == [0.5, 0.5, 0.5] and config["pretrained_cfg"]["input_size"] == [3, 224, 224]
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        via_timm = timm.create_model(f"local-dir:{shipped}", pretrained=True).eval()(x)
        via_hf = AutoModelForImageClassification.from_pretrained(str(shipped)).eval()(pixel_values=x).logits
        via_ours = models.load_classifier(shipped)[0](x)
    assert torch.equal(via_timm, via_hf) and torch.equal(via_timm, via_ours)
    pipe = pipeline("image-classification", model=str(shipped))
    out = pipe(str(TEST_IMAGES[0]), top_k=4)
    assert sorted(o["label"] for o in out) == sorted(TUMOR_CLASSES)
    assert abs(sum(o["score"] for o in out) - 1) < 1e-4


def test_load_by_repo_id_from_offline_hf_cache(tiny, tmp_path):
    cache = tmp_path / "hub"
    as_hub_cache(tiny["segmenter"][1], cache, "tumorlens/tiny-seg")
    as_hub_cache(tiny["classifier"][1], cache, "tumorlens/tiny-cls")
    script = """
import torch, timm, transformers
from tumorlens import models
from tumorlens.inference import Pipeline
seg, pre = models.load_segmenter("tumorlens/tiny-seg")
clf, cpre, labels = models.load_classifier("tumorlens/tiny-cls")
t = timm.create_model("hf-hub:tumorlens/tiny-cls", pretrained=True).eval()
h = transformers.AutoModelForImageClassification.from_pretrained("tumorlens/tiny-cls").eval()
x = torch.randn(1, 3, 224, 224)
with torch.no_grad():
    assert torch.equal(t(x), clf(x)) and torch.equal(h(pixel_values=x).logits, clf(x))
p = Pipeline.from_pretrained("tumorlens/tiny-seg", "tumorlens/tiny-cls", runtime="torch")
r = p.analyze(r"%s")
print("OK", pre.input_size, labels, r.segmentation.mask.shape)
""" % TEST_IMAGES[0]
    proc = subprocess.run([sys.executable, "-c", script], env=offline_env(cache, tmp_path / "home"),
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "OK 256" in proc.stdout


def test_missing_repo_offline_is_a_clear_error(tmp_path):
    script = ("from tumorlens import models\n"
              "try:\n    models.load_segmenter('tumorlens/does-not-exist')\n"
              "except models.DataError as e:\n    print('DataError', e)\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path)}
    proc = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert "DataError" in proc.stdout and "tumorlens/does-not-exist" in proc.stdout


def test_onnx_and_torch_give_the_same_mask(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("TUMORLENS_CACHE", str(tmp_path))
    images = [decode_image(p) for p in TEST_IMAGES]
    torch_seg = Segmenter.from_pretrained(tiny["segmenter"][1], runtime="torch", precision="fp32")
    onnx_seg = Segmenter.from_pretrained(tiny["segmenter"][1], runtime="onnx")
    for a, b in zip(torch_seg.probabilities(images), onnx_seg.probabilities(images)):
        assert np.abs(a - b).max() < 1e-3
        ma, mb = torch_seg.from_probability(a).mask, onnx_seg.from_probability(b).mask
        assert (ma != mb).mean() < 1e-4  # only pixels within float noise of the threshold may flip
    torch_clf = Classifier.from_pretrained(tiny["classifier"][1], runtime="torch", precision="fp32")
    onnx_clf = Classifier.from_pretrained(tiny["classifier"][1], runtime="onnx")
    assert np.abs(torch_clf.probabilities(images) - onnx_clf.probabilities(images)).max() < 1e-4


def test_predict_cli_on_real_slices_and_a_broken_file(tiny, tmp_path):
    inputs = tmp_path / "in"
    inputs.mkdir()
    for p in TEST_IMAGES:
        shutil.copy(p, inputs / p.name)
    (inputs / "broken.jpg").write_bytes(TEST_IMAGES[0].read_bytes()[:400])
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "tumorlens", "predict", str(inputs), "--out", str(out),
                           "--seg-model", str(tiny["segmenter"][1]), "--cls-model", str(tiny["classifier"][1]),
                           "--pixel-spacing", "0.5"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr[-2000:]  # one bad file: non-zero, but the rest were written
    assert "broken.jpg" in proc.stderr
    rows = list(csv.DictReader(open(out / "predictions.csv")))
    assert len(rows) == len(TEST_IMAGES) + 1
    by_name = {Path(r["file"]).name: r for r in rows}
    assert by_name["broken.jpg"]["status"].startswith("error:") and "broken.jpg" in by_name["broken.jpg"]["status"]
    for p in TEST_IMAGES:
        row = by_name[p.name]
        assert row["status"] == "ok" and row["predicted_class"] in TUMOR_CLASSES
        assert abs(sum(float(row[f"prob_{c}"]) for c in TUMOR_CLASSES) - 1) < 1e-3
        mask = np.asarray(__import__("PIL.Image", fromlist=["Image"]).open(out / row["mask_file"]))
        assert mask.shape == decode_image(p).shape[:2] and set(np.unique(mask)) <= {0, 255}
        assert int(row["tumor_pixels"]) == int((mask == 255).sum())
        assert float(row["area_mm2"]) == pytest.approx(int(row["tumor_pixels"]) * 0.25, rel=1e-6, abs=0.01)


def test_card_numbers_come_from_eval_json(tiny, tmp_path):
    from tumorlens.evaluate import evaluate_model
    from tumorlens.hub import write_card
    folder = tmp_path / "seg"
    shutil.copytree(tiny["segmenter"][1], folder)
    result = evaluate_model(folder, "segmenter", limit=4)
    card = write_card(folder, "segmenter").read_text()
    saved = json.loads((folder / "eval.json").read_text())
    assert saved["dice_mean"] == pytest.approx(result["dice_mean"])
    assert f"{saved['dice_mean']:.4f}" in card and "model-index" in card
    assert "not for" in card.lower() and "clinical" in card.lower()
    # the reproduce line names where the card's model lives, not the folder it was scored in
    assert f"python -m tumorlens.evaluate segmenter models/{folder.name}`" in card
    assert str(tmp_path) not in card


def test_reproduce_command_points_at_the_published_location():
    from tumorlens.hub import reproduce_command
    cmd = "python -m tumorlens.evaluate segmenter /tmp/run/model --dataset lgg"
    assert reproduce_command(cmd, "user/repo") == "python -m tumorlens.evaluate segmenter user/repo --dataset lgg"
    assert reproduce_command(None, "user/repo") is None


def test_imagenet_checkpoint_checksum_is_verified(monkeypatch):
    from tumorlens import imagenet
    from tumorlens.errors import DataError
    assert imagenet.checkpoint_path("mobilenet_v2").is_file()
    bad = imagenet.Checkpoint(**{**imagenet.CHECKPOINTS["mobilenet_v2"].__dict__, "sha256": "0" * 64})
    monkeypatch.setitem(imagenet.CHECKPOINTS, "mobilenet_v2", bad)
    with pytest.raises(DataError, match="checksum mismatch"):
        imagenet.checkpoint_path("mobilenet_v2")


def test_init_from_fine_tunes_a_published_model(tiny, tmp_path):
    import train_segmenter
    out = tmp_path / "ft"
    train_segmenter.main(["--run-dir", str(tmp_path / "run"), "--out", str(out), "--limit", "8", "--max-steps", "1",
                          "--batch-size", "4", "--skip-eval", "--threads", "2", "--lr", "0",
                          "--init-from", str(tiny["segmenter"][0])])
    # lr 0: every weight is the published one (fp16-rounded by storage); BatchNorm running
    # statistics are buffers and do move in train mode, so parameters are compared, not outputs
    start = dict(models.load_segmenter(tiny["segmenter"][0])[0].named_parameters())
    tuned = dict(models.load_segmenter(out)[0].named_parameters())
    assert start.keys() == tuned.keys()
    for name in start:
        assert torch.equal(start[name].detach().half().float(), tuned[name].detach()), name
    info = json.loads((out / "training_info.json").read_text())
    assert info["setup"]["imagenet_init"] is False


def test_push_to_hub_uploads_the_folder_as_is(tiny, monkeypatch):
    from tumorlens import hub
    calls = []

    class FakeApi:
        def __init__(self, token=None):
            pass

        def create_repo(self, repo_id, private=False, exist_ok=False):
            calls.append(("create_repo", repo_id, private))

        def upload_folder(self, folder_path, repo_id, commit_message):
            calls.append(("upload_folder", repo_id, sorted(p.name for p in Path(folder_path).iterdir())))
            return "https://huggingface.co/" + repo_id

    monkeypatch.setattr(hub, "HfApi", FakeApi)
    hub.push_folder(tiny["classifier"][1], "someone/tumorlens-cls", private=True)
    assert calls[0] == ("create_repo", "someone/tumorlens-cls", True)
    assert calls[1][0] == "upload_folder" and {"config.json", "model.safetensors", "README.md"} <= set(calls[1][2])


def test_mask_guided_classifier_trains_saves_and_classifies_tumor_regions(tiny, tmp_path):
    import train_classifier
    from transformers import AutoModelForImageClassification
    from tumorlens.inference import Pipeline
    seg_folder = tiny["segmenter"][1]
    out = tmp_path / "roi"
    train_classifier.main(["--run-dir", str(tmp_path / "run"), "--out", str(out), "--limit", "12", "--max-steps", "1",
                           "--batch-size", "4", "--skip-eval", "--threads", "2", "--tumor-roi",
                           "--roi-segmenter", str(seg_folder)])
    config = json.loads((out / "config.json").read_text())
    assert config["tumor_roi"] == {"margin": 0.25, "min_side": 0.3, "segmenter": str(seg_folder)}
    card = (out / "README.md").read_text()
    assert "Mask-guided" in card and "Variants measured" not in card
    assert json.loads((out / "training_info.json").read_text())["setup"]["crop_to_tumor"] is True
    # the extra config key keeps the folder loadable by timm and transformers alike
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        via_timm = timm.create_model(f"local-dir:{out}", pretrained=True).eval()(x)
        via_hf = AutoModelForImageClassification.from_pretrained(str(out)).eval()(pixel_values=x).logits
    assert torch.equal(via_timm, via_hf)

    clf = Classifier.from_pretrained(out, runtime="torch", precision="fp32")
    assert clf.needs_masks
    rgb = decode_image(TEST_IMAGES[0])
    with pytest.raises(ValueError, match="tumor region"):
        clf.probabilities([rgb])
    with pytest.raises(ValueError, match="load a segmenter"):
        Pipeline(None, clf)
    mask = np.zeros(rgb.shape[:2], bool)
    mask[100:140, 200:260] = True
    from tumorlens.preprocess import crop_to_tumor
    region = crop_to_tumor(rgb, mask)
    whole = Classifier(models.load_classifier(out)[0], PreprocessConfig(input_size=224, mean=(0.5,) * 3, std=(0.5,) * 3),
                       TUMOR_CLASSES, runtime="torch", precision="fp32", tta=clf.tta)
    assert np.allclose(clf.logits([rgb], [mask]), whole.logits([region]), atol=1e-5)  # it classifies the region
    assert np.allclose(clf.logits([rgb], [np.zeros_like(mask)]), whole.logits([rgb]), atol=1e-5)  # no tumor: all of it
    seg = Segmenter.from_pretrained(seg_folder, runtime="torch", precision="fp32")
    result = Pipeline(seg, clf).analyze(rgb)
    expected = clf.probabilities([rgb], [result.segmentation.mask])[0]
    assert np.allclose([result.class_probabilities[c] for c in TUMOR_CLASSES], expected, atol=1e-6)


def test_variants_are_recorded_beside_the_shipped_model_and_listed_in_its_card(tiny, tmp_path, monkeypatch):
    monkeypatch.setenv("TUMORLENS_CACHE", str(tmp_path / "cache"))
    from tumorlens.evaluate import main as evaluate_main, record_variant
    from tumorlens.hub import write_card
    shipped = tmp_path / "shipped"
    shutil.copytree(tiny["classifier"][1], shipped)
    assert evaluate_main(["classifier", str(shipped), "--limit", "8", "--no-card"]) == 0
    # a smoke-sized score is no variant record
    assert evaluate_main(["classifier", str(shipped), "--limit", "8", "--variant-of", str(shipped)]) == 2
    assert not (shipped / "variants.json").exists()
    record_variant(shipped, {"name": "mask-guided", "input": "tumor region", "accuracy": 0.5, "macro_f1": None,
                             "dedup_accuracy": None, "val_metrics": None, "command": None})
    record_variant(shipped, {"name": "mask-guided", "input": "tumor region", "accuracy": 0.75, "macro_f1": 0.7,
                             "dedup_accuracy": 0.74, "val_metrics": {"val_accuracy": 0.8}, "command": "python -m x"})
    assert len(json.loads((shipped / "variants.json").read_text())) == 1  # replaced by name
    card = write_card(shipped, "classifier").read_text()
    assert "Variants measured" in card
    assert "| mask-guided | tumor region | 80.00% | 75.00% | 0.7000 | 74.00% |" in card


def test_classifier_tta_is_tuned_on_validation_and_loaded_with_the_model(tiny, tmp_path):
    from tumorlens.training.tune import main as tune_main
    folder = tmp_path / "cls"
    shutil.copytree(tiny["classifier"][1], folder)
    (folder / "inference_config.json").unlink(missing_ok=True)
    assert Classifier.from_pretrained(folder, runtime="torch", precision="fp32").tta is False  # none chosen: off
    assert tune_main(["classifier", str(folder), "--limit", "12", "--threads", "2"]) == 0
    tuned = json.loads((folder / "inference_config.json").read_text())
    assert set(tuned["val_accuracy"]) == {"plain", "hflip_tta"} and "validation" in tuned["chosen_on"]
    tuned["tta_hflip"] = True
    (folder / "inference_config.json").write_text(json.dumps(tuned))
    clf = Classifier.from_pretrained(folder, runtime="torch", precision="fp32")
    assert clf.tta is True
    rgb = decode_image(TEST_IMAGES[0])
    x = clf.pre(rgb)[0]
    model = models.load_classifier(folder)[0]
    with torch.no_grad():
        expected = (model(x) + model(x.flip(3))) / 2
    assert np.allclose(clf.logits([rgb]), expected.numpy(), atol=1e-4)


def test_segmenter_settings_are_retuned_on_validation(tiny, tmp_path):
    from tumorlens.training.tune import main as tune_main
    folder = tmp_path / "seg"
    shutil.copytree(tiny["segmenter"][1], folder)
    (folder / "inference_config.json").unlink(missing_ok=True)
    assert tune_main(["segmenter", str(folder), "--limit", "12", "--threads", "2"]) == 0
    tuned = json.loads((folder / "inference_config.json").read_text())
    assert "validation" in tuned["chosen_on"] and tuned["n_val"] > 0
    seg = Segmenter.from_pretrained(folder, runtime="torch", precision="fp32")
    assert (seg.threshold, seg.min_component_fraction) == (tuned["threshold"], tuned["min_component_fraction"])
