"""Model cards that render and tell the truth: parsed back with huggingface_hub.ModelCard, their numbers
checked against eval.json, their snippets naming Hub repo ids, their base model named."""

import json
import re
from pathlib import Path

import pytest
from huggingface_hub import ModelCard

from tumorlens.data.registry import get_dataset
from tumorlens.hub import lineage, render_card
from tumorlens.paths import MODELS_DIR
from tumorlens.registry import BRISC_CLASSIFIER, BRISC_SEGMENTER, LGG_SEGMENTER, hub_repo

SHIPPED = [(BRISC_SEGMENTER, "segmenter"), (BRISC_CLASSIFIER, "classifier"), (LGG_SEGMENTER, "segmenter")]


def _eval_values(ev: dict) -> dict[str, float]:
    """Model-index metric name -> the eval.json number it must show."""
    values = {"Mean Dice per tumor slice": ev.get("dice_mean"), "Mean Dice per patient": ev.get("dice_per_patient_mean"),
              "mIoU": ev.get("miou"), "Pixel accuracy": ev.get("pixel_accuracy"), "Accuracy": ev.get("accuracy"),
              "Macro F1": ev.get("macro_f1")}
    defs = ev.get("dice_definitions") or {}
    if defs:
        values["Mean Dice over all slices (healthy ones included)"] = defs["all_slices_mean"]["value"]
        values["Pooled Dice over all pixels"] = defs["pooled"]["value"]
    return {k: v for k, v in values.items() if v is not None}


@pytest.mark.parametrize("name,kind", SHIPPED)
def test_shipped_card_parses_and_its_numbers_are_eval_json(name, kind):
    folder = MODELS_DIR / name
    card = ModelCard.load(folder / "README.md")
    ev = json.loads((folder / "eval.json").read_text())
    assert card.data.license == get_dataset(ev["dataset_id"]).model_licence
    shown = {r.metric_name: r.metric_value for r in card.data.eval_results}
    expected = _eval_values(ev)
    assert shown and set(shown) <= set(expected)
    for metric, value in shown.items():
        assert value == round(expected[metric], 4), metric
    assert f"{ev['dice_mean' if kind == 'segmenter' else 'macro_f1']:.4f}" in card.text
    # the card is what the code renders today from the folder's files: nothing typed by hand, nothing stale
    assert (folder / "README.md").read_text() == str(render_card(folder, kind))


@pytest.mark.parametrize("name,kind", SHIPPED)
def test_shipped_card_snippets_load_the_hub_repo(name, kind):
    text = (MODELS_DIR / name / "README.md").read_text()
    code = "\n".join(re.findall(r"```python\n(.*?)```", text, flags=re.S))
    assert hub_repo(name) in code and "models/" not in code
    assert "Research use only" in text and "Scores measured with the" in text
    card = ModelCard.load(MODELS_DIR / name / "README.md")
    assert card.data.datasets is None  # no unvouched dataset id; the text names the data instead
    assert "Training data" in text or "Data:" in text


def test_lineage_names_the_parent_and_the_base_model():
    hub_parent = {"data": {"init_from": {"source": "someone/brain-unet", "kind": "hub", "weights_sha256": "ab" * 32,
                                         "revision": "c0ffee" * 6}}}
    base, text = lineage(hub_parent, "me/my-unet")
    assert base == "someone/brain-unet" and "Fine-tuned from someone/brain-unet" in text and "abababababab" in text
    shipped_parent = {"data": {"init_from": {"source": f"models/{BRISC_SEGMENTER}", "kind": "folder"}}}
    assert lineage(shipped_parent, "me/my-unet")[0] == hub_repo(BRISC_SEGMENTER)
    # a new version of the same repo is no base model of itself
    assert lineage(shipped_parent, hub_repo(BRISC_SEGMENTER))[0] is None
    local_parent = {"data": {"init_from": {"source": "/home/me/runs/x/model", "kind": "folder", "weights_sha256": "0" * 64}}}
    base, text = lineage(local_parent, "me/my-unet")
    assert base is None and "/home/me/runs/x/model" in text
    assert lineage({"setup": {"imagenet_init": True}}, "x/y") == (None, lineage({"setup": {"imagenet_init": True}}, "x/y")[1])
    assert "ImageNet" in lineage({"setup": {"imagenet_init": True}}, "x/y")[1]
    assert "random" in lineage({"setup": {"imagenet_init": False}}, "x/y")[1]


def test_a_fine_tuned_card_carries_base_model(tmp_path):
    import shutil
    folder = tmp_path / "my-unet"
    shutil.copytree(MODELS_DIR / BRISC_SEGMENTER, folder)
    info = json.loads((folder / "training_info.json").read_text())
    info["data"]["init_from"] = {"source": hub_repo(BRISC_SEGMENTER), "kind": "hub", "weights_sha256": "1" * 64}
    (folder / "training_info.json").write_text(json.dumps(info))
    card = render_card(folder, "segmenter", repo_id="me/my-unet")
    assert card.data.base_model == hub_repo(BRISC_SEGMENTER)
    assert f"Fine-tuned from {hub_repo(BRISC_SEGMENTER)}" in card.text
    assert 'smp.from_pretrained("me/my-unet")' in card.text
    assert str(tmp_path) not in str(card)


def test_the_card_draws_the_whole_learning_curve(tmp_path):
    """Every epoch of training_info.json's history is a row (also those after the chosen one, so a plateau
    shows), the chosen epoch is starred, and the numbers are the history's."""
    import shutil
    folder = tmp_path / "my-unet"
    shutil.copytree(MODELS_DIR / BRISC_SEGMENTER, folder)
    info = json.loads((folder / "training_info.json").read_text())
    info["history"] = [{"epoch": e, "train_loss": 1.0 / e, "score": 0.8 + e / 100, "val_dice_tumor": 0.7 + e / 100,
                        "val_dice_tumor_median": 0.9, "val_healthy_fp_rate": 0.01 * e} for e in (1, 2, 3)]
    info["best_epoch"] = 2
    (folder / "training_info.json").write_text(json.dumps(info))
    text = render_card(folder, "segmenter").text
    rows = [line for line in text.splitlines() if re.match(r"^\| \d", line)]
    curve = [r for r in rows if r.count("|") == 7]
    assert [r.split("|")[1].strip() for r in curve] == ["1", "2 ★", "3"]
    assert curve[2].split("|")[2:5] == [" 0.3333 ", " 0.8300 ", " 0.7300 "] and "3.00%" in curve[2]


def test_release_keeps_the_runs_whole_history(tmp_path, monkeypatch):
    """release() writes the run's history (past the best epoch) into the folder's training_info.json."""
    import shutil
    from tumorlens import release as release_module
    from tumorlens.training.specs import DataSpec, ReleaseSpec
    best = tmp_path / "best"
    shutil.copytree(MODELS_DIR / BRISC_SEGMENTER, best)
    monkeypatch.setattr(release_module, "tune_segmenter", lambda folder, data: {})
    history = [{"epoch": e, "train_loss": 0.5, "score": 0.8, "val_dice_tumor": 0.7} for e in (1, 2, 3)]
    out = release_module.release(best, "segmenter", DataSpec(), ReleaseSpec(evaluate=False), tmp_path / "out",
                                 history=history)
    assert json.loads((out / "training_info.json").read_text())["history"] == history
