"""The shipped folders as a stranger meets them on the Hub: laid out as an offline HF cache and used by
repo id only, with the standard loaders, the repos' own transformers code and TumorLens; then
fine-tuned from the repo id into a new folder, which must leave models/ untouched and name its base."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest
from huggingface_hub import ModelCard
from PIL import Image

from _hub_cache import as_hub_cache, offline_env
from tumorlens.hub_code import CODE_FILES, HERE, takes_transformers_keys
from tumorlens.paths import MODELS_DIR
from tumorlens.registry import BRISC_CLASSIFIER, BRISC_SEGMENTER, LGG_SEGMENTER, hub_repo

TESTS = Path(__file__).parent
REPO = TESTS.parent
SHIPPED = {BRISC_SEGMENTER: "segmenter", LGG_SEGMENTER: "segmenter", BRISC_CLASSIFIER: "classifier"}


@pytest.fixture(scope="module")
def hub(tmp_path_factory, data_home):
    """An HF cache holding the three shipped folders under their Hub repo ids."""
    cache = tmp_path_factory.mktemp("hub")
    for name in SHIPPED:
        as_hub_cache(MODELS_DIR / name, cache, hub_repo(name))
    return cache


def _models_digest() -> str:
    digest = hashlib.sha256()
    for path in sorted(p for p in MODELS_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts):
        digest.update(str(path.relative_to(MODELS_DIR)).encode() + path.read_bytes())
    return digest.hexdigest()


def _non_square(folder: Path, n: int) -> list[str]:
    """Real slices whose width and height differ: where letterbox and a plain resize part ways."""
    out = []
    for path in sorted(folder.glob("*.jpg")):
        with Image.open(path) as im:
            if im.width != im.height:
                out.append(str(path))
        if len(out) == n:
            return out
    raise AssertionError(f"fewer than {n} non-square slices in {folder}")


@pytest.mark.parametrize("name", sorted(SHIPPED))
def test_shipped_folders_carry_the_current_transformers_code(name):
    folder = MODELS_DIR / name
    if SHIPPED[name] == "segmenter" and not takes_transformers_keys(folder):
        # a timm universal encoder: smp would hand transformers' config keys to timm.create_model
        assert not any((folder / f"{module}.py").exists() for module in CODE_FILES["segmenter"])
        assert "auto_map" not in json.loads((folder / "config.json").read_text())
        assert "trust_remote_code" not in (folder / "README.md").read_text()
        return
    for module in CODE_FILES[SHIPPED[name]]:
        assert (MODELS_DIR / name / f"{module}.py").read_text() == (HERE / f"{module}.py").read_text(), module
    config = json.loads((MODELS_DIR / name / "config.json").read_text())
    assert "AutoImageProcessor" in config["auto_map"]
    # an auto_map in preprocessor_config.json makes transformers prompt on stdin for a video processor
    assert "auto_map" not in json.loads((MODELS_DIR / name / "preprocessor_config.json").read_text())


def test_by_repo_id_the_standard_loaders_and_pipelines_give_tumorlens_outputs(hub, tmp_path, data_home):
    test = data_home / "brisc2025" / "classification_task" / "test"
    # BRISC's glioma and pituitary test slices are all square; meningioma and no-tumor ones often are not
    brisc = _non_square(test / "meningioma", 4) + _non_square(test / "no_tumor", 1) + \
        sorted(map(str, (test / "glioma").glob("*.jpg")))[:1]
    lgg_case = data_home / "lgg" / "kaggle_3m" / "TCGA_CS_4941_19960909"
    lgg = [str(lgg_case / f"TCGA_CS_4941_19960909_{i}.jpg") for i in (10, 14, 18)]
    command = [sys.executable, str(TESTS / "_hub_user.py"), hub_repo(BRISC_SEGMENTER), hub_repo(LGG_SEGMENTER),
               hub_repo(BRISC_CLASSIFIER), "--brisc", *brisc, "--lgg-slices", *lgg]
    proc = subprocess.run(command, env=offline_env(hub, tmp_path / "home"), capture_output=True, text=True,
                          timeout=600, stdin=subprocess.DEVNULL)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    # the standard loaders: the same network as TumorLens's (smp stores fp16 weights; both load them as fp32)
    assert out["smp_seg_max_abs_diff"] == 0 and out["smp_lgg_max_abs_diff"] == 0
    assert out["timm_vs_transformers_max_abs_diff"] == 0
    assert out["plain_pipeline_labels"] == ["glioma", "meningioma", "no_tumor", "pituitary"]
    # the repos' own code: TumorLens's letterbox, flip average, temperature, threshold and clean-up
    assert out["classifier_processor"] == "TumorLensImageProcessor"
    assert out["classifier_pipeline_max_prob_diff"] < 1e-5
    for key, name in (("seg", BRISC_SEGMENTER), ("lgg", LGG_SEGMENTER)):
        if not takes_transformers_keys(MODELS_DIR / name):  # ships without transformers code
            assert out[f"{key}_pipeline_class"] is None
            continue
        assert out[f"{key}_pipeline_class"] == "TumorLensSegmentationPipeline"
        assert out[f"{key}_pipeline_px_differ"] == [0] * len(out[f"{key}_tumor_px"]), out
    assert sum(n > 0 for n in out["seg_tumor_px"]) >= 3  # real tumors were compared, not empty masks
    assert sum(n > 0 for n in out["lgg_tumor_px"]) >= 1
    assert out["tumorlens_pipeline"]["predicted"] == "meningioma" and out["tumorlens_pipeline"]["area_px"] > 0


@pytest.mark.parametrize("kind,name", [("segmenter", BRISC_SEGMENTER), ("classifier", BRISC_CLASSIFIER)])
def test_fine_tune_from_a_repo_id_writes_a_new_folder_that_names_its_base(hub, tmp_path, kind, name):
    before = _models_digest()
    out = tmp_path / f"my-{kind}"
    command = [sys.executable, str(REPO / "train" / f"train_{kind}.py"), "--init-from", hub_repo(name),
               "--out", str(out), "--run-dir", str(tmp_path / "run"), "--limit", "8", "--max-steps", "2",
               "--batch-size", "4", "--skip-eval", "--threads", "2"]
    proc = subprocess.run(command, env=offline_env(hub, tmp_path / "home"), capture_output=True, text=True,
                          timeout=900, stdin=subprocess.DEVNULL, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert _models_digest() == before, "fine-tuning wrote into models/"
    info = json.loads((out / "training_info.json").read_text())
    assert info["data"]["init_from"]["source"] == hub_repo(name) and info["data"]["init_from"]["kind"] == "hub"
    card = ModelCard.load(out / "README.md")
    assert card.data.base_model == hub_repo(name)
    parent_pre = json.loads((MODELS_DIR / name / "preprocessor_config.json").read_text())
    assert json.loads((out / "preprocessor_config.json").read_text())["input_size"] == parent_pre["input_size"]
    for module in CODE_FILES[kind]:
        assert (out / f"{module}.py").is_file()
    script = ("import sys, torch, segmentation_models_pytorch as smp, timm\n"
              "kind, folder = sys.argv[1:]\n"
              "m = smp.from_pretrained(folder) if kind == 'segmenter' else timm.create_model('local-dir:' + folder, pretrained=True)\n"
              "print(tuple(m.eval()(torch.zeros(1, 3, 256, 256)).shape))\n")
    reload = subprocess.run([sys.executable, "-c", script, kind, str(out)], env=offline_env(hub, tmp_path / "home"),
                            capture_output=True, text=True, timeout=300)
    assert reload.returncode == 0, reload.stderr[-3000:]
    assert reload.stdout.strip().splitlines()[-1] == ("(1, 1, 256, 256)" if kind == "segmenter" else "(1, 4)")
