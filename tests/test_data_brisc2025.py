"""BRISC 2025 read from its original layout: exact counts, file-name parsing, segmentation images, mask alignment."""

from __future__ import annotations

import collections
import io
import re
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from tumorlens.data import TUMOR_CLASSES, brisc2025
from tumorlens.errors import DataError
from tumorlens.preprocess import decode_image, decode_mask

CLASSIFICATION_COUNTS = {
    "train": {"glioma": 1147, "meningioma": 1329, "no_tumor": 1067, "pituitary": 1457},
    "test": {"glioma": 254, "meningioma": 306, "no_tumor": 140, "pituitary": 300},
}
SEGMENTATION_COUNTS = {"train": 3933, "test": 860}
PLANE_CODES = {"ax": "axial", "co": "coronal", "sa": "sagittal"}


@pytest.fixture(scope="module")
def brisc_root(data_home) -> Path:
    return data_home / "brisc2025"


@pytest.fixture(scope="module")
def classification(brisc_root):
    return brisc2025.load_classification(brisc_root, check="header")


@pytest.fixture(scope="module")
def segmentation(brisc_root):
    return brisc2025.load_segmentation(brisc_root, check="header")


@pytest.fixture(scope="module")
def segmentation_with_healthy(brisc_root):
    return brisc2025.load(brisc_root, task="segmentation+no_tumor", check="none")


def _label_names(ds: datasets.Dataset) -> list[str]:
    return ds.features["label"].int2str(list(ds["label"]))


# ------------------------------------------------------------------------------------------ counts


def test_classification_counts_exact(classification):
    assert set(classification) == {"train", "test"}
    for split, expected in CLASSIFICATION_COUNTS.items():
        ds = classification[split]
        assert len(ds) == sum(expected.values())
        assert dict(collections.Counter(_label_names(ds))) == expected
    assert len(classification["train"]) == 5000
    assert len(classification["test"]) == 1000


def test_classification_schema_and_labels_follow_folders(classification, brisc_root):
    ds = classification["train"]
    assert list(ds.features["label"].names) == list(TUMOR_CLASSES)
    assert isinstance(ds.features["image"], datasets.Image)
    assert ds.column_names == ["image", "label", "plane", "file_name"]
    raw = ds.cast_column("image", datasets.Image(decode=False))
    # Every row's image path sits in the folder of its label, and the file name says the same class.
    for row, label in zip(raw.select(range(0, len(raw), 97)), _label_names(ds.select(range(0, len(ds), 97)))):
        path = Path(row["image"]["path"])
        assert path.parent.name == label
        assert path.name == row["file_name"]
        assert brisc2025.parse_file_name(path.name)["label"] == label


def test_segmentation_counts_exact(segmentation):
    assert {k: len(v) for k, v in segmentation.items()} == SEGMENTATION_COUNTS
    for split in ("train", "test"):
        names = _label_names(segmentation[split])
        assert "no_tumor" not in names
        assert set(names) == {"glioma", "meningioma", "pituitary"}
        assert len(set(segmentation[split]["file_name"])) == len(names)


def test_segmentation_with_no_tumor_adds_exactly_the_healthy_slices(segmentation, segmentation_with_healthy):
    for split in ("train", "test"):
        seg, both = segmentation[split], segmentation_with_healthy[split]
        n_healthy = CLASSIFICATION_COUNTS[split]["no_tumor"]
        assert len(both) == len(seg) + n_healthy
        names = _label_names(both)
        assert names[: len(seg)] == _label_names(seg)
        assert names[len(seg):] == ["no_tumor"] * n_healthy
        assert list(both["file_name"])[: len(seg)] == list(seg["file_name"])
    assert len(segmentation_with_healthy["train"]) == 5000
    assert len(segmentation_with_healthy["test"]) == 1000


def test_no_tumor_rows_have_all_zero_masks_of_their_image_size(segmentation_with_healthy):
    for split in ("train", "test"):
        ds = segmentation_with_healthy[split]
        n_seg = SEGMENTATION_COUNTS[split]
        raw = ds.select(range(n_seg, len(ds))).cast_column("image", datasets.Image(decode=False)) \
            .cast_column("mask", datasets.Image(decode=False))
        for row in raw:
            assert row["mask"]["bytes"], row["file_name"]
            with Image.open(row["image"]["path"]) as img:
                size = img.size
            mask = np.asarray(Image.open(io.BytesIO(row["mask"]["bytes"])))
            assert mask.shape == (size[1], size[0]), row["file_name"]
            assert not mask.any(), row["file_name"]
    # and through the Image feature, as a training pack would see them
    row = segmentation_with_healthy["test"][SEGMENTATION_COUNTS["test"]]
    assert row["mask"].size == row["image"].size
    assert decode_mask(np.asarray(row["mask"])).sum() == 0


def test_task_argument(brisc_root):
    with pytest.raises(ValueError, match="unknown BRISC 2025 task"):
        brisc2025.load(brisc_root, task="detection")


# ------------------------------------------------------------------------------------------ planes


def test_plane_comes_from_the_file_name(classification, segmentation):
    for dsd in (classification, segmentation):
        for split, ds in dsd.items():
            planes = ds.features["plane"].int2str(list(ds["plane"]))
            expected = [PLANE_CODES[name.split("_")[4]] for name in ds["file_name"]]
            assert planes == expected
            assert set(planes) == {"axial", "coronal", "sagittal"}, split
    assert list(brisc2025.PLANE_LABEL.names) == ["axial", "coronal", "sagittal"]


