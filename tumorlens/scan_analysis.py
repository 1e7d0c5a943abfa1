"""Scan analysis, shared by the app and the batch CLI: a file (image, DICOM, NIfTI) -> slices ->
masks -> sizes. No Gradio here; the front ends turn `DataError`s into their own messages.

- `load_scan(path)`: `medical_io.read_scan`, remembering the last `SCAN_CACHE_SIZE` files (by path,
  size and modification time), so moving the app's slice slider does not decode the file again.
- `analyze_scan(pipeline, scan, ...)` -> `ScanResult`: one slice segmented and classified; in
  whole-volume mode every slice is segmented (`VOLUME_BATCH` per model call), its mask kept
  (`ScanResult.masks`, for the exports of `scan_outputs`), and the tumor volume comes out in cm³ when
  the voxel size is known. With a `budget` (`medical_io.RequestBudget`; the
  app passes `APP_BUDGET`), a volume of more than `budget.max_volume_slices` slices is refused in
  whole-volume mode (BudgetError naming the `tumorlens predict` command that runs it whole); one
  slice of it still analyzes.
- `analyze_slices(pipeline, scans)`: `analyze_scan` for many single slices, each model on batches.
- `resolve_spacing`: the header's pixel spacing or the one a user gives. The verdict and size text of a
  result are `scan_verdict.report`'s."""

from __future__ import annotations

import functools
import math
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

from .errors import DataError
from .inference import Analysis, Pipeline, Segmentation, Segmenter
from .postprocess import DEFAULT_THRESHOLD
from .medical_io import CLI_BUDGET, RequestBudget, Scan, read_scan
from .scope_gate import ScopeGate, ScopeResult

VOLUME_BATCH = 8           # slices per segmenter call in whole-volume mode
SCAN_CACHE_SIZE = 4        # decoded files kept by `load_scan`
RECENT_RESULTS = 8         # analyses kept by `RecentResults` (the app's downloads)
LARGEST = "largest"        # slice_index: the slice with the most tumor (whole-volume mode)


# -- reading -------------------------------------------------------------------------------
def file_stamps(paths) -> tuple[tuple[str, int, int], ...] | None:
    """(resolved path, size, modification time) of each file: what says a file is unchanged; None when
    one is missing or not a file."""
    stamps = []
    for item in paths:
        try:
            path = Path(item)
            if not path.is_file():
                return None
            st = path.stat()
        except (OSError, TypeError):
            return None
        stamps.append((str(path.resolve()), st.st_size, st.st_mtime_ns))
    return tuple(stamps)


@functools.lru_cache(maxsize=SCAN_CACHE_SIZE)
def _read_cached(files: tuple[tuple[str, int, int], ...], budget: RequestBudget) -> Scan:
    paths = [path for path, _, _ in files]
    return read_scan(paths[0] if len(paths) == 1 else paths, budget=budget)


def load_scan(path, budget: RequestBudget = CLI_BUDGET) -> Scan:
    """`read_scan(path, budget=budget)`, from a small cache keyed by the resolved path, size and
    modification time (a changed or replaced file is read again). `path` may be a list: the files of one
    multi-file upload (a DICOM series), keyed by each file. Raises DataError as read_scan does."""
    paths = list(path) if isinstance(path, (list, tuple)) else [path]
    stamps = file_stamps(paths) if paths and None not in paths else None
    if not stamps:
        return read_scan(path, budget=budget)  # raises the DataError that explains it, or reads a folder
    return _read_cached(stamps, budget)


class RecentResults:
    """The last `size` analyses by a key (the app's: the files' `file_stamps`, the settings, the model),
    with when each ran, so an export writes the analysis a page shows without a second model run.
    Thread-safe; an evicted one is analysed again by its caller."""

    def __init__(self, size: int = RECENT_RESULTS):
        self.size, self._items, self._lock = size, OrderedDict(), threading.Lock()

    def get(self, key) -> tuple[ScanResult, datetime] | None:
        with self._lock:
            if key is not None and key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        return None

    def put(self, key, result: ScanResult) -> tuple[ScanResult, datetime]:
        entry = (result, datetime.now(timezone.utc))
        if key is not None and self.size > 0:
            with self._lock:
                self._items[key] = entry
                while len(self._items) > self.size:
                    self._items.popitem(last=False)
        return entry


