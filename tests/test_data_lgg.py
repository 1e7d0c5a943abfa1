"""LGG kaggle_3m: counts, the patient-wise recorded split, and the original `.tif` layout."""

from __future__ import annotations

import json
import re

import datasets
import numpy as np
import pytest
import tifffile
from PIL import Image

from tumorlens.data import lgg
from tumorlens.errors import DataError
from tumorlens.preprocess import decode_image, decode_mask


@pytest.fixture(scope="module")
def lgg_root(data_home):
    return data_home / "lgg" / "kaggle_3m"


@pytest.fixture(scope="module")
def rows(lgg_root):
    return lgg.scan(lgg_root)


@pytest.fixture(scope="module")
def lgg_dsd(data_home):
    # the folder that holds kaggle_3m/ is accepted as well as kaggle_3m itself
    return lgg.load(data_home / "lgg", check="header")


def test_patient_and_slice_counts(rows):
    assert len(rows) == 3929
    patients = {r["patient_id"] for r in rows}
    assert len(patients) == 110
    assert all(re.fullmatch(r"TCGA_[A-Z0-9]+_[A-Z0-9]+", p) for p in patients)
    assert len({(r["patient_id"], r["slice"]) for r in rows}) == 3929


def test_rows_in_patient_then_slice_order_and_paired(rows):
    keys = [(r["patient_id"], r["slice"]) for r in rows]
    assert keys == sorted(keys)
    for r in rows[::157]:
        assert r["mask"].endswith(f"_{r['slice']}_mask.png")
        assert r["image"].endswith(f"_{r['slice']}.jpg")
        assert r["file_name"] == r["image"].rsplit("/", 1)[1]


def test_non_empty_mask_count(rows):
    non_empty = sum(int(decode_mask(r["mask"]).any()) for r in rows)
    assert non_empty == 1373


def test_load_splits_are_patient_wise(lgg_dsd, lgg_root):
    assert list(lgg_dsd) == ["train", "validation", "test"]
    assert sum(len(ds) for ds in lgg_dsd.values()) == 3929
    by_split = {name: set(ds["patient_id"]) for name, ds in lgg_dsd.items()}
    assert not by_split["train"] & by_split["validation"]
    assert not by_split["train"] & by_split["test"]
    assert not by_split["validation"] & by_split["test"]
    assert len(set.union(*by_split.values())) == 110
    assert {k: len(v) for k, v in by_split.items()} == {"train": 77, "validation": 11, "test": 22}
    recorded = lgg.recorded_split()
    assert {k: sorted(v) for k, v in by_split.items()} == recorded


def test_recorded_split_matches_make_patient_split(rows):
    patients = [r["patient_id"] for r in rows]
    recorded = lgg.recorded_split()
    assert lgg.make_patient_split(patients) == recorded
    data = json.loads(lgg.SPLIT_FILE.read_text())
    assert data["seed"] == lgg.SPLIT_SEED
    assert data["fractions"] == lgg.SPLIT_FRACTIONS
    assert set(data["train"]) | set(data["validation"]) | set(data["test"]) == set(patients)


def test_make_patient_split_is_seeded_and_order_free():
    patients = [f"TCGA_XX_{i:04d}" for i in range(50)]
    a = lgg.make_patient_split(patients)
    assert a == lgg.make_patient_split(list(reversed(patients)) + patients[:5])
    assert a != lgg.make_patient_split(patients, seed=1)
    assert {k: len(v) for k, v in a.items()} == {"test": 10, "validation": 5, "train": 35}


@pytest.mark.parametrize("index", [0, 1000, 2733])
def test_masks_align_with_images(lgg_dsd, index):
    row = lgg_dsd["train"][index]
    image, mask = np.asarray(row["image"]), np.asarray(row["mask"])
    assert image.shape == (256, 256, 3)
    assert mask.shape == (256, 256)
    assert set(np.unique(mask)) <= {0, 255}


