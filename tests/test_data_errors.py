"""Every way a dataset tree can be broken ends in a DataError that names the file or folder at fault,
and the build CLI turns it into exit code 2 with that path on stderr."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import h5py
import numpy as np
import pytest
import scipy.io
from PIL import Image

from tumorlens.data import brisc2025, figshare, lgg
from tumorlens.errors import DataError
from tumorlens.preprocess import decode_image, decode_mask

GARBAGE = b"\x00\x01not an image, just some bytes\xff\xfe" * 40


def raises_naming(path: Path | str):
    """pytest.raises(DataError) whose message contains `path` verbatim."""
    return pytest.raises(DataError, match=re.escape(str(path)))


# ------------------------------------------------------------------------------------------ roots


@pytest.mark.parametrize("loader", [
    brisc2025.load_classification, brisc2025.load_segmentation, figshare.load, figshare.load_original, lgg.load,
])
def test_missing_root(tmp_path, loader):
    root = tmp_path / "no-such-dataset"
    with raises_naming(root) as info:
        loader(root)
    assert info.value.path == str(root)
    assert "root not found" in str(info.value)


def test_root_that_is_a_file(tmp_path):
    root = tmp_path / "brisc.zip"
    root.write_bytes(b"PK")
    with raises_naming(root):
        brisc2025.load(root)


def test_brisc_missing_task_folder(make_brisc_tree):
    tree = make_brisc_tree(per_class=1)
    shutil.rmtree(tree.root / "classification_task" / "test" / "pituitary")
    with raises_naming(tree.root / "classification_task" / "test" / "pituitary"):
        brisc2025.load_classification(tree.root)


def test_lgg_root_without_cases(tmp_path):
    (tmp_path / "kaggle_3m").mkdir()
    with raises_naming(tmp_path / "kaggle_3m"):
        lgg.load(tmp_path, split={"train": []})


# ------------------------------------------------------------------------------------------ missing images


def test_brisc_dangling_symlink_in_classification(make_brisc_tree):
    tree = make_brisc_tree(per_class=1)
    link = tree.root / "classification_task" / "train" / "glioma" / "brisc2025_train_09999_gl_ax_t1.jpg"
    link.symlink_to("nowhere.jpg")
    with raises_naming(link) as info:
        brisc2025.load_classification(tree.root, check="header")
    assert "not found" in str(info.value)


def test_brisc_segmentation_symlink_to_missing_classification_file(make_brisc_tree):
    tree = make_brisc_tree(per_class=1, seg_images="symlink")
    stem = tree.seg_stems["test"][1]
    target = tree.cls_path("test", f"{stem}.jpg")
    target.unlink()
    with raises_naming(target.name) as info:
        brisc2025.load_segmentation(tree.root, check="header")
    assert "not found" in str(info.value)


def test_figshare_missing_slice(make_figshare_tree):
    tree = make_figshare_tree(n_per_label=1)
    tree.image(2).unlink()
    tree.mask(2).unlink()
    with raises_naming(tree.image(2)) as info:
        figshare.load(tree.root)
    assert "image file not found" in str(info.value)


def test_figshare_missing_image_leaves_its_mask_orphaned(make_figshare_tree):
    tree = make_figshare_tree(n_per_label=1)
    tree.image(2).unlink()
    with raises_naming(tree.mask(2)) as info:
        figshare.load(tree.root)
    assert "mask without its image" in str(info.value)


def test_figshare_image_without_label(make_figshare_tree):
    tree = make_figshare_tree(n_per_label=1)
    shutil.copyfile(tree.image(1), tree.image(4))
    shutil.copyfile(tree.mask(1), tree.mask(4))
    with raises_naming(tree.image(4)):
        figshare.load(tree.root)


def test_decode_missing_file(tmp_path):
    with raises_naming(tmp_path / "gone.jpg"):
        decode_image(tmp_path / "gone.jpg")


# ------------------------------------------------------------------------------------------ masks without images


def test_brisc_mask_without_its_image(make_brisc_tree):
    tree = make_brisc_tree(per_class=1)
    stem = tree.seg_stems["train"][0]
    orphan = tree.seg_mask("train", "brisc2025_train_09999_gl_ax_t1")
    shutil.copyfile(tree.seg_mask("train", stem), orphan)
    with raises_naming(orphan) as info:
        brisc2025.load_segmentation(tree.root)
    assert "mask without its image" in str(info.value)


def test_lgg_mask_without_its_image(make_lgg_tree):
    tree = make_lgg_tree(slices=(10, 11))
    case = list(tree.cases)[1]
    tree.image(case, 11).unlink()
    with raises_naming(tree.mask(case, 11)) as info:
        lgg.load(tree.root, split={"train": tree.patients})
    assert "mask without its image" in str(info.value)


def test_figshare_mask_without_its_image(make_figshare_tree):
    tree = make_figshare_tree(n_per_label=1)
    shutil.copyfile(tree.mask(1), tree.mask(9))
    with raises_naming(tree.mask(9)):
        figshare.load(tree.root)


# ------------------------------------------------------------------------------------------ images without masks


def test_brisc_image_without_mask(make_brisc_tree):
    tree = make_brisc_tree(per_class=1)
    stem = tree.seg_stems["test"][2]
    tree.seg_mask("test", stem).unlink()
    with raises_naming(tree.seg_mask("test", stem)) as info:
        brisc2025.load_segmentation(tree.root)
    assert "mask not found" in str(info.value)


def test_lgg_image_without_mask(make_lgg_tree):
    tree = make_lgg_tree(slices=(10, 11))
    case = list(tree.cases)[0]
    tree.mask(case, 10).unlink()
    with raises_naming(tree.mask(case, 10)) as info:
        lgg.load(tree.root, split={"train": tree.patients})
    assert "mask not found" in str(info.value)


def test_figshare_image_without_mask(make_figshare_tree):
    tree = make_figshare_tree(n_per_label=1)
    tree.mask(3).unlink()
    with raises_naming(tree.mask(3)):
        figshare.load(tree.root)


# ------------------------------------------------------------------------------------------ corrupt images


def test_brisc_garbage_jpg_caught_by_header_check(make_brisc_tree):
    tree = make_brisc_tree(per_class=1)
    bad = tree.cls_path("train", tree.cls_files["train"]["meningioma"][0])
    bad.write_bytes(GARBAGE)
    with raises_naming(bad) as info:
        brisc2025.load_classification(tree.root, check="header")
    assert "not a readable image" in str(info.value)
    brisc2025.load_classification(tree.root, check="none")  # 'none' trusts the files
    seg_bad = tree.seg_image("train", bad.stem)  # the segmentation image is a file of its own
    brisc2025.load_segmentation(tree.root, check="header")
    seg_bad.write_bytes(GARBAGE)
    with raises_naming(seg_bad):
        brisc2025.load_segmentation(tree.root, check="header")


def test_empty_image_file(make_brisc_tree):
    tree = make_brisc_tree(per_class=1)
    bad = tree.cls_path("test", tree.cls_files["test"]["no_tumor"][0])
    bad.write_bytes(b"")
    with raises_naming(bad) as info:
        brisc2025.load_classification(tree.root, check="header")
    assert "empty" in str(info.value)
    with raises_naming(bad):
        brisc2025.load_segmentation(tree.root, include_no_tumor=True, check="header")


def test_truncated_jpeg_passes_header_but_not_full_check(make_brisc_tree):
    tree = make_brisc_tree(per_class=1)
    bad = tree.cls_path("test", tree.cls_files["test"]["pituitary"][0])
    data = bad.read_bytes()
    bad.write_bytes(data[: len(data) // 2])
    brisc2025.load_classification(tree.root, check="header")  # the header is intact
    with raises_naming(bad) as info:
        brisc2025.load_classification(tree.root, check="full")
    assert "not a readable image" in str(info.value)
    with raises_naming(bad):
        decode_image(bad)


def test_garbage_mask_caught(make_brisc_tree, make_lgg_tree):
    tree = make_brisc_tree(per_class=1)
    bad = tree.seg_mask("train", tree.seg_stems["train"][1])
    bad.write_bytes(GARBAGE)
    with raises_naming(bad):
        brisc2025.load_segmentation(tree.root, check="header")
    with raises_naming(bad):
        decode_mask(bad)
    ltree = make_lgg_tree(slices=(12,))
    case = list(ltree.cases)[0]
    ltree.image(case, 12).write_bytes(GARBAGE)
    with raises_naming(ltree.image(case, 12)):
        lgg.load(ltree.root, split={"test": ltree.patients}, check="header")


def test_unknown_check_level(make_brisc_tree):
    tree = make_brisc_tree(per_class=1)
    with pytest.raises(ValueError, match="check must be"):
        brisc2025.load_classification(tree.root, check="paranoid")


# ------------------------------------------------------------------------------------------ BRISC names


def test_brisc_file_in_the_wrong_class_folder(make_brisc_tree):
    tree = make_brisc_tree(per_class=1)
    src = tree.cls_path("train", tree.cls_files["train"]["glioma"][0])
    wrong = tree.root / "classification_task" / "train" / "pituitary" / src.name
    shutil.move(src, wrong)
    with raises_naming(wrong) as info:
        brisc2025.load_classification(tree.root)
    assert "glioma" in str(info.value)


def test_brisc_foreign_file_name(make_brisc_tree):
    tree = make_brisc_tree(per_class=1)
    src = tree.cls_path("test", tree.cls_files["test"]["glioma"][0])
    foreign = src.with_name("IMG_0001.jpg")
    shutil.copyfile(src, foreign)
    with raises_naming(foreign.name):
        brisc2025.load_classification(tree.root)


# ------------------------------------------------------------------------------------------ Figshare .mat files


def test_figshare_corrupt_label_mat(make_figshare_tree):
    tree = make_figshare_tree(n_per_label=1)
    (tree.root / "label.mat").write_bytes(GARBAGE)
    with raises_naming(tree.root / "label.mat") as info:
        figshare.load(tree.root)
    assert "label.mat" in str(info.value)


def test_figshare_label_mat_without_label_variable(make_figshare_tree):
    tree = make_figshare_tree(n_per_label=1)
    scipy.io.savemat(str(tree.root / "label.mat"), {"labels": np.ones((3, 1))})
    with raises_naming(tree.root / "label.mat"):
        figshare.load(tree.root)


def test_figshare_bad_label_codes(make_figshare_tree, labels_mat_writer):
    tree = make_figshare_tree(n_per_label=1)
    labels_mat_writer(tree.root / "label.mat", [1, 4, 3])
    with raises_naming(tree.root / "label.mat") as info:
        figshare.load(tree.root)
    assert "unexpected label codes" in str(info.value)
    assert "4" in str(info.value)


def test_figshare_bad_label_codes_message_is_plain(make_figshare_tree, labels_mat_writer):
    tree = make_figshare_tree(n_per_label=1)
    labels_mat_writer(tree.root / "label.mat", [1, 4, 3])
    with raises_naming(tree.root / "label.mat") as info:
        figshare.load(tree.root)
    assert "unexpected label codes [4]:" in str(info.value)


def test_figshare_missing_label_mat(make_figshare_tree):
    tree = make_figshare_tree(n_per_label=1)
    (tree.root / "label.mat").unlink()
    with raises_naming(tree.root / "label.mat"):
        figshare.load(tree.root)


@pytest.mark.parametrize("content", [GARBAGE, b"\x89HDF\r\n\x1a\n" + GARBAGE])
def test_figshare_corrupt_fold_file(make_figshare_tree, content):
    tree = make_figshare_tree(n_per_label=1)
    (tree.root / "cvind5fold.mat").write_bytes(content)
    with raises_naming(tree.root / "cvind5fold.mat"):
        figshare.load(tree.root)


def test_figshare_fold_file_without_cvind(make_figshare_tree, folds_mat_writer):
    tree = make_figshare_tree(n_per_label=1)
    folds_mat_writer(tree.root / "cvind5fold.mat", tree.folds, key="folds")
    with raises_naming(tree.root / "cvind5fold.mat") as info:
        figshare.load(tree.root)
    assert "cvind" in str(info.value)


def test_figshare_fold_numbers_out_of_range(make_figshare_tree, folds_mat_writer):
    tree = make_figshare_tree(n_per_label=1)
    folds_mat_writer(tree.root / "cvind5fold.mat", [1, 6, 2])
    with raises_naming(tree.root / "cvind5fold.mat"):
        figshare.load(tree.root)


def test_figshare_fold_count_mismatch(make_figshare_tree, folds_mat_writer):
    tree = make_figshare_tree(n_per_label=1)
    folds_mat_writer(tree.root / "cvind5fold.mat", [1, 2])
    with raises_naming(tree.root / "cvind5fold.mat") as info:
        figshare.load(tree.root)
    assert "2 folds for 3 labels" in str(info.value)


def test_figshare_missing_fold_file(make_figshare_tree):
    tree = make_figshare_tree(n_per_label=1)
    (tree.root / "cvind5fold.mat").unlink()
    with raises_naming(tree.root / "cvind5fold.mat"):
        figshare.load(tree.root)


def test_figshare_stray_file_is_named_or_ignored(make_figshare_tree):
    tree = make_figshare_tree(n_per_label=1)
    stray = tree.root / "images" / "1 (copy).jpg"
    shutil.copyfile(tree.image(1), stray)
    try:
        ds = figshare.load(tree.root)["train"]
    except DataError as exc:
        assert str(stray) in str(exc)
    else:
        assert len(ds) == 3


def test_figshare_missing_masks_folder(make_figshare_tree):
    tree = make_figshare_tree(n_per_label=1)
    shutil.rmtree(tree.root / "masks")
    with raises_naming(tree.root / "masks"):
        figshare.load(tree.root)


def test_figshare_corrupt_original_slice(tmp_path):
    root = tmp_path / "release"
    root.mkdir()
    (root / "1.mat").write_bytes(GARBAGE)
    with raises_naming(root / "1.mat"):
        figshare.load_original(root)
    with h5py.File(root / "1.mat", "w") as f:  # valid HDF5, but no cjdata struct
        f.create_dataset("image", data=np.zeros((4, 4), np.int16))
    with raises_naming(root / "1.mat") as info:
        figshare.load_original(root)
    assert "cjdata" in str(info.value)


# ------------------------------------------------------------------------------------------ the build CLI


def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUMORLENS_")}
    env["HF_DATASETS_OFFLINE"] = "1"
    env["HF_HUB_OFFLINE"] = "1"
    return subprocess.run([sys.executable, "-m", "tumorlens.data", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_cli_build_broken_tree_exits_2_naming_the_path(make_figshare_tree, tmp_path):
    tree = make_figshare_tree(n_per_label=1)
    tree.mask(2).unlink()
    out = tmp_path / "built"
    proc = _cli("build", "figshare", "--root", str(tree.root), "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr
    assert str(tree.mask(2)) in proc.stderr
    assert "error:" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert not out.exists()  # nothing half-written


def test_cli_build_tiny_tree(make_figshare_tree, tmp_path):
    tree = make_figshare_tree(n_per_label=1)
    expected_images = [np.asarray(Image.open(tree.image(i)).convert("RGB")) for i in (1, 2, 3)]
    expected_masks = [np.asarray(Image.open(tree.mask(i))) for i in (1, 2, 3)]
    out = tmp_path / "built"
    proc = _cli("build", "figshare", "--root", str(tree.root), "--out", str(out), cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "train 3" in proc.stdout
    card = out / "README.md"
    assert card.is_file()
    text = card.read_text()
    assert "cc-by-4.0" in text and "10.6084/m9.figshare.1512427" in text
    assert "| train | 3 |" in text
    # the built dataset carries its own bytes: it still loads with the source tree gone
    shutil.rmtree(tree.root)
    dsd = datasets.load_from_disk(str(out))
    assert list(dsd) == ["train"]
    ds = dsd["train"]
    assert ds.features == figshare.FEATURES
    assert len(ds) == 3
    assert list(ds["id"]) == [1, 2, 3]
    assert list(ds["fold"]) == tree.folds
    assert ds.features["label"].int2str(list(ds["label"])) == [figshare.LABEL_NAMES[c] for c in tree.labels]
    for row, img, mask in zip(ds, expected_images, expected_masks):
        assert np.array_equal(np.asarray(row["image"].convert("RGB")), img)
        assert np.array_equal(np.asarray(row["mask"]), mask)
