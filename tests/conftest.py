"""Shared fixtures for the data tests: where the real data lives, and builders of tiny dataset trees.

The real datasets sit in ../shared/data beside the project (see its README.md); they are required,
never skipped. Tiny trees are built in pytest's tmp_path by copying a handful of real files, so the
loaders' error paths can be exercised without touching the repo or the shared data.

The fast lane, `pytest -m "not slow"`, runs no test that reads the shared data or trains:
- a test reaches the shared data through the `data_home` fixture, directly or through a fixture
  that asks for it (the make_*_tree builders, the tiny trained models, ...); every such test is
  marked slow here, at collection;
- a test that reads it some other way (a module-level path) without a slow mark fails, naming the
  file: while each unmarked test runs, opening or listing anything under ../shared/data is noted
  (on the main thread; subprocesses are not watched);
- a test that trains on generated data (or runs a benchmark) says so with @pytest.mark.slow itself.
Data-free unit tests build what they need here, small (tmp_path, numpy arrays).
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np
import pytest
import scipy.io

REPO = Path(__file__).resolve().parents[1]
DATA_HOME = REPO.parent / "shared" / "data"

BRISC_CLASS_CODES = {"gl": "glioma", "me": "meningioma", "no": "no_tumor", "pi": "pituitary"}
LGG_PATIENT_CASES = ("TCGA_CS_4941_19960909", "TCGA_CS_4942_19970222")


@pytest.fixture(scope="session")
def data_home() -> Path:
    """../shared/data relative to the project root. The data is required: a missing folder fails.
    Asking for it, directly or through another fixture, marks a test slow."""
    assert DATA_HOME.is_dir(), f"the shared data is required at {DATA_HOME} (see its README.md)"
    for name in ("brisc2025", "figshare", "lgg"):
        assert (DATA_HOME / name).is_dir(), f"{DATA_HOME / name} is missing"
    return DATA_HOME


# --------------------------------------------------------------------------------------------------
# The fast lane (see the module docstring)
# --------------------------------------------------------------------------------------------------

SHARED_DATA_FIXTURES = frozenset({"data_home"})


@pytest.hookimpl(tryfirst=True)  # before `-m` deselects
def pytest_collection_modifyitems(config, items):
    for item in items:
        if SHARED_DATA_FIXTURES & set(getattr(item, "fixturenames", ())):  # the fixture closure
            item.add_marker(pytest.mark.slow)


class _SharedDataReads:
    """An audit hook noting files opened and folders listed under the shared data while on."""

    EVENTS = frozenset({"open", "os.listdir", "os.scandir", "glob.glob"})
    ROOTS = tuple(sorted({os.path.normpath(DATA_HOME), os.path.realpath(DATA_HOME)}))

    def __init__(self):
        self.on = False
        self.seen: list[str] = []
        self.main = threading.main_thread().ident
        sys.addaudithook(self)

    def __call__(self, event, args):
        if not self.on or event not in self.EVENTS or not args or threading.get_ident() != self.main:
            return
        path = args[0]
        if isinstance(path, int) or path is None:
            return
        try:
            path = os.path.abspath(os.fsdecode(path))
        except (TypeError, ValueError):
            return
        if any(path == root or path.startswith(root + os.sep) for root in self.ROOTS):
            self.seen.append(path)


_SHARED_DATA_READS = _SharedDataReads()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Watch from the start of setup (module fixtures included) of each test not marked slow."""
    _SHARED_DATA_READS.seen.clear()
    _SHARED_DATA_READS.on = item.get_closest_marker("slow") is None


@pytest.fixture(autouse=True)
def _no_shared_data_in_the_fast_lane(request):
    yield
    reads, _SHARED_DATA_READS.on = list(_SHARED_DATA_READS.seen), False
    if reads:
        pytest.fail(f"{request.node.nodeid} read the shared data ({reads[0]}, {len(reads)} reads) but is not "
                    "marked slow: ask for the data_home fixture (or one built on it), mark it "
                    "@pytest.mark.slow, or build a tiny input in tmp_path instead", pytrace=False)


# --------------------------------------------------------------------------------------------------
# BRISC 2025
# --------------------------------------------------------------------------------------------------


@dataclass
class BriscTree:
    root: Path
    # split -> list of segmentation stems copied (tumor classes only)
    seg_stems: dict[str, list[str]] = field(default_factory=dict)
    # split -> class -> list of classification file names copied
    cls_files: dict[str, dict[str, list[str]]] = field(default_factory=dict)

    def cls_path(self, split: str, name: str) -> Path:
        cls = BRISC_CLASS_CODES[name.split("_")[3]]
        return self.root / "classification_task" / split / cls / name

    def seg_image(self, split: str, stem: str) -> Path:
        return self.root / "segmentation_task" / split / "images" / f"{stem}.jpg"

    def seg_mask(self, split: str, stem: str) -> Path:
        return self.root / "segmentation_task" / split / "masks" / f"{stem}.png"


