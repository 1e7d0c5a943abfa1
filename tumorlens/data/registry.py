"""One record per dataset: everything TumorLens knows about a dataset that is not its loader's parsing.
Every `--dataset` choice list, dataset card, audit group, training split and evaluator reads these
records, so adding a dataset means one loader module plus one `register(DatasetRecord(...))` here.

Two folder words, one meaning each, everywhere in TumorLens:
- `root`: ONE dataset's own folder (e.g. ../shared/data/brisc2025). A record's `find_root(root)` gives
  the explicit `root`, else $TUMORLENS_<NAME>_ROOT, else `data_home()/<name>` (tumorlens.paths).
  The training, postprocess and evaluate command lines' `--data-root` is a `root` in this sense.
- `data_home`: the folder HOLDING all datasets (brisc2025/, figshare/, lgg/ ...): $TUMORLENS_DATA, else
  ../shared/data. The bench, the audit and figshare cross-validation take this one (`--data-home`,
  still accepted as `--data-root`); `record.root_in(data_home)` turns it into a dataset's `root`.

Loader-specific behaviour that lives above the data layer (training packs) is named by a
"module:function" reference, resolved when used, so this module imports nothing above tumorlens.data."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import datasets
import numpy as np

from . import brisc2025, figshare, lgg
from ..errors import ConfigError
from ._common import TUMOR_CLASSES, resolve_root

TASKS = ("classification", "segmentation")
VALIDATION_KINDS = {  # how validation is carved out of the training data
    "stratified_holdout": "a seeded holdout of the training split, stratified by class",
    "recorded_split": "a recorded patient-wise validation split",
    "id_blocks": "seeded blocks of consecutive slice ids (nearly patient-wise)",
}
SCORING = ("per_slice", "per_patient")
T1C_GREY = "T1 contrast-enhanced slice (grey, repeated)"  # one grey slice fed as the 3 RGB channels


@dataclass(frozen=True)
class DatasetRecord:
    """What TumorLens knows about one dataset. Behaviour that differs between datasets is an attribute
    here, never an `if dataset == ...` in the code that uses it."""

    name: str                               # the --dataset choice and the folder name under data_home
    title: str                              # human name, on dataset and model cards
    short: str                              # in one-line summaries ("BRISC test: ...")
    licence: str                            # the data's licence (SPDX-like id)
    source: str                             # citation
    notes: str                              # what a dataset card warns about
    loader: Callable[..., datasets.DatasetDict]  # load(root, *, check=...) -> DatasetDict, original layout
    tasks: tuple[str, ...]                  # of TASKS: what a model trained on it can learn
    class_names: tuple[str, ...] | None     # the labels its classifiers predict (None: no labels)
    groups: Callable[[datasets.DatasetDict], list[tuple[str, datasets.Dataset]]]  # splits or folds, for the audit
    validation: str                         # of VALIDATION_KINDS
    validation_text: str                    # where inference settings were tuned; may name {fold}
    scoring: str                            # of SCORING: per slice, or also per patient (volume Dice)
    test_text: str                          # what the scored test data is; may name {fold} and {split}
    test_rows: Callable[..., datasets.Dataset]  # test_rows(root, task, fold) -> the scored rows
    train_packs: str                        # "module:function"(task, size, DataSpec) -> Packs
    folds: int | None = None                # cross-validation folds: scored one at a time (--fold K)
    healthy: str | None = None              # a segmenter's healthy-slice check: the test split's "no_tumor" class
                                            # (classification rows) or its "empty_masks" slices; None: no check
    healthy_text: str = ""                  # what those healthy slices are; may name {split}
    per_image_columns: tuple[str, ...] = ()  # row columns copied into a segmenter's per_image records
    by_groups: tuple[str, ...] = ()         # per_image columns a segmenter's scores are also summarized by
    roi_classifiers: bool = True            # mask-guided (tumor-region) classifiers may be scored on it
    audited_test: bool = False              # the duplicate audit knows this test split (de-duplicated scores)
    extra_train_target: bool = False        # other datasets may be excluded from / added to its training data
    model_licence: str = "apache-2.0"       # licence of weights trained on it
    card_split: str = "test"                # split label in a model card's eval results
    releases: bool = True                   # False: its models are measurements (folds), not releases
    # what a model trained on it states in its metadata.json (tumorlens.model_record)
    channels: tuple[str, ...] = (T1C_GREY,) * 3  # what each of a model's 3 input channels holds
    tumor_types: bool = True                # the BRISC tumor-type classifier (T1c slices) fits these inputs
    segmenter_title: str = ""               # a segmenter's model-menu label; "" = title
    model_short: str = ""                   # how notes name its models ("BRISC 2025"); "" = short

    @property
    def root_env(self) -> str:
        return f"TUMORLENS_{self.name.upper()}_ROOT"

    def find_root(self, root: str | Path | None = None) -> Path:
        """This dataset's folder: `root`, else $TUMORLENS_<NAME>_ROOT, else data_home()/<name>."""
        return resolve_root(self.name, root, env_var=self.root_env)

    def root_in(self, data_home: str | Path | None) -> Path | None:
        """This dataset's folder inside `data_home` (None: let the loader find it)."""
        return None if data_home is None else Path(data_home).expanduser() / self.name

    def load(self, root: str | Path | None = None, **kwargs) -> datasets.DatasetDict:
        return self.loader(root, **kwargs)

    def supports(self, task: str) -> bool:
        return task in self.tasks

    def validation_source(self, fold: int | None = None) -> str:
        return self.validation_text.format(fold=fold)

    def describe_test(self, fold: int | None = None, split: str = "test", task: str = "segmentation") -> str:
        return self.test_text.format(fold=fold, split=split, task=f"{task}_task")

    def packs(self, task: str, size: int, data):
        module, _, fn = self.train_packs.partition(":")
        return getattr(importlib.import_module(module), fn)(task, size, data)


