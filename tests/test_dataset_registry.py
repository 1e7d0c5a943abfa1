"""One record per dataset (tumorlens.data.registry): every --dataset choice list, card, audit group and
evaluator reads it, so a dataset registered once shows up everywhere. Data-free: nothing here opens
the shared data."""

from __future__ import annotations

import argparse
import dataclasses

import datasets
import pytest

from tumorlens.data import registry
from tumorlens.data.registry import dataset_names, get_dataset
from tumorlens.errors import ConfigError
from tumorlens.training.specs import DataSpec


class _Parsed(Exception):
    """Raised instead of parsing: carries the parser a main() built."""


@pytest.fixture
def capture_parser(monkeypatch):
    def fake_parse(self, args=None, namespace=None):
        raise _Parsed(self)
    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", fake_parse)

    def parser_of(main, *argv):
        with pytest.raises(_Parsed) as info:
            main(list(argv))
        return info.value.args[0]
    return parser_of


def _choices(parser: argparse.ArgumentParser, dest: str) -> tuple:
    for action in parser._actions:
        if action.dest == dest:
            return tuple(action.choices)
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                found = _choices(sub, dest)
                if found:
                    return found
    return ()


def _every_dataset_choice_list(parser_of) -> dict[str, tuple]:
    from tumorlens.audit.__main__ import main as audit_main
    from tumorlens.data.__main__ import main as data_main
    from tumorlens.evaluate import main as evaluate_main
    from tumorlens.postprocess.__main__ import main as postprocess_main
    from tumorlens.training.cli import classifier_parser, segmenter_parser
    return {
        "train segmenter": _choices(segmenter_parser(), "dataset"),
        "train classifier": _choices(classifier_parser(), "dataset"),
        "evaluate": _choices(parser_of(evaluate_main), "dataset"),
        "postprocess": _choices(parser_of(postprocess_main), "dataset"),
        "data build": _choices(parser_of(data_main), "dataset"),
        "audit": _choices(parser_of(audit_main), "datasets"),
    }


def test_every_dataset_choice_list_is_the_registry(capture_parser):
    assert set(dataset_names()) == {"brisc2025", "figshare", "lgg"}
    for where, choices in _every_dataset_choice_list(capture_parser).items():
        assert choices == dataset_names(), where


def test_the_records_say_what_the_code_used_to_hard_code():
    brisc, fig, lgg = get_dataset("brisc2025"), get_dataset("figshare"), get_dataset("lgg")
    assert brisc.root_env == "TUMORLENS_BRISC2025_ROOT" and lgg.root_env == "TUMORLENS_LGG_ROOT"
    assert lgg.tasks == ("segmentation",) and lgg.scoring == "per_patient" and lgg.model_licence == "cc-by-nc-sa-4.0"
    assert fig.folds == 5 and not fig.releases and fig.class_names == ("glioma", "meningioma", "pituitary")
    assert brisc.audited_test and brisc.extra_train_target and not fig.audited_test
    assert fig.validation_source(3) == "validation id blocks carved from the Figshare folds other than fold 3"
    assert brisc.describe_test(task="classification") == "BRISC 2025 classification_task/test (official split)"
    assert dataset_names("classification") == ("brisc2025", "figshare")
    with pytest.raises(ConfigError, match="unknown dataset 'nope'"):
        get_dataset("nope")


def test_root_and_data_home_mean_one_thing_each(tmp_path, monkeypatch):
    lgg = get_dataset("lgg")
    assert lgg.root_in(tmp_path) == tmp_path / "lgg" and lgg.root_in(None) is None
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.setenv("TUMORLENS_LGG_ROOT", str(tmp_path / "elsewhere"))
    assert lgg.find_root() == tmp_path / "elsewhere"
    assert lgg.find_root(tmp_path) == tmp_path  # an explicit root wins