def _place(target: Path, dest: Path, how: str) -> None:
    """Put `target`'s image at `dest`: 'copy' (the bytes themselves, as in the release) or
    'symlink' (a relative symbolic link, which the OS follows)."""
    if how == "symlink":
        dest.symlink_to(os.path.relpath(target, dest.parent))
    elif how == "copy":
        shutil.copyfile(target, dest)
    else:
        raise ValueError(how)


def build_brisc_tree(data_home: Path, dest: Path, *, per_class: int = 2, seg_images: str = "copy") -> BriscTree:
    """A BRISC 2025 tree with `per_class` segmentation slices of each tumor class and `per_class`
    no_tumor slices, per split. Classification holds exactly the files the segmentation images
    copy (`seg_images='copy'`) or link to ('symlink'), plus the no_tumor ones; masks are copied."""
    src = data_home / "brisc2025"
    tree = BriscTree(dest)
    for split in ("train", "test"):
        tree.seg_stems[split] = []
        tree.cls_files[split] = {c: [] for c in BRISC_CLASS_CODES.values()}
        for cls in BRISC_CLASS_CODES.values():
            (dest / "classification_task" / split / cls).mkdir(parents=True)
        img_dir = dest / "segmentation_task" / split / "images"
        mask_dir = dest / "segmentation_task" / split / "masks"
        img_dir.mkdir(parents=True)
        mask_dir.mkdir(parents=True)
        seg_names = sorted(p.name for p in (src / "segmentation_task" / split / "images").iterdir())
        for code in ("gl", "me", "pi"):
            for name in [n for n in seg_names if n.split("_")[3] == code][:per_class]:
                stem = Path(name).stem
                cls = BRISC_CLASS_CODES[code]
                cls_target = dest / "classification_task" / split / cls / name
                shutil.copyfile(src / "classification_task" / split / cls / name, cls_target)
                _place(cls_target, img_dir / name, seg_images)
                shutil.copyfile(src / "segmentation_task" / split / "masks" / f"{stem}.png", mask_dir / f"{stem}.png")
                tree.seg_stems[split].append(stem)
                tree.cls_files[split][cls].append(name)
        for p in sorted((src / "classification_task" / split / "no_tumor").iterdir())[:per_class]:
            shutil.copyfile(p, dest / "classification_task" / split / "no_tumor" / p.name)
            tree.cls_files[split]["no_tumor"].append(p.name)
    return tree


@pytest.fixture
def make_brisc_tree(data_home, tmp_path):
    """Factory: make_brisc_tree(per_class=2, seg_images='copy') -> BriscTree under tmp_path."""
    counter = iter(range(1000))

    def make(**kwargs) -> BriscTree:
        return build_brisc_tree(data_home, tmp_path / f"brisc2025-{next(counter)}", **kwargs)

    return make


# --------------------------------------------------------------------------------------------------
# Figshare
# --------------------------------------------------------------------------------------------------


def write_labels_mat(path: Path, labels) -> Path:
    """label.mat as released: MATLAB v5, variable `label` of shape (n, 1)."""
    scipy.io.savemat(str(path), {"label": np.asarray(labels, dtype=np.uint8).reshape(-1, 1)})
    return path


def write_folds_mat(path: Path, folds, *, key: str = "cvind") -> Path:
    """cvind5fold.mat as released: MATLAB v7.3 (HDF5), dataset `cvind` of shape (1, n) float64."""
    with h5py.File(path, "w") as f:
        d = f.create_dataset(key, data=np.asarray(folds, dtype=np.float64).reshape(1, -1))
        d.attrs["MATLAB_class"] = np.bytes_(b"double")
    return path


@pytest.fixture
def labels_mat_writer():
    """The `write_labels_mat(path, labels)` helper, as a fixture."""
    return write_labels_mat


@pytest.fixture
def folds_mat_writer():
    """The `write_folds_mat(path, folds, key='cvind')` helper, as a fixture."""
    return write_folds_mat


@dataclass
class FigshareTree:
    root: Path
    source_ids: list[int]  # the real id behind tiny id i is source_ids[i - 1]
    labels: list[int]  # label.mat codes, 1 meningioma, 2 glioma, 3 pituitary
    folds: list[int]

    def image(self, i: int) -> Path:
        return self.root / "images" / f"{i}.jpg"

    def mask(self, i: int) -> Path:
        return self.root / "masks" / f"{i}.png"


def real_figshare_meta(data_home: Path) -> tuple[np.ndarray, np.ndarray]:
    src = data_home / "figshare"
    labels = scipy.io.loadmat(str(src / "label.mat"))["label"].ravel().astype(int)
    with h5py.File(src / "cvind5fold.mat", "r") as f:
        folds = np.asarray(f["cvind"]).ravel().astype(int)
    return labels, folds