def model_threshold(pipeline: Pipeline | None) -> float:
    """The segmenter's own threshold (tuned on validation data)."""
    return pipeline.segmenter.threshold if pipeline and pipeline.segmenter else DEFAULT_THRESHOLD


# -- results -------------------------------------------------------------------------------
@dataclass
class ScanResult:
    """The analysis of one slice of a scan, plus (whole-volume mode) the tumor on every slice."""

    scan: Scan
    index: int
    analysis: Analysis
    spacing_source: str | None = None              # 'header' | 'entered' | None
    slice_tumor_px: list[int] | None = None         # whole-volume mode: tumor pixels per slice
    notes: list[str] = field(default_factory=list)
    masks: list[np.ndarray] | None = field(default=None, repr=False)  # whole-volume mode: every slice's mask
    scope: ScopeResult | None = None                # the out-of-scope check, when one ran
    analyzed_anyway: bool = False                   # the check refused it and the user asked to go on

    @property
    def refused(self) -> bool:
        """The scope check refused the upload and no model ran on it."""
        return self.scope is not None and not self.scope.in_scope and not self.analyzed_anyway

    def slice_masks(self) -> dict[int, np.ndarray]:
        """{slice index: mask} for every slice segmented: all of a volume analysed whole, else the one shown."""
        if self.masks is not None:
            return dict(enumerate(self.masks))
        return {} if self.segmentation is None else {self.index: self.segmentation.mask}

    @property
    def segmentation(self) -> Segmentation | None:
        return self.analysis.segmentation

    @property
    def pixel_spacing_mm(self):
        return self.analysis.pixel_spacing_mm

    @property
    def voxel_volume_mm3(self) -> float | None:
        if self.pixel_spacing_mm is None or self.scan.slice_thickness_mm is None:
            return None
        return float(self.pixel_spacing_mm[0]) * float(self.pixel_spacing_mm[1]) * self.scan.slice_thickness_mm

    @property
    def tumor_voxels(self) -> int | None:
        return None if self.slice_tumor_px is None else int(sum(self.slice_tumor_px))

    @property
    def tumor_slices(self) -> int | None:
        return None if self.slice_tumor_px is None else sum(c > 0 for c in self.slice_tumor_px)

    @property
    def volume_mm3(self) -> float | None:
        if self.tumor_voxels is None or self.voxel_volume_mm3 is None:
            return None
        return self.tumor_voxels * self.voxel_volume_mm3

    @property
    def volume_cm3(self) -> float | None:
        return None if self.volume_mm3 is None else self.volume_mm3 / 1000.0

    @property
    def tumor_found(self) -> bool:
        if self.slice_tumor_px is not None:
            return self.tumor_voxels > 0
        return self.analysis.tumor_found


# -- analysis ------------------------------------------------------------------------------
def resolve_spacing(scan: Scan, entered: float | None) -> tuple[tuple[float, float] | None, str | None]:
    """The pixel spacing to use: a number entered by the user (square pixels) wins, unless it is the
    header's own row spacing (as the page fills it in), which keeps a non-square header spacing."""
    header = scan.pixel_spacing_mm
    if entered is None or entered == 0:  # an empty field (the page may send it as 0)
        return (header, "header") if header else (None, None)
    entered = float(entered)
    if not math.isfinite(entered) or entered <= 0:
        raise DataError(None, f"pixel spacing must be a positive number of mm per pixel, not {entered:g}")
    if header and math.isclose(entered, header[0], rel_tol=1e-6):
        return header, "header"
    return (entered, entered), "entered"


def segment_slices(segmenter: Segmenter, scan: Scan, threshold: float, *,
                   progress=None) -> Iterator[tuple[int, np.ndarray, Segmentation]]:
    """(index, H x W x 3 image, segmentation) for every slice, `VOLUME_BATCH` slices per model
    call; `progress(fraction, desc=...)` after each batch."""
    n = scan.n_slices
    for start in range(0, n, VOLUME_BATCH):
        stop = min(n, start + VOLUME_BATCH)
        images = [scan.rgb(i) for i in range(start, stop)]
        for i, rgb, prob in zip(range(start, stop), images, segmenter.probabilities(images, batch_size=VOLUME_BATCH)):
            yield i, rgb, segmenter.from_probability(prob, threshold)
        if progress is not None:
            progress(stop / n, desc=f"Segmented {stop} of {n} slices")