def test_patient_id_parsing():
    assert lgg.patient_id("TCGA_CS_4941_19960909") == "TCGA_CS_4941"
    with pytest.raises(DataError, match="TCGA_CS_4941"):
        lgg.patient_id("TCGA_CS_4941")


# ------------------------------------------------------------------------------------------ .tif layout


def _to_tif(tree):
    """Rewrite the tiny tree's slices in the original release's format: RGB .tif images
    (tifffile) and 8-bit grayscale _mask.tif masks (PIL). Returns {(case, slice): (rgb, mask)}."""
    arrays = {}
    for case, slices in tree.cases.items():
        for s in slices:
            jpg, png = tree.image(case, s), tree.mask(case, s)
            rgb = np.asarray(Image.open(jpg).convert("RGB"))
            mask = np.asarray(Image.open(png))
            tifffile.imwrite(tree.image(case, s, ".tif"), rgb, photometric="rgb")
            Image.fromarray(mask).save(tree.mask(case, s, ".tif"))
            jpg.unlink()
            png.unlink()
            arrays[case, s] = (rgb, mask)
    return arrays


def test_tif_layout_round_trips_exactly(make_lgg_tree):
    tree = make_lgg_tree(slices=(10, 11, 12))
    arrays = _to_tif(tree)
    p1, p2 = tree.patients
    dsd = lgg.load(tree.root, split={"train": [p1], "test": [p2]}, check="full")
    assert {k: len(v) for k, v in dsd.items()} == {"train": 3, "validation": 0, "test": 3}
    assert set(dsd["train"]["patient_id"]) == {p1}
    assert set(dsd["test"]["patient_id"]) == {p2}
    n_tumor = 0
    for ds, case in ((dsd["train"], list(tree.cases)[0]), (dsd["test"], list(tree.cases)[1])):
        assert list(ds["slice"]) == [10, 11, 12]
        raw = ds.cast_column("image", datasets.Image(decode=False))
        for row, raw_row in zip(ds, raw):
            rgb, mask = arrays[case, row["slice"]]
            assert raw_row["image"]["path"].endswith(".tif")
            assert row["file_name"] == f"{case}_{row['slice']}.tif"
            assert row["image"].mode == "RGB"
            assert np.array_equal(np.asarray(row["image"]), rgb)
            assert np.array_equal(np.asarray(row["mask"]), mask)
            assert np.array_equal(decode_image(raw_row["image"]["path"]), rgb)
            assert np.array_equal(decode_mask(np.asarray(row["mask"])), (mask > 127).astype(np.uint8))
            n_tumor += int(mask.any())
    assert n_tumor == 5  # slice 10 of the first case is empty, the other five are not


def test_mixed_tif_and_jpg_and_parent_folder(make_lgg_tree):
    tree = make_lgg_tree(slices=(11, 12))
    case = list(tree.cases)[0]
    rgb = np.asarray(Image.open(tree.image(case, 11)).convert("RGB"))
    tifffile.imwrite(tree.image(case, 11, ".tif"), rgb, photometric="rgb")
    tree.image(case, 11).unlink()
    p1, p2 = tree.patients
    dsd = lgg.load(tree.root.parent, split={"train": [p1, p2]}, check="header")
    assert len(dsd["train"]) == 4
    assert sorted(dsd["train"]["file_name"])[0] == f"{case}_11.tif"
    assert np.array_equal(np.asarray(dsd["train"][0]["image"]), rgb)


def test_split_must_cover_the_patients(make_lgg_tree):
    tree = make_lgg_tree(slices=(10,))
    p1, p2 = tree.patients
    with pytest.raises(DataError, match=re.escape(str(tree.root / p2))):
        lgg.load(tree.root, split={"train": [p1]})
    with pytest.raises(DataError, match=re.escape(str(tree.root))) as info:
        lgg.load(tree.root, split={"train": [p1, p2], "test": ["TCGA_ZZ_0000"]})
    assert "TCGA_ZZ_0000" in str(info.value)