def build_figshare_tree(data_home: Path, dest: Path, *, n_per_label: int = 2) -> FigshareTree:
    """A prepared-layout Figshare tree: `n_per_label` real slices of each class, renumbered 1..n,
    with label.mat and cvind5fold.mat consistent with them (labels and folds of the real ids)."""
    src = data_home / "figshare"
    labels, folds = real_figshare_meta(data_home)
    chosen: list[int] = []
    for code in (1, 2, 3):
        ids = np.flatnonzero(labels == code) + 1
        # spread over the id range so that several folds appear
        chosen.extend(int(i) for i in ids[np.linspace(0, len(ids) - 1, n_per_label).round().astype(int)])
    (dest / "images").mkdir(parents=True)
    (dest / "masks").mkdir()
    for new_id, real_id in enumerate(chosen, start=1):
        shutil.copyfile(src / "images" / f"{real_id}.jpg", dest / "images" / f"{new_id}.jpg")
        shutil.copyfile(src / "masks" / f"{real_id}.png", dest / "masks" / f"{new_id}.png")
    tiny_labels = [int(labels[i - 1]) for i in chosen]
    tiny_folds = [int(folds[i - 1]) for i in chosen]
    write_labels_mat(dest / "label.mat", tiny_labels)
    write_folds_mat(dest / "cvind5fold.mat", tiny_folds)
    return FigshareTree(dest, chosen, tiny_labels, tiny_folds)


@pytest.fixture
def make_figshare_tree(data_home, tmp_path):
    """Factory: make_figshare_tree(n_per_label=2) -> FigshareTree under tmp_path."""
    counter = iter(range(1000))

    def make(**kwargs) -> FigshareTree:
        return build_figshare_tree(data_home, tmp_path / f"figshare-{next(counter)}", **kwargs)

    return make


def write_cheng_mat(path: Path, *, image: np.ndarray, label: int, pid: str, border: np.ndarray,
                    mask: np.ndarray) -> Path:
    """One slice in the original Figshare release format: MATLAB v7.3 (HDF5 with a 512-byte MATLAB
    header block), struct `cjdata`. MATLAB is column-major, so every array is written transposed."""
    with h5py.File(path, "w", userblock_size=512) as f:
        cj = f.create_group("cjdata")
        cj.attrs["MATLAB_class"] = np.bytes_(b"struct")
        d = cj.create_dataset("image", data=np.asarray(image, dtype=np.int16).T)
        d.attrs["MATLAB_class"] = np.bytes_(b"int16")
        d = cj.create_dataset("label", data=np.full((1, 1), float(label), dtype=np.float64))
        d.attrs["MATLAB_class"] = np.bytes_(b"double")
        d = cj.create_dataset("PID", data=np.asarray([[ord(c) for c in pid]], dtype=np.uint16).T)
        d.attrs["MATLAB_class"] = np.bytes_(b"char")
        d.attrs["MATLAB_int_decode"] = np.int32(2)
        d = cj.create_dataset("tumorBorder", data=np.asarray(border, dtype=np.float64).reshape(1, -1))
        d.attrs["MATLAB_class"] = np.bytes_(b"double")
        d = cj.create_dataset("tumorMask", data=np.asarray(mask, dtype=np.uint8).T)
        d.attrs["MATLAB_class"] = np.bytes_(b"logical")
        d.attrs["MATLAB_int_decode"] = np.int32(1)
    header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 ."
    with open(path, "r+b") as fh:
        fh.write(header.ljust(116, b" ") + b"\x00" * 8 + b"\x00\x02" + b"IM")
    return path


@pytest.fixture
def cheng_mat_writer():
    """The `write_cheng_mat` helper, as a fixture."""
    return write_cheng_mat


# --------------------------------------------------------------------------------------------------
# LGG kaggle_3m
# --------------------------------------------------------------------------------------------------


@dataclass
class LggTree:
    root: Path  # the kaggle_3m folder
    cases: dict[str, list[int]]  # case folder name -> slices copied

    def image(self, case: str, s: int, suffix: str = ".jpg") -> Path:
        return self.root / case / f"{case}_{s}{suffix}"

    def mask(self, case: str, s: int, suffix: str = ".png") -> Path:
        return self.root / case / f"{case}_{s}_mask{suffix}"

    @property
    def patients(self) -> list[str]:
        return ["_".join(c.split("_")[:3]) for c in self.cases]


def build_lgg_tree(data_home: Path, dest: Path, *, slices=(10, 11, 12), cases=LGG_PATIENT_CASES) -> LggTree:
    """kaggle_3m/<case>/ with a few real slices (jpg + _mask.png) of each case, plus data.csv."""
    src = data_home / "lgg" / "kaggle_3m"
    root = dest / "kaggle_3m"
    root.mkdir(parents=True)
    for case in cases:
        (root / case).mkdir()
        for s in slices:
            shutil.copyfile(src / case / f"{case}_{s}.jpg", root / case / f"{case}_{s}.jpg")
            shutil.copyfile(src / case / f"{case}_{s}_mask.png", root / case / f"{case}_{s}_mask.png")
    shutil.copyfile(src / "data.csv", root / "data.csv")
    return LggTree(root, {c: list(slices) for c in cases})


@pytest.fixture
def make_lgg_tree(data_home, tmp_path):
    """Factory: make_lgg_tree(slices=(10, 11, 12)) -> LggTree under tmp_path."""
    counter = iter(range(1000))

    def make(**kwargs) -> LggTree:
        return build_lgg_tree(data_home, tmp_path / f"lgg-{next(counter)}", **kwargs)

    return make