def classify(pipeline: Pipeline, rgb: np.ndarray, seg: Segmentation | None) -> dict[str, float]:
    """Class probabilities for one slice ({} without a classifier)."""
    if pipeline.classifier is None:
        return {}
    masks = [pipeline.segmenter.classifier_mask(seg)] if pipeline.classifier.needs_masks else None
    p = pipeline.classifier.probabilities([rgb], masks)[0]
    return {name: float(v) for name, v in zip(pipeline.classifier.label_names, p)}


def analyze_scan(pipeline: Pipeline, scan: Scan, *, threshold: float | None = None,
                 spacing: float | None = None, slice_index: int | str | None = None, whole_volume: bool = False,
                 progress=None, on_slice: Callable[[int, Segmentation], None] | None = None,
                 budget: RequestBudget | None = None, scope_gate: ScopeGate | None = None,
                 analyze_anyway: bool = False) -> ScanResult:
    """Segment and classify one slice of `scan` (None or -1: the middle one); with `whole_volume`,
    segment every slice too and keep each slice's tumor pixel count (for the volume in cm³).

    Whole-volume mode only: `slice_index=LARGEST` picks the slice with the most tumor (the middle
    one when there is none), and `on_slice(index, segmentation)` sees every slice's segmentation;
    `budget.max_volume_slices` (if given) caps the slices it segments: a longer volume is refused
    (BudgetError) before any model call.

    `scope_gate`: check the slice (whole-volume mode: the middle one) before any model runs; a refused
    one comes back with no segmentation or tumor type (`ScanResult.refused`), unless `analyze_anyway`."""
    threshold = model_threshold(pipeline) if threshold is None else threshold
    if not 0.0 < float(threshold) < 1.0:
        raise DataError(None, f"threshold must lie between 0 and 1, not {threshold}")
    n = scan.n_slices
    largest = slice_index == LARGEST
    index = n // 2 if largest or slice_index is None or int(slice_index) < 0 else int(slice_index)
    rgb = scan.rgb(index)  # raises on an index out of range
    if whole_volume and scan.is_volume and pipeline.segmenter is not None and budget is not None:
        budget.check_whole_volume(scan.n_slices, scan.source)
    pixel_spacing, source = resolve_spacing(scan, spacing)
    notes = []
    scope = None
    if scope_gate is not None:
        scope = scope_gate.check(rgb if not (whole_volume and scan.is_volume) else scan.rgb(n // 2))
        if not scope.in_scope and not analyze_anyway:
            return ScanResult(scan, index, Analysis(rgb, None, {}, pixel_spacing), source, None, notes, scope=scope)
    anyway = scope is not None and not scope.in_scope
    if not (whole_volume and scan.is_volume and pipeline.segmenter is not None):
        if whole_volume and not scan.is_volume:
            notes.append("Whole volume: this file holds one slice, so there is no volume to measure.")
        return ScanResult(scan, index, pipeline.analyze(rgb, threshold=threshold, pixel_spacing_mm=pixel_spacing),
                          source, None, notes, scope=scope, analyzed_anyway=anyway)
    counts, masks, shown, best = [], [], None, None
    for i, image, seg in segment_slices(pipeline.segmenter, scan, threshold, progress=progress):
        counts.append(seg.area_px)
        masks.append(seg.mask)
        if on_slice is not None:
            on_slice(i, seg)
        if i == index:
            shown = seg
        if largest and seg.area_px > (best[2].area_px if best else 0):
            best = (i, image, seg)
    if best is not None:
        index, rgb, shown = best
    return ScanResult(scan, index, Analysis(rgb, shown, classify(pipeline, rgb, shown), pixel_spacing),
                      source, counts, notes, masks, scope=scope, analyzed_anyway=anyway)


# -- many single slices at once (the batch CLI) ----------------------------------------------
def analyze_slices(pipeline: Pipeline, scans, *, threshold: float | None = None, spacing=None,
                   scope_gate: ScopeGate | None = None, batch_size: int = 16,
                   disagreement: bool = False) -> list:
    """`analyze_scan(pipeline, scan, threshold=..., spacing=..., scope_gate=...)` for each single-slice
    scan in `scans`, with the scope gate, the segmenter and the classifier each run on batches of
    `batch_size` slices: the same ScanResults (masks equal, probabilities up to float noise). `spacing`:
    one value for every scan, or a list with one per scan. Per scan, in order: its ScanResult, or the
    DataError analyze_scan raises for that scan alone (an unreadable slice, an impossible spacing). The
    segmentations carry no flip-disagreement map unless `disagreement` (analyze_scan's do). A volume
    is refused (ValueError): analyze it with analyze_scan."""
    threshold = model_threshold(pipeline) if threshold is None else threshold
    if not 0.0 < float(threshold) < 1.0:
        raise DataError(None, f"threshold must lie between 0 and 1, not {threshold}")
    scans = list(scans)
    spacings = list(spacing) if isinstance(spacing, (list, tuple)) else [spacing] * len(scans)
    results: list = [None] * len(scans)
    ready = []  # (position, rgb, pixel spacing, its source)
    for k, (scan, entered) in enumerate(zip(scans, spacings, strict=True)):
        if scan.is_volume:
            raise ValueError(f"{scan.source}: a volume of {scan.n_slices} slices; analyze it with analyze_scan")
        try:
            ready.append((k, scan.rgb(0), *resolve_spacing(scan, entered)))
        except DataError as exc:
            results[k] = exc
    scopes = _scope_batch(scope_gate, [r[1] for r in ready], batch_size)
    run = []
    for (k, rgb, pixel_spacing, source), scope in zip(ready, scopes):
        if scope is not None and not scope.in_scope:
            results[k] = ScanResult(scans[k], 0, Analysis(rgb, None, {}, pixel_spacing), source, None, [], scope=scope)
        else:
            run.append((k, rgb, pixel_spacing, source, scope))
    images = [r[1] for r in run]
    segs = [None] * len(run)
    segmenter = pipeline.segmenter
    if segmenter is not None and images:
        if hasattr(segmenter, "probability_maps"):
            maps = segmenter.probability_maps(images, batch_size, disagreement=disagreement)
        else:  # a stand-in with probabilities() only
            maps = [(p, None) for p in segmenter.probabilities(images, batch_size=batch_size)]
        segs = []
        for prob, gaps in maps:
            seg = segmenter.from_probability(prob, threshold)
            seg.disagreement = gaps
            segs.append(seg)
    probs = [{} for _ in run]
    if pipeline.classifier is not None and images:
        masks = [segmenter.classifier_mask(s) for s in segs] if pipeline.classifier.needs_masks else None
        names = pipeline.classifier.label_names
        probs = [{n: float(v) for n, v in zip(names, p)} for p in pipeline.classifier.probabilities(images, masks)]
    for (k, rgb, pixel_spacing, source, scope), seg, p in zip(run, segs, probs):
        results[k] = ScanResult(scans[k], 0, Analysis(rgb, seg, p, pixel_spacing), source, None, [], scope=scope)
    return results


def _scope_batch(gate: ScopeGate | None, images: list[np.ndarray], batch_size: int) -> list[ScopeResult | None]:
    """`gate.check(rgb)` for each image, the gate's features read in batches (one check at a time for a
    gate without `features` and `model`, such as a stand-in)."""
    if gate is None or not images:
        return [None] * len(images)
    if not (hasattr(gate, "features") and hasattr(gate, "model")):
        return [gate.check(rgb) for rgb in images]
    feats = gate.features(images, batch=batch_size)
    scores, nearest = gate.model.score(feats), gate.model.nearest(feats)
    return [ScopeResult(float(s) >= gate.threshold, float(s), gate.threshold, gate.model.datasets[int(j)], bool(b))
            for s, j, b in zip(scores, nearest, feats["blank"])]


__all__ = ["RecentResults", "ScanResult", "analyze_scan", "analyze_slices", "file_stamps", "classify", "load_scan",
           "model_threshold", "resolve_spacing", "segment_slices", "LARGEST", "SCAN_CACHE_SIZE", "VOLUME_BATCH"]
