"""tumorlens.scan_analysis without Gradio: a file -> slices -> masks -> sizes, as both front ends use it.

A stand-in pipeline (tumor probability = brightness; a classifier that reads the brightest pixel)
makes every mask known in advance, so sizes, volumes and the slice picked can be checked exactly.
Images and volumes are synthetic: a gray disc of "brain" with a bright "tumor" in it."""

from __future__ import annotations

import os
import subprocess
import sys

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from tumorlens.errors import DataError
from tumorlens.inference import Pipeline, Segmentation
from tumorlens.medical_io import read_scan
from tumorlens.scan_analysis import LARGEST, analyze_scan, load_scan, resolve_spacing
from tumorlens.scan_verdict import report

BRAIN, TUMOR = 100, 250  # gray levels; after read_scan's min-max window: 102 and 255 (background 0)


class BrightSegmenter:
    """Tumor probability = 0.9 x the red channel / 255: at threshold 0.5 the tumor is exactly the
    bright pixels; at 0.95 nothing is."""

    threshold = 0.5

    def __init__(self):
        self.batches: list[int] = []

    def probabilities(self, images, batch_size: int = 16):
        self.batches.append(len(images))
        return [img[..., 0].astype(np.float32) * (0.9 / 255.0) for img in images]

    def from_probability(self, prob, threshold=None) -> Segmentation:
        threshold = self.threshold if threshold is None else threshold
        return Segmentation(prob, prob >= threshold, threshold)

    def segment(self, rgb, threshold=None) -> Segmentation:
        return self.from_probability(self.probabilities([rgb])[0], threshold)

    def classifier_mask(self, seg: Segmentation):
        return seg.mask


class BrightClassifier:
    """'glioma' when the slice has tumor-bright pixels, else 'no_tumor'; remembers what it saw."""

    label_names = ["glioma", "no_tumor"]
    needs_masks = False

    def __init__(self):
        self.seen: list[np.ndarray] = []

    def probabilities(self, images, masks=None):
        self.seen += list(images)
        return np.array([[0.9, 0.1] if (img[..., 0] > 200).any() else [0.2, 0.8] for img in images])


def stand_in_pipeline() -> Pipeline:
    return Pipeline(BrightSegmenter(), BrightClassifier())


def phantom(shape=(80, 96), tumor: tuple[int, int, int] | None = (40, 50, 9)) -> np.ndarray:
    """A uint8 slice: 0 outside, BRAIN in a disc, TUMOR in a smaller disc (row, col, radius)."""
    rows, cols = np.mgrid[:shape[0], :shape[1]]
    img = np.zeros(shape, np.uint8)
    img[(rows - shape[0] / 2) ** 2 + (cols - shape[1] / 2) ** 2 < (min(shape) / 2 - 4) ** 2] = BRAIN
    if tumor is not None:
        r, c, radius = tumor
        img[(rows - r) ** 2 + (cols - c) ** 2 <= radius ** 2] = TUMOR
    return img


def phantom_volume(radii=(0, 4, 9, 6, 0), shape=(80, 96)) -> np.ndarray:
    """Slices stacked on the last axis, one tumor radius per slice (0: no tumor)."""
    return np.stack([phantom(shape, (40, 50, r) if r else None) for r in radii], axis=-1)


def write_phantom_nifti(path, volume: np.ndarray, zooms=(0.9, 0.8, 2.5)):
    """`volume` (x, y, z) with a RAS+ diagonal affine: read_scan cuts it along z, counts unchanged."""
    img = nib.Nifti1Image(volume.astype(np.int16), np.diag(list(zooms) + [1.0]))
    img.header.set_zooms(zooms)
    nib.save(img, str(path))
    return path