_RECORDS: dict[str, DatasetRecord] = {}


def register(record: DatasetRecord, *, replace: bool = False) -> DatasetRecord:
    if record.name in _RECORDS and not replace:
        raise ValueError(f"dataset {record.name!r} is already registered")
    for task in record.tasks:
        if task not in TASKS:
            raise ValueError(f"{record.name}: unknown task {task!r}")
    if record.validation not in VALIDATION_KINDS or record.scoring not in SCORING:
        raise ValueError(f"{record.name}: validation {record.validation!r} / scoring {record.scoring!r} unknown")
    _RECORDS[record.name] = record
    return record


def unregister(name: str) -> None:
    _RECORDS.pop(name, None)


def dataset_names(task: str | None = None) -> tuple[str, ...]:
    """The registered names (in registration order), optionally only those that support `task`."""
    return tuple(n for n, r in _RECORDS.items() if task is None or task in r.tasks)


def get_dataset(name: str) -> DatasetRecord:
    try:
        return _RECORDS[name]
    except KeyError:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(_RECORDS)}") from None


def records() -> tuple[DatasetRecord, ...]:
    return tuple(_RECORDS.values())


# --- the three datasets -------------------------------------------------------------------------

def _brisc_test(root, task: str, fold=None) -> datasets.Dataset:
    if task == "segmentation":
        return brisc2025.load_segmentation(root)["test"]
    return brisc2025.load_classification(root)["test"]


def _lgg_test(root, task: str, fold=None, split: str = "test") -> datasets.Dataset:
    return lgg.load(root)[split]


def _figshare_test(root, task: str, fold=None) -> datasets.Dataset:
    ds = figshare.load(root)["train"]
    return ds.select(np.flatnonzero(np.asarray(ds["fold"]) == fold))


def _brisc_groups(dd):
    return [(split, dd[split]) for split in brisc2025.SPLITS]


def _lgg_groups(dd):
    return [(split, dd[split]) for split in lgg.SPLIT_NAMES]


def _figshare_groups(dd):
    ds = dd["train"]
    fold = np.asarray(ds["fold"])
    return [(f"fold{k}", ds.select(np.flatnonzero(fold == k))) for k in range(1, figshare.N_FOLDS + 1)]


