"""Figshare (Cheng, 2017): the prepared layout's counts and folds, and the original .mat v7.3 reader."""

from __future__ import annotations

import collections
import re
from pathlib import Path

import datasets
import h5py
import numpy as np
import pytest
import scipy.io

from tumorlens.data import TUMOR_CLASS_LABEL, TUMOR_CLASSES, figshare
from tumorlens.errors import DataError
from tumorlens.preprocess import decode_image, decode_mask

LABEL_COUNTS = {"meningioma": 708, "glioma": 1426, "pituitary": 930}
FOLD_COUNTS = {1: 570, 2: 655, 3: 562, 4: 613, 5: 664}


@pytest.fixture(scope="module")
def fig(data_home) -> datasets.Dataset:
    dsd = figshare.load(data_home / "figshare", check="header")
    assert list(dsd) == ["train"]
    return dsd["train"]


def _names(ds: datasets.Dataset) -> list[str]:
    return ds.features["label"].int2str(list(ds["label"]))


# ------------------------------------------------------------------------------------------ prepared


def test_counts_and_labels(fig):
    assert len(fig) == 3064
    assert fig.features["label"] == TUMOR_CLASS_LABEL
    assert list(fig.features["label"].names) == list(TUMOR_CLASSES)
    assert dict(collections.Counter(_names(fig))) == LABEL_COUNTS
    assert "no_tumor" not in set(_names(fig))
    assert list(fig["id"]) == list(range(1, 3065))
    assert list(fig["file_name"]) == [f"{i}.jpg" for i in range(1, 3065)]


def test_labels_follow_label_mat(fig, data_home):
    codes = scipy.io.loadmat(str(data_home / "figshare" / "label.mat"))["label"].ravel()
    expected = [{1: "meningioma", 2: "glioma", 3: "pituitary"}[int(c)] for c in codes]
    assert _names(fig) == expected


def test_fold_counts(fig):
    assert dict(collections.Counter(fig["fold"])) == FOLD_COUNTS


def test_folds_are_five_disjoint_train_test_pairs_covering_everything(fig):
    all_ids = set(fig["id"])
    seen_test: set[int] = set()
    pairs = list(figshare.folds(fig))
    assert [k for k, _, _ in pairs] == [1, 2, 3, 4, 5]
    for k, train, test in pairs:
        train_ids, test_ids = set(train["id"]), set(test["id"])
        assert len(test) == FOLD_COUNTS[k]
        assert len(train) == len(fig) - FOLD_COUNTS[k]
        assert not train_ids & test_ids
        assert train_ids | test_ids == all_ids
        assert set(test["fold"]) == {k}
        assert k not in set(train["fold"])
        assert not seen_test & test_ids
        seen_test |= test_ids
        # every class is represented on both sides of every fold
        assert set(_names(test)) == set(LABEL_COUNTS)
        assert set(_names(train)) == set(LABEL_COUNTS)
    assert seen_test == all_ids


@pytest.mark.parametrize("index", [0, 707, 1500, 2222, 3063])
def test_masks_align_with_images(fig, data_home, index):
    row = fig[index]
    assert row["image"].size == (256, 256)
    assert row["mask"].size == row["image"].size
    raw = fig.cast_column("image", datasets.Image(decode=False)).cast_column("mask", datasets.Image(decode=False))[index]
    assert Path(raw["image"]["path"]) == data_home / "figshare" / "images" / f"{row['id']}.jpg"
    assert Path(raw["mask"]["path"]) == data_home / "figshare" / "masks" / f"{row['id']}.png"
    m = decode_mask(raw["mask"]["path"])
    assert m.shape == decode_image(raw["image"]["path"]).shape[:2]
    assert m.any() and not m.all()
    assert set(np.unique(np.asarray(row["mask"]))) <= {0, 255}