@pytest.fixture
def fourth():
    """A fake fourth dataset, registered for one test only."""
    def load(root=None, *, check="header"):
        rows = {"image": [], "label": [], "file_name": []}
        return datasets.DatasetDict({"train": datasets.Dataset.from_dict(rows), "test": datasets.Dataset.from_dict(rows)})
    base = get_dataset("figshare")
    record = dataclasses.replace(
        base, name="fake4", title="Fake fourth", short="Fake", loader=load, tasks=("classification",),
        class_names=("glioma", "pituitary"), groups=lambda dd: [(s, dd[s]) for s in ("train", "test")],
        validation="stratified_holdout", validation_text="a fake holdout", folds=None, releases=True)
    registry.register(record)
    yield record
    registry.unregister("fake4")


def test_a_fourth_dataset_registered_once_appears_everywhere(fourth, capture_parser):
    from tumorlens.data.cards import dataset_card
    from tumorlens.training.splits import check_data_spec, validation_source
    assert dataset_names()[-1] == "fake4"
    for where, choices in _every_dataset_choice_list(capture_parser).items():
        assert "fake4" in choices, where
    assert "Fake fourth" in dataset_card("fake4", fourth.load()).content
    assert validation_source(DataSpec(dataset="fake4")) == "a fake holdout"
    check_data_spec(DataSpec(dataset="fake4"), "classification")
    with pytest.raises(ConfigError, match="no segmentation"):
        check_data_spec(DataSpec(dataset="fake4"), "segmentation")
    with pytest.raises(ConfigError, match="applies to --dataset brisc2025"):
        check_data_spec(DataSpec(dataset="fake4", exclude_duplicates_of="figshare"), "classification")


def test_the_evaluator_refuses_what_a_record_rules_out():
    from tumorlens.evaluate import evaluate
    with pytest.raises(ConfigError, match="no classification data"):
        evaluate("unused", "classifier", "lgg")
    with pytest.raises(ConfigError, match="one cross-validation fold at a time"):
        evaluate("unused", "segmenter", "figshare")
    with pytest.raises(ConfigError, match="kind must be"):
        evaluate("unused", "detector", "brisc2025")


def test_a_record_is_checked_when_registered():
    bad = dataclasses.replace(get_dataset("lgg"), name="bad", scoring="per_volume")
    with pytest.raises(ValueError, match="per_volume"):
        registry.register(bad)
    with pytest.raises(ValueError, match="already registered"):
        registry.register(get_dataset("lgg"))


@pytest.mark.parametrize("dataset, kind, fold", [("brisc2025", "segmenter", None), ("brisc2025", "classifier", None),
                                                 ("lgg", "segmenter", None), ("figshare", "classifier", 2)])
def test_one_result_skeleton_for_every_dataset(dataset, kind, fold, monkeypatch):
    """The keys cards and the bench read, in the order eval.json has always had them (scorers stubbed)."""
    import numpy as np

    from tumorlens import evaluate as ev
    scored = {"metrics": {"n": 2, "accuracy": 0.5}, "names": ["a", "b"], "settings": {"runtime": "stub"},
              "subset": lambda keep: {"n": int(np.sum(keep))}}
    scored.update({"per_image": []} if kind == "segmenter" else {"errors": []})
    monkeypatch.setitem(ev.SCORERS, kind, lambda *a, **k: scored)
    monkeypatch.setattr(ev, "_leaks", lambda root: {"b"})
    monkeypatch.setattr(ev, "_extra_data_check", lambda *a: None)
    result = ev.evaluate("m", kind, dataset, fold=fold, limit=2)
    audited = ["deduplicated", "without_extra_data_copies"] if dataset == "brisc2025" else []
    assert list(result) == (["task", "dataset_id"] + (["fold"] if fold else []) + ["dataset", "n", "accuracy"]
                            + audited + (["errors"] if kind == "classifier" else []) + ["settings"]
                            + (["per_image"] if kind == "segmenter" else [])
                            + ["seconds", "hardware", "complete", "command"])
    if audited:
        assert result["deduplicated"]["n"] == 1 and result["deduplicated"]["removed"] == ["b"]
    assert result["dataset_id"] == dataset and result["complete"] is False
    assert result["command"].startswith(f"python -m tumorlens.evaluate {kind} m")