register(DatasetRecord(
    name=brisc2025.NAME, title="BRISC 2025", short="BRISC", licence="cc-by-4.0",
    source="Fateh et al., BRISC: Annotated Dataset for Brain Tumor Segmentation and Classification, arXiv 2506.14318",
    notes="About 50 byte-identical pairs exist in classification_task, 7 across train and test; BRISC reuses "
          "slices of earlier public collections (Figshare among them). Audit before comparing scores.",
    loader=brisc2025.load, tasks=("classification", "segmentation"), class_names=TUMOR_CLASSES, groups=_brisc_groups,
    validation="stratified_holdout", validation_text="validation split carved from BRISC train",
    scoring="per_slice", test_text="BRISC 2025 {task}/test (official split)", test_rows=_brisc_test,
    train_packs="tumorlens.training.splits:brisc_packs", healthy="no_tumor", healthy_text="BRISC 2025 classification_task/test/no_tumor",
    per_image_columns=("label", "plane"), by_groups=("label", "plane"),
    audited_test=True, extra_train_target=True, segmenter_title="BRISC 2025 - T1 contrast-enhanced, 1 channel",
    model_short="BRISC 2025"))

register(DatasetRecord(
    name=figshare.NAME, title="Figshare brain tumor dataset (Cheng)", short="Figshare", licence="cc-by-4.0",
    source="Cheng et al., 2017, doi 10.6084/m9.figshare.1512427",
    notes="Report 5-fold cross-validation over the `fold` column: the author's patient-wise folds.",
    loader=figshare.load, tasks=("classification", "segmentation"),
    class_names=("glioma", "meningioma", "pituitary"),  # no healthy slices
    groups=_figshare_groups, validation="id_blocks",
    validation_text="validation id blocks carved from the Figshare folds other than fold {fold}",
    scoring="per_slice", test_text="Figshare (Cheng et al. 2017), fold {fold} of cvind5fold.mat (patient-wise) as test",
    test_rows=_figshare_test, train_packs="tumorlens.training.splits:figshare_packs", folds=figshare.N_FOLDS,
    per_image_columns=("label",), by_groups=("label",), roi_classifiers=False, releases=False,
    segmenter_title="Figshare - T1 contrast-enhanced, 1 channel"))

register(DatasetRecord(
    name=lgg.NAME, title="LGG MRI Segmentation (kaggle_3m)", short="LGG", licence="cc-by-nc-sa-4.0",
    source="Buda et al., 2019, Computers in Biology and Medicine; TCGA-LGG via TCIA",
    notes="Splits are patient-wise (seeded, recorded in tumorlens/data/splits/lgg_kaggle_3m.json). "
          "Channels: pre-contrast, FLAIR, post-contrast.",
    loader=lgg.load, tasks=("segmentation",), class_names=None, groups=_lgg_groups, validation="recorded_split",
    validation_text="LGG patient-wise validation split", scoring="per_patient",
    test_text="LGG kaggle_3m (TCGA-LGG, Buda et al. 2019), patient-wise {split} split "
              "(tumorlens/data/splits/lgg_kaggle_3m.json)",
    test_rows=_lgg_test, train_packs="tumorlens.training.splits:lgg_packs", healthy="empty_masks",
    healthy_text="LGG {split} slices with an empty mask",
    per_image_columns=("patient_id",), model_licence="cc-by-nc-sa-4.0",  # weights follow the NC data licence
    card_split="test (patient-wise)",
    # kaggle_3m slices carry three sequences as RGB; its masks mark FLAIR abnormality, and it has no
    # tumor types, so the BRISC classifier (trained on T1c slices) does not apply
    channels=("pre-contrast", "FLAIR", "post-contrast"), tumor_types=False,
    segmenter_title="LGG - FLAIR abnormality, 3-channel pre-contrast/FLAIR/post-contrast", model_short="LGG"))


__all__ = ["DatasetRecord", "T1C_GREY", "TASKS", "VALIDATION_KINDS", "SCORING", "register", "unregister",
           "dataset_names", "get_dataset", "records"]