def test_tiny_prepared_tree_loads_with_its_labels_and_folds(make_figshare_tree):
    tree = make_figshare_tree(n_per_label=2)
    ds = figshare.load(tree.root, check="full")["train"]
    assert len(ds) == 6
    assert list(ds["id"]) == [1, 2, 3, 4, 5, 6]
    assert _names(ds) == [figshare.LABEL_NAMES[c] for c in tree.labels]
    assert list(ds["fold"]) == tree.folds
    assert all(p is None for p in ds["patient_id"])


def test_fold_file_may_be_named_cvind_mat(make_figshare_tree):
    tree = make_figshare_tree(n_per_label=1)
    (tree.root / "cvind5fold.mat").rename(tree.root / "cvind.mat")
    assert list(figshare.load(tree.root, check="none")["train"]["fold"]) == tree.folds


def test_fold_file_may_be_matlab_v5(make_figshare_tree):
    tree = make_figshare_tree(n_per_label=1)
    scipy.io.savemat(str(tree.root / "cvind5fold.mat"), {"cvind": np.asarray(tree.folds, float).reshape(-1, 1)})
    assert list(figshare.load(tree.root, check="none")["train"]["fold"]) == tree.folds


# ------------------------------------------------------------------------------------------ original release


def _slice(seed: int, h: int = 40, w: int = 56, label: int = 1, pid: str = "100360") -> dict:
    """A non-square int16 slice with a rectangular tumour and its border, as in the release."""
    rng = np.random.default_rng(seed)
    image = rng.integers(0, 3000, size=(h, w)).astype(np.int16)
    image[0, 0], image[-1, -1] = 0, 2999  # pin the window so the 8-bit view is predictable
    mask = np.zeros((h, w), np.uint8)
    mask[5 + seed: 20 + seed, 10: 40 - seed] = 1
    ys, xs = np.nonzero(mask)
    border = np.stack([ys[:10], xs[:10]], 1).astype(np.float64).ravel()
    return {"image": image, "label": label, "pid": pid, "border": border, "mask": mask}


def test_read_cheng_mat_returns_original_orientation(tmp_path, cheng_mat_writer):
    sl = _slice(1, label=2, pid="MR040237")
    path = cheng_mat_writer(tmp_path / "7.mat", **sl)
    # the file really is stored column-major (transposed), as MATLAB writes it
    with h5py.File(path, "r") as f:
        assert f["cjdata/image"].shape == sl["image"].shape[::-1]
        assert f["cjdata/PID"].dtype == np.uint16
    assert open(path, "rb").read(10) == b"MATLAB 7.3"
    out = figshare.read_cheng_mat(path)
    assert out["image"].dtype == np.int16
    assert out["image"].shape == (40, 56)
    assert np.array_equal(out["image"], sl["image"])
    assert out["label"] == 2
    assert out["pid"] == "MR040237"
    assert np.array_equal(out["tumor_border"], sl["border"])
    assert out["tumor_mask"].dtype == np.uint8
    assert np.array_equal(out["tumor_mask"], sl["mask"])


def test_read_cheng_mat_rejects_bad_label_and_shape_mismatch(tmp_path, cheng_mat_writer):
    sl = _slice(2)
    path = cheng_mat_writer(tmp_path / "1.mat", **{**sl, "label": 4})
    with pytest.raises(DataError, match=re.escape(str(path))):
        figshare.read_cheng_mat(path)
    path = cheng_mat_writer(tmp_path / "2.mat", **{**sl, "mask": sl["mask"][:, :-1]})
    with pytest.raises(DataError, match=re.escape(str(path))) as info:
        figshare.read_cheng_mat(path)
    assert "differ" in str(info.value)


def test_read_cheng_mat_on_garbage_names_the_path(tmp_path):
    path = tmp_path / "12.mat"
    path.write_bytes(b"this is not an HDF5 file at all" * 20)
    with pytest.raises(DataError, match=re.escape(str(path))):
        figshare.read_cheng_mat(path)
    missing = tmp_path / "13.mat"
    with pytest.raises(DataError, match=re.escape(str(missing))):
        figshare.read_cheng_mat(missing)