def test_the_module_runs_without_gradio():
    code = ("import sys, tumorlens.scan_analysis, tumorlens.predict, tumorlens.examples; "
            "print(sorted(m for m in ('gradio', 'gradio_client') if m in sys.modules))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip().splitlines()[-1] == "[]"


def test_image_slice_mask_and_size(tmp_path):
    path = tmp_path / "slice.png"
    img = phantom()
    Image.fromarray(img).save(path)
    pipeline = stand_in_pipeline()
    result = analyze_scan(pipeline, load_scan(path))
    expected = img == TUMOR
    assert result.index == 0 and result.scan.kind == "image" and result.slice_tumor_px is None
    assert np.array_equal(result.segmentation.mask, expected) and result.tumor_found
    assert result.analysis.predicted_class == "glioma" and result.pixel_spacing_mm is None
    verdict, size = report(result)
    assert "Tumor found" in verdict and size.startswith(f"{expected.sum():,} px (")
    assert "pixels and % only" in size

    # an entered spacing gives mm²; a bad one and a bad threshold are DataErrors
    result = analyze_scan(pipeline, load_scan(path), spacing=0.5)
    assert result.spacing_source == "entered"
    assert result.analysis.area_mm2 == pytest.approx(expected.sum() * 0.25)
    assert "as entered" in report(result)[1]
    with pytest.raises(DataError, match="pixel spacing must be a positive number"):
        analyze_scan(pipeline, load_scan(path), spacing=-1)
    with pytest.raises(DataError, match="threshold must lie between 0 and 1"):
        analyze_scan(pipeline, load_scan(path), threshold=1.5)
    # whole-volume mode on one slice: a note, no volume
    result = analyze_scan(pipeline, load_scan(path), whole_volume=True)
    assert result.slice_tumor_px is None and "no volume to measure" in report(result)[1]

    healthy = tmp_path / "healthy.png"
    Image.fromarray(phantom(tumor=None)).save(healthy)
    result = analyze_scan(pipeline, load_scan(healthy))
    assert not result.tumor_found and "No tumor found" in report(result)[0]


def test_load_scan_remembers_a_file_until_it_changes(tmp_path):
    path = tmp_path / "slice.png"
    Image.fromarray(phantom()).save(path)
    first = load_scan(path)
    assert load_scan(str(path)) is first
    Image.fromarray(phantom(tumor=None)).save(path)
    os.utime(path, ns=(0, path.stat().st_mtime_ns + 10**9))
    second = load_scan(path)
    assert second is not first and not (second.slices[0] == TUMOR).any()
    with pytest.raises(DataError, match="file not found"):
        load_scan(tmp_path / "missing.png")
    with pytest.raises(DataError, match="no file given"):
        load_scan(None)


def test_volume_counts_every_slice_and_gives_cm3(tmp_path):
    volume = phantom_volume(radii=(0, 4, 9, 6, 0, 3, 0, 0, 2, 0))  # 10 slices: two segmenter batches
    path = write_phantom_nifti(tmp_path / "vol.nii.gz", volume)
    scan = read_scan(path)
    pipeline = stand_in_pipeline()
    counts = [int((volume[..., k] == TUMOR).sum()) for k in range(volume.shape[-1])]
    seen, progress = [], []
    result = analyze_scan(pipeline, scan, whole_volume=True, on_slice=lambda i, seg: seen.append((i, seg.area_px)),
                          progress=lambda f, desc: progress.append(desc))
    assert pipeline.segmenter.batches == [8, 2] and progress == ["Segmented 8 of 10 slices", "Segmented 10 of 10 slices"]
    assert result.slice_tumor_px == counts and seen == list(enumerate(counts))
    assert result.index == 5 and result.tumor_slices == 5 and result.tumor_voxels == sum(counts)
    assert result.spacing_source == "header" and result.pixel_spacing_mm == (0.8, 0.9)
    assert result.volume_cm3 == pytest.approx(sum(counts) * 0.9 * 0.8 * 2.5 / 1000)
    verdict, size = report(result)
    assert "On 5 of 10 slices" in verdict and f"{result.volume_cm3:,.3f} cm³" in size
    assert "(largest on slice 2)" in size

    # LARGEST: the slice with the most tumor is shown and classified; with none, the middle one
    pipeline = stand_in_pipeline()
    result = analyze_scan(pipeline, scan, whole_volume=True, slice_index=LARGEST)
    assert result.index == 2 and result.segmentation.area_px == max(counts)
    assert len(pipeline.classifier.seen) == 1 and np.array_equal(pipeline.classifier.seen[0], scan.rgb(2))
    pipeline = stand_in_pipeline()
    result = analyze_scan(pipeline, scan, threshold=0.95, whole_volume=True, slice_index=LARGEST)
    assert result.index == 5 and not result.tumor_found and "No tumor found" in report(result)[0]
    assert np.array_equal(pipeline.classifier.seen[0], scan.rgb(5))


def test_spacing_entered_or_from_the_header(tmp_path):
    scan = read_scan(write_phantom_nifti(tmp_path / "vol.nii.gz", phantom_volume()))
    assert resolve_spacing(scan, None) == ((0.8, 0.9), "header")
    assert resolve_spacing(scan, 0) == ((0.8, 0.9), "header")  # the page's empty field
    assert resolve_spacing(scan, 0.8) == ((0.8, 0.9), "header")  # the header's row spacing, as the page fills it
    assert resolve_spacing(scan, 1.0) == ((1.0, 1.0), "entered")


def test_the_verdict_says_uncertain_when_the_two_models_disagree():
    from tumorlens.inference import Analysis, Segmentation
    from tumorlens.scan_verdict import disagreement
    rgb = np.zeros((64, 64, 3), np.uint8)
    small = np.zeros((64, 64), bool)
    small[10:12, 10:13] = True
    found = Segmentation(small.astype(np.float32), small, 0.5)
    empty = Segmentation(np.zeros((64, 64), np.float32), np.zeros((64, 64), bool), 0.5)
    healthy = {"glioma": 0.05, "meningioma": 0.03, "pituitary": 0.02, "no_tumor": 0.90}
    glioma = {"glioma": 0.93, "meningioma": 0.03, "pituitary": 0.02, "no_tumor": 0.02}
    text = disagreement(Analysis(rgb, found, healthy))
    assert text.startswith("### Uncertain") and "6 px" in text and "0.90" in text
    text = disagreement(Analysis(rgb, empty, glioma))
    assert text.startswith("### Uncertain") and "glioma" in text and "0.93" in text
    assert disagreement(Analysis(rgb, found, glioma)) is None      # they agree
    assert disagreement(Analysis(rgb, empty, healthy)) is None
    assert disagreement(Analysis(rgb, found, {**healthy, "no_tumor": 0.6, "glioma": 0.35})) is None  # not confident
    assert disagreement(Analysis(rgb, found, {})) is None          # one model only
