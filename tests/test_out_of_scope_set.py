"""The out-of-scope image set: only files that packages ship and synthetic images, each a valid RGB
slice, with every kind the demo must refuse represented."""

from collections import Counter

import numpy as np

from tumorlens.bench.out_of_scope import out_of_scope_images, pydicom_images, synthetic_images


def test_the_set_holds_each_source_as_rgb_uint8():
    images = out_of_scope_images()
    sources = Counter(name.split("/")[0] for name, _ in images)
    assert set(sources) == {"skimage", "matplotlib", "pydicom", "synthetic"}
    assert len(images) >= 100 and len({name for name, _ in images}) == len(images)
    for name, rgb in images:
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3 and min(rgb.shape[:2]) >= 16, name
    # the photos, microscopy and text the issue saw mistaken for tumors are in it
    names = {name for name, _ in images}
    assert {"skimage/astronaut.png", "skimage/ihc.png", "skimage/text.png", "matplotlib/grace_hopper.jpg"} <= names


def test_no_mr_file_counts_as_out_of_scope():
    import pydicom

    from tumorlens.bench.out_of_scope import dicom_test_files
    mr = {p.name for p in dicom_test_files()
          if getattr(pydicom.dcmread(p, stop_before_pixels=True, force=True), "Modality", None) == "MR"}
    assert mr and not mr & {name.split("/", 1)[1] for name, _ in pydicom_images()}


def test_synthetic_images_are_reproducible():
    a, b = synthetic_images(seed=3), synthetic_images(seed=3)
    assert [n for n, _ in a] == [n for n, _ in b] and all(np.array_equal(x, y) for (_, x), (_, y) in zip(a, b))