@pytest.mark.parametrize("name, expected", [
    ("brisc2025_train_00001_gl_ax_t1.jpg",
     {"split": "train", "index": 1, "label": "glioma", "plane": "axial", "sequence": "t1"}),
    ("brisc2025_test_00860_pi_sa_t1.jpg",
     {"split": "test", "index": 860, "label": "pituitary", "plane": "sagittal", "sequence": "t1"}),
    ("brisc2025_train_01234_me_co_t1.png",
     {"split": "train", "index": 1234, "label": "meningioma", "plane": "coronal", "sequence": "t1"}),
    ("brisc2025_test_00007_no_ax_t1",
     {"split": "test", "index": 7, "label": "no_tumor", "plane": "axial", "sequence": "t1"}),
])
def test_parse_file_name_good(name, expected):
    assert brisc2025.parse_file_name(name) == expected


@pytest.mark.parametrize("name", [
    "brisc2025_train_00001_xx_ax_t1.jpg",   # unknown class code
    "brisc2025_train_00001_gl_zz_t1.jpg",   # unknown plane code
    "brisc2025_valid_00001_gl_ax_t1.jpg",   # unknown split
    "brisc2025_train_gl_ax_t1.jpg",         # no index
    "brisc2024_train_00001_gl_ax_t1.jpg",   # another release
    "image.jpg",
    "",
])
def test_parse_file_name_bad(name):
    with pytest.raises(DataError, match=re.escape(name) if name else "not a BRISC 2025 file name") as info:
        brisc2025.parse_file_name(name)
    assert "BRISC 2025 file name" in str(info.value)


def test_every_real_file_name_parses_consistently(classification, segmentation):
    for split in ("train", "test"):
        for name in list(classification[split]["file_name"]) + list(segmentation[split]["file_name"]):
            meta = brisc2025.parse_file_name(name)
            assert meta["split"] == split
            assert name.startswith(f"brisc2025_{split}_{meta['index']:05d}_")


# ------------------------------------------------------------------------------------------ segmentation images


def test_segmentation_rows_read_the_segmentation_images_themselves(segmentation, brisc_root):
    """A segmentation image is the plain file in segmentation_task/<split>/images, read as it is."""
    for split in ("train", "test"):
        raw = segmentation[split].cast_column("image", datasets.Image(decode=False))
        for row in raw.select(range(0, len(raw), 53)):
            assert Path(row["image"]["path"]) == brisc_root / "segmentation_task" / split / "images" / row["file_name"]


@pytest.mark.parametrize("split, index", [("train", 0), ("train", 2000), ("train", 3932), ("test", 0), ("test", 859)])
def test_segmentation_image_is_byte_identical_to_classification_file(segmentation, brisc_root, split, index):
    ds = segmentation[split]
    row = ds[index]
    name = row["file_name"]
    cls_file = brisc_root / "classification_task" / split / ds.features["label"].int2str(row["label"]) / name
    raw = ds.cast_column("image", datasets.Image(decode=False))[index]["image"]
    data = raw["bytes"] if raw["bytes"] is not None else Path(raw["path"]).read_bytes()
    assert data == cls_file.read_bytes()
    assert np.array_equal(decode_image(row["image"]), decode_image(cls_file))


# ------------------------------------------------------------------------------------------ masks


def _spread(n: int, k: int) -> list[int]:
    return sorted(set(np.linspace(0, n - 1, k).round().astype(int).tolist()))


@pytest.mark.parametrize("split", ["train", "test"])
def test_masks_align_with_images(segmentation, brisc_root, split):
    ds = segmentation[split]
    raw = ds.cast_column("mask", datasets.Image(decode=False))
    for i in _spread(len(ds), 12):
        row = ds[i]
        mask_path = Path(raw[i]["mask"]["path"])
        assert mask_path == brisc_root / "segmentation_task" / split / "masks" / (Path(row["file_name"]).stem + ".png")
        image, mask = row["image"], row["mask"]
        assert image.size == mask.size, row["file_name"]
        m = decode_mask(np.asarray(mask))
        assert m.shape == decode_image(image).shape[:2]
        assert set(np.unique(m)) <= {0, 1}
        assert m.any(), f"{row['file_name']}: tumor slice with an empty mask"
        assert not m.all(), row["file_name"]


def test_tiny_tree_loads_with_copied_or_symlinked_images(make_brisc_tree):
    decoded = {}
    for how in ("symlink", "copy"):
        tree = make_brisc_tree(per_class=1, seg_images=how)
        dsd = brisc2025.load_segmentation(tree.root, include_no_tumor=True, check="full")
        assert {k: len(v) for k, v in dsd.items()} == {"train": 4, "test": 4}
        for split in ("train", "test"):
            assert dsd[split]["file_name"][:3] == [f"{s}.jpg" for s in tree.seg_stems[split]]
            decoded[how, split] = [np.asarray(r["image"]) for r in dsd[split]]
            for row in dsd[split]:
                assert row["image"].size == row["mask"].size
    for split in ("train", "test"):
        for a, b in zip(decoded["symlink", split], decoded["copy", split]):
            assert np.array_equal(a, b)