@pytest.mark.parametrize("fold_format", ["v7.3", "v5"])
def test_load_original_three_slices(tmp_path, cheng_mat_writer, fold_format):
    root = tmp_path / "release"
    root.mkdir()
    slices = {1: _slice(1, label=1, pid="100360"), 2: _slice(2, label=2, pid="MR029"),
              3: _slice(3, h=48, w=32, label=3, pid="112649")}
    for i, sl in slices.items():
        cheng_mat_writer(root / f"{i}.mat", **sl)
    folds = [3, 1, 5]
    if fold_format == "v7.3":
        with h5py.File(root / "cvind.mat", "w") as f:
            f.create_dataset("cvind", data=np.asarray(folds, np.float64).reshape(1, -1))
    else:
        scipy.io.savemat(str(root / "cvind.mat"), {"cvind": np.asarray(folds, np.float64).reshape(-1, 1)})
    ds = figshare.load_original(root)["train"]
    assert len(ds) == 3
    assert ds.features == figshare.FEATURES
    assert list(ds["id"]) == [1, 2, 3]
    assert list(ds["fold"]) == folds
    assert list(ds["patient_id"]) == ["100360", "MR029", "112649"]
    assert list(ds["file_name"]) == ["1.mat", "2.mat", "3.mat"]
    assert _names(ds) == ["meningioma", "glioma", "pituitary"]
    for row, (i, sl) in zip(ds, slices.items()):
        img = np.asarray(row["image"])
        assert img.dtype == np.uint16, row["image"].mode  # 16-bit PNG, lossless
        assert np.array_equal(img.astype(np.int32), sl["image"].astype(np.int32))
        expected8 = np.rint(sl["image"].astype(np.float32) * (255.0 / 2999.0)).astype(np.uint8)
        rgb = decode_image(row["image"])
        assert rgb.shape == (*sl["image"].shape, 3) and rgb.dtype == np.uint8
        assert np.array_equal(rgb[..., 0], expected8)
        assert np.array_equal(rgb[..., 0], rgb[..., 2])
        assert rgb.min() == 0 and rgb.max() == 255
        assert np.array_equal(np.asarray(row["mask"]), sl["mask"] * 255)
        assert np.array_equal(decode_mask(np.asarray(row["mask"])), sl["mask"])


def test_load_original_without_fold_file_and_ignores_other_mats(tmp_path, cheng_mat_writer):
    root = tmp_path / "release"
    root.mkdir()
    cheng_mat_writer(root / "5.mat", **_slice(0))
    cheng_mat_writer(root / "10.mat", **_slice(4, label=3))
    scipy.io.savemat(str(root / "notes.mat"), {"x": np.ones(2)})
    ds = figshare.load_original(root)["train"]
    assert list(ds["id"]) == [5, 10]  # numeric, not lexical, order
    assert list(ds["fold"]) == [0, 0]


def test_load_original_errors(tmp_path, cheng_mat_writer):
    root = tmp_path / "release"
    root.mkdir()
    with pytest.raises(DataError, match=re.escape(str(root))):
        figshare.load_original(root)  # no slices
    cheng_mat_writer(root / "1.mat", **_slice(0))
    cheng_mat_writer(root / "4.mat", **_slice(1))
    with h5py.File(root / "cvind.mat", "w") as f:
        f.create_dataset("cvind", data=np.ones((1, 3)))
    with pytest.raises(DataError, match=re.escape(str(root / "4.mat"))):
        figshare.load_original(root)  # id beyond the fold file
    (root / "cvind.mat").unlink()
    (root / "2.mat").write_bytes(b"\x00garbage" * 64)
    with pytest.raises(DataError, match=re.escape(str(root / "2.mat"))):
        figshare.load_original(root)
