"""The Gradio interface: upload an MRI (image, DICOM or NIfTI), get the tumor outline, mask,
confidence heatmap, tumor type, a verdict and the tumor's size.

`build_demo(pipeline, examples)` takes a loaded Pipeline (or None: the app then says there is no
model yet) and a list of example files (`example_paths()`; `(file, model name)` pairs pick a
model too, as `lgg_example_paths()` do). With more than one segmenter of the registry available
(`available_segmenters()`, or `segmenters=`), the page offers a "Segmentation model" menu: the
given pipeline serves the default one, the others load on first use. Two named endpoints:

- `/analyze` (file, threshold, spacing, slice_index=-1, whole_volume=False, model=None) -> overlay,
  mask, heatmap, class probabilities, verdict (Markdown), size (text). `slice_index` -1 = the middle
  slice; `whole_volume` segments every slice of a volume and reports the tumor volume in cm³;
  `model` a registry name (brisc2025, lgg; None = the default). Tumor types come only with the
  BRISC model: the classifier was trained on its T1c slices.
- `/inspect` (file) -> what the file is (slices, spacing); in the page it also shows the slice
  slider and fills in the pixel spacing from a DICOM/NIfTI header.

Uploads reach `tumorlens.medical_io.read_scan` as files, so a bad file gets our own explanation.
The queue holds at most `QUEUE_SIZE` waiting requests and runs at most $TUMORLENS_CONCURRENCY
(default 2) model calls at once, so memory stays bounded however many clients come."""

from __future__ import annotations

import logging
import math
import os
import tempfile
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import datasets
import gradio as gr
import numpy as np
from huggingface_hub import HfApi, hf_hub_download

from .data import TUMOR_CLASSES, brisc2025, lgg
from .errors import DataError, TumorLensError
from .inference import (DEFAULT_SEGMENTER, DEFAULT_THRESHOLD, SEGMENTERS, Analysis, Pipeline, Segmentation,
                        Segmenter, UnknownModelError, available_segmenters, resolve_model)
from .medical_io import MAX_UPLOAD_BYTES, SCAN_SUFFIXES, Scan, read_scan
from .preprocess import IMAGE_SUFFIXES, decode_mask
from .visualize import heatmap, mask_image, overlay_outline

log = logging.getLogger("tumorlens.app")

DISCLAIMER = ("**Research use only.** TumorLens is not a medical device; its output is not a diagnosis "
              "and must not guide clinical decisions.")
EXAMPLES_DATASET_ENV = "TUMORLENS_EXAMPLES_DATASET"
CONCURRENCY_ENV = "TUMORLENS_CONCURRENCY"
DEFAULT_CONCURRENCY = 2
QUEUE_SIZE = 64            # waiting requests beyond this are turned away ("queue is full")
VOLUME_BATCH = 8           # slices per segmenter call in whole-volume mode
SCAN_CACHE_SIZE = 4        # decoded uploads kept, so moving the slider does not re-read the file
EXAMPLE_LABELS = {"glioma": "glioma", "meningioma": "meningioma", "no_tumor": "healthy (no tumor)",
                  "pituitary": "pituitary"}
LGG_EXAMPLE_PATIENTS = 3   # LGG examples: the largest FLAIR abnormality of this many test patients
TUMOR_TYPE_LABEL = "Tumor type"
NO_TUMOR_TYPE_NOTE = "Tumor type: only for the BRISC model (T1c)"


# -- examples ------------------------------------------------------------------------------
def example_paths(data_root=None, dataset: str | None = None) -> list[str]:
    """One real BRISC 2025 test slice per class (no_tumor is the healthy one), read at start-up.

    From the Hub dataset `dataset` (else $TUMORLENS_EXAMPLES_DATASET, unless `data_root` is given),
    else from the dataset location (`data_root`, else the usual root: ../shared/data here).
    Nothing is copied into the project; when the source is unreachable the app has no examples
    and says so in the log."""
    if dataset is None and data_root is None:
        dataset = os.environ.get(EXAMPLES_DATASET_ENV) or None
    if dataset:
        return examples_from_hub(dataset)
    return examples_from_root(data_root)


def examples_from_root(data_root=None) -> list[str]:
    try:
        test = brisc2025.load_classification(data_root, check="none")["test"]
    except TumorLensError as exc:
        log.warning("examples: BRISC 2025 not found (%s); the app starts without examples", exc)
        return []
    raw = test.cast_column("image", datasets.Image(decode=False))
    picked = {}
    for image, label in zip(raw["image"], test["label"]):
        picked.setdefault(TUMOR_CLASSES[label], image["path"])
    return [picked[c] for c in TUMOR_CLASSES if c in picked]


def pick_example_files(files) -> list[str]:
    """From a dataset repo's file list in the BRISC layout (.../<split>/<class>/<image>), the first
    image of each class, test split first."""
    best: dict[str, tuple] = {}
    for f in files:
        parts = f.split("/")
        if len(parts) < 2 or parts[-2] not in TUMOR_CLASSES or not f.lower().endswith(IMAGE_SUFFIXES):
            continue
        key = (0 if "test" in parts[:-2] else 1, f)
        if parts[-2] not in best or key < best[parts[-2]]:
            best[parts[-2]] = key
    return [best[c][1] for c in TUMOR_CLASSES if c in best]


def examples_from_hub(repo_id: str, *, max_rows: int = 5000) -> list[str]:
    """Examples from a Hub dataset: the BRISC folder layout (files downloaded to the Hub cache) or
    a packaged dataset with `image` and `label` columns (a few rows streamed, saved to the temp dir)."""
    try:
        picked = pick_example_files(HfApi().list_repo_files(repo_id, repo_type="dataset"))
        if picked:
            paths = [hf_hub_download(repo_id, f, repo_type="dataset") for f in picked]
        else:
            paths = _examples_from_packaged(repo_id, max_rows)
    except Exception as exc:  # noqa: BLE001 - offline, missing repo, odd layout: the app runs on
        log.warning("examples: cannot read the Hub dataset %s (%s: %s); the app starts without examples",
                    repo_id, exc.__class__.__name__, exc)
        return []
    if not paths:
        log.warning("examples: no class folders or labelled images found in %s; no examples", repo_id)
    return paths


def _examples_from_packaged(repo_id: str, max_rows: int) -> list[str]:
    rows = datasets.load_dataset(repo_id, split="test", streaming=True)
    names = rows.features["label"].names
    out = Path(tempfile.gettempdir()) / "tumorlens-examples" / repo_id.replace("/", "--")
    out.mkdir(parents=True, exist_ok=True)
    found: dict[str, str] = {}
    for i, row in enumerate(rows):
        name = names[row["label"]]
        if name in TUMOR_CLASSES and name not in found:
            path = out / f"{name}.png"
            row["image"].save(path)
            found[name] = str(path)
        if len(found) == len(TUMOR_CLASSES) or i >= max_rows:
            break
    return [found[c] for c in TUMOR_CLASSES if c in found]


def lgg_example_paths(data_root=None, patients: int = LGG_EXAMPLE_PATIENTS) -> list[str]:
    """LGG examples (3-channel slices, for the LGG model): the slice with the largest FLAIR
    abnormality of each of the first `patients` test patients, from the dataset location
    (`data_root`, else $TUMORLENS_LGG_ROOT, else ../shared/data/lgg). None come from the Hub."""
    try:
        test = lgg.load(data_root, check="none")["test"]
        raw = test.cast_column("image", datasets.Image(decode=False)).cast_column("mask", datasets.Image(decode=False))
        best: dict[str, tuple[int, str]] = {}
        for pid, image, mask in zip(raw["patient_id"], raw["image"], raw["mask"]):
            if pid not in best and len(best) == patients:
                break  # rows come patient by patient
            area = int(decode_mask(mask["path"]).sum())
            if area > best.get(pid, (0, ""))[0]:
                best[pid] = (area, image["path"])
    except (TumorLensError, OSError) as exc:
        log.warning("examples: LGG kaggle_3m not found (%s); the LGG model has no examples", exc)
        return []
    return [path for _, path in best.values()]


def example_label(path: str, model: str | None = None) -> str:
    """A BRISC class folder names its class; another model's example says which model and slice."""
    p = Path(path)
    for name in (p.parent.name, p.stem):
        if name in EXAMPLE_LABELS:
            return EXAMPLE_LABELS[name]
    if model in SEGMENTERS:
        case, _, number = p.stem.rpartition("_")  # kaggle_3m: <case>_<slice>
        where = f"{case}, slice {number}" if case and number.isdigit() else p.stem
        return f"{SEGMENTERS[model].short}: {where}"
    return p.name


# -- analysis (no Gradio here: the tests and other front ends call it directly) ------------
@dataclass
class ScanResult:
    """The analysis of one slice of a scan, plus (whole-volume mode) the tumor on every slice."""

    scan: Scan
    index: int
    analysis: Analysis
    spacing_source: str | None = None              # 'header' | 'entered' | None
    slice_tumor_px: list[int] | None = None         # whole-volume mode: tumor pixels per slice
    notes: list[str] = field(default_factory=list)

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


def analyze_scan(pipeline: Pipeline, scan: Scan, *, threshold: float | None = None,
                 spacing: float | None = None, slice_index: int | None = None, whole_volume: bool = False,
                 progress=None) -> ScanResult:
    """Segment and classify one slice of `scan` (None or -1: the middle one); with `whole_volume`,
    segment every slice too and keep each slice's tumor pixel count (for the volume in cm³)."""
    threshold = model_threshold(pipeline) if threshold is None else threshold
    if not 0.0 < float(threshold) < 1.0:
        raise DataError(None, f"threshold must lie between 0 and 1, not {threshold}")
    n = scan.n_slices
    index = n // 2 if slice_index is None or int(slice_index) < 0 else int(slice_index)
    rgb = scan.rgb(index)  # raises on an index out of range
    pixel_spacing, source = resolve_spacing(scan, spacing)
    notes = []
    if not (whole_volume and scan.is_volume and pipeline.segmenter is not None):
        if whole_volume and not scan.is_volume:
            notes.append("Whole volume: this file holds one slice, so there is no volume to measure.")
        return ScanResult(scan, index, pipeline.analyze(rgb, threshold=threshold, pixel_spacing_mm=pixel_spacing),
                          source, None, notes)
    seg_model, counts, shown = pipeline.segmenter, [], None
    for start in range(0, n, VOLUME_BATCH):
        stop = min(n, start + VOLUME_BATCH)
        images = [rgb if i == index else scan.rgb(i) for i in range(start, stop)]
        for i, prob in zip(range(start, stop), seg_model.probabilities(images, batch_size=VOLUME_BATCH)):
            seg = seg_model.from_probability(prob, threshold)
            counts.append(seg.area_px)
            if i == index:
                shown = seg
        if progress is not None:
            progress(stop / n, desc=f"Segmented {stop} of {n} slices")
    probs = {}
    if pipeline.classifier is not None:
        masks = [seg_model.classifier_mask(shown)] if pipeline.classifier.needs_masks else None
        p = pipeline.classifier.probabilities([rgb], masks)[0]
        probs = {name: float(v) for name, v in zip(pipeline.classifier.label_names, p)}
    return ScanResult(scan, index, Analysis(rgb, shown, probs, pixel_spacing), source, counts, notes)


def describe_area(px: int, fraction: float, spacing, of: str = "the image") -> str:
    """'1,234 px (0.47% of the image) = 308.5 mm² (3.09 cm²)'; spacing: mm per pixel, or (row, col)."""
    text = f"{px:,} px ({100 * fraction:.2f}% of {of})"
    if spacing:
        row, col = (spacing, spacing) if np.isscalar(spacing) else spacing
        mm2 = px * float(row) * float(col)
        text += f" = {mm2:,.1f} mm² ({mm2 / 100:,.2f} cm²)"
    return text


def _mm(x: float) -> str:
    return f"{x:.4g}"


def report(result: ScanResult) -> tuple[str, str]:
    """(verdict as Markdown, size as text) for the page and the API."""
    seg, scan = result.segmentation, result.scan
    if seg is None:
        return "No segmenter loaded: tumor type only.", ""
    lines = []
    where = f"slice {result.index} of {scan.n_slices} (0-{scan.n_slices - 1})" if scan.is_volume else "the image"
    area = describe_area(seg.area_px, seg.area_fraction, result.pixel_spacing_mm,
                         of="the slice" if scan.is_volume else "the image")
    lines.append(f"Slice {result.index}: {area}" if scan.is_volume else area)
    if result.pixel_spacing_mm:
        row, col = result.pixel_spacing_mm
        origin = {"header": f"from the {'DICOM' if scan.kind == 'dicom' else 'NIfTI'} header",
                  "entered": "as entered"}.get(result.spacing_source, "")
        lines.append(f"Pixel spacing {_mm(row)} x {_mm(col)} mm {origin}".rstrip())
    else:
        lines.append("No pixel spacing: size in pixels and % only (enter mm per pixel for mm²).")
    if result.slice_tumor_px is not None:
        counts = result.slice_tumor_px
        with_tumor = sum(c > 0 for c in counts)
        text = f"Volume: {result.tumor_voxels:,} voxels on {with_tumor} of {len(counts)} slices"
        if with_tumor:
            text += f" (largest on slice {int(np.argmax(counts))})"
        if result.volume_mm3 is not None:
            row, col = result.pixel_spacing_mm
            text += (f" = {result.volume_mm3:,.1f} mm³ ({result.volume_cm3:,.3f} cm³; voxel "
                     f"{_mm(row)} x {_mm(col)} x {_mm(scan.slice_thickness_mm)} mm)")
        else:
            text += "; no voxel size in the header, so no cm³"
        lines.append(text)
    lines += result.notes
    if result.slice_tumor_px is not None:
        with_tumor = sum(c > 0 for c in result.slice_tumor_px)
        verdict = (f"### Tumor found\nOn {with_tumor} of {scan.n_slices} slices." if result.tumor_found
                   else f"### No tumor found\nIn any of the {scan.n_slices} slices.")
    else:
        verdict = f"### Tumor found\nOn {where}." if result.tumor_found else f"### No tumor found\nOn {where}."
    return verdict, "\n".join(lines)


# -- the page ------------------------------------------------------------------------------
class ScanCache:
    """The last few decoded uploads, keyed by path, size and mtime; safe across worker threads."""

    def __init__(self, size: int = SCAN_CACHE_SIZE):
        self.size, self._items, self._lock = size, OrderedDict(), threading.Lock()

    def get(self, path) -> Scan:
        p = Path(path)
        if not p.is_file():
            return read_scan(p)  # raises the DataError that explains it
        st = p.stat()
        key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                return self._items[key]
        scan = read_scan(p)
        with self._lock:
            self._items[key] = scan
            while len(self._items) > self.size:
                self._items.popitem(last=False)
        return scan


_SCANS = ScanCache()


def _error(message: str) -> gr.Error:
    return gr.Error(message, print_exception=False)


def _read(file, cache: ScanCache) -> Scan:
    if file is None:
        raise _error("Upload an MRI first (an image, a DICOM file or a NIfTI volume).")
    try:
        return cache.get(file)
    except DataError as exc:
        raise _error(f"Cannot read this image: {exc.reason}.") from exc
    except MemoryError as exc:
        raise _error("Cannot read this image: it needs more memory than this server has.") from exc


def inspect_for_ui(file, autofilled: bool = False, cache: ScanCache = _SCANS):
    """On upload: describe the file, show the slice slider for volumes, fill in the header's spacing.
    Returns updates for (slice slider, slice index, spacing, info, autofilled flag, whole-volume box).

    The slider is for the page only; /analyze takes the slice as a plain number (kept in step with
    the slider in the browser), so the slider's per-session range never rejects an API call."""
    hidden_slider = gr.update(minimum=0, maximum=1, value=0, visible=False)
    if file is None:
        return (hidden_slider, -1, (gr.update(value=None) if autofilled else gr.update()), "", False,
                gr.update(visible=False))
    scan = _read(file, cache)
    info = [scan.describe()]
    if scan.is_volume:
        middle = scan.n_slices // 2
        slider = gr.update(minimum=0, maximum=scan.n_slices - 1, value=middle, visible=True,
                           label=f"Slice (0-{scan.n_slices - 1})")
    else:
        middle, slider = -1, hidden_slider
    if scan.pixel_spacing_mm:
        spacing_update, autofilled = gr.update(value=float(scan.pixel_spacing_mm[0])), True
        info.append("Pixel spacing read from the header.")
    elif autofilled:
        spacing_update, autofilled = gr.update(value=None), False
    else:
        spacing_update = gr.update()
    info += scan.notes
    return slider, middle, spacing_update, "  \n".join(info), autofilled, gr.update(visible=scan.is_volume, value=False)


def analyze_for_ui(pipeline: Pipeline | None, image_path, threshold: float, spacing: float | None,
                   slice_index: int | None = -1, whole_volume: bool = False, progress=None,
                   cache: ScanCache = _SCANS):
    """The /analyze endpoint: (overlay, mask, heatmap, class probabilities, verdict, size)."""
    if pipeline is None:
        raise _error("No model yet: train one (train/train_segmenter.py) or set TUMORLENS_SEG_MODEL.")
    scan = _read(image_path, cache)
    try:
        result = analyze_scan(pipeline, scan, threshold=threshold, spacing=spacing, slice_index=slice_index,
                              whole_volume=bool(whole_volume), progress=progress)
    except DataError as exc:
        raise _error(f"Cannot analyze this image: {exc.reason}.") from exc
    except MemoryError as exc:
        raise _error("Cannot analyze this image: it needs more memory than this server has.") from exc
    rgb, seg = result.analysis.image, result.segmentation
    if seg is None:
        overlay = mask = heat = rgb
    else:
        overlay, mask, heat = overlay_outline(rgb, seg.mask), mask_image(seg.mask), heatmap(rgb, seg.probability)
    verdict, size = report(result)
    return overlay, mask, heat, result.analysis.class_probabilities or None, verdict, size


def model_threshold(pipeline: Pipeline | None) -> float:
    """The slider starts at the segmenter's own threshold (tuned on validation data)."""
    return pipeline.segmenter.threshold if pipeline and pipeline.segmenter else DEFAULT_THRESHOLD


class SegmenterBank:
    """The segmentation models the page offers, by registry name. The default one's pipeline comes
    ready; the others load on first use and stay, so start-up stays fast. Each loads once under its
    own lock (the queue runs requests on several threads). The classifier serves only the models
    whose inputs it was trained for (SEGMENTERS[name].tumor_types)."""

    def __init__(self, pipeline: Pipeline | None, locations: dict[str, str] | None = None, *,
                 default: str = DEFAULT_SEGMENTER,
                 load_segmenter: Callable[[str], Segmenter] = Segmenter.from_pretrained):
        locations = dict(locations or {})
        unknown = sorted((set(locations) | {default}) - set(SEGMENTERS))
        if unknown:
            raise UnknownModelError(f"unknown segmenter {unknown[0]!r}: the registry has {', '.join(SEGMENTERS)}")
        self.default, self.locations, self._load = default, locations, load_segmenter
        # without a ready pipeline the app has no model at all: offer nothing else either
        self.names = [n for n in SEGMENTERS if n == default or (pipeline is not None and n in locations)]
        self.classifier = pipeline.classifier if pipeline is not None else None
        self._pipelines: dict[str, Pipeline | None] = {default: self._fit(default, pipeline)}
        self._locks = {name: threading.Lock() for name in self.names}

    def _fit(self, name: str, pipeline: Pipeline | None) -> Pipeline | None:
        """`pipeline` without the classifier where the model's inputs are not what it was trained on."""
        if pipeline is None or pipeline.classifier is None or pipeline.segmenter is None or self.tumor_types(name):
            return pipeline
        return Pipeline(pipeline.segmenter, None)

    @property
    def choices(self) -> list[tuple[str, str]]:
        """(label, name) pairs for the model menu."""
        return [(SEGMENTERS[name].label, name) for name in self.names]

    def tumor_types(self, name: str | None) -> bool:
        return SEGMENTERS[name or self.default].tumor_types

    def get(self, name: str | None = None) -> Pipeline | None:
        """The pipeline for `name` (None: the default), loading it on first use."""
        name = name or self.default
        if name not in self._locks:
            raise UnknownModelError(f"unknown segmentation model {name!r}: choose one of {', '.join(self.names)}")
        ready = self._pipelines.get(name)
        if ready is not None or name == self.default:
            return ready
        with self._locks[name]:
            if name not in self._pipelines:
                log.info("loading the %s segmenter from %s", name, self.locations[name])
                self._pipelines[name] = self._fit(name, Pipeline(self._load(self.locations[name]), self.classifier))
            return self._pipelines[name]


def pipeline_for_ui(bank: SegmenterBank, name: str | None) -> Pipeline | None:
    try:
        return bank.get(name)
    except UnknownModelError as exc:
        raise _error(f"{exc}.") from exc
    except Exception as exc:  # noqa: BLE001 - a missing or broken model must not stop the app
        log.error("cannot load the %s segmenter: %s: %s", name, exc.__class__.__name__, exc)
        raise _error(f"Cannot load the {SEGMENTERS[name].short} model ({exc.__class__.__name__}: {exc}); "
                     "the other models still work.") from exc


def analyze_with_model(bank: SegmenterBank, model: str | None, image_path, threshold: float | None,
                       spacing: float | None, slice_index: int | None = -1, whole_volume: bool = False,
                       progress=None, cache: ScanCache = _SCANS):
    """/analyze with the segmentation model named `model` (None: the default): the outputs of
    `analyze_for_ui`; for a model the classifier does not fit, no tumor type and a note why."""
    pipeline = pipeline_for_ui(bank, model)
    outputs = analyze_for_ui(pipeline, image_path, threshold, spacing, slice_index, whole_volume,
                             progress=progress, cache=cache)
    if bank.tumor_types(model):
        return outputs
    overlay, mask, heat, _, verdict, size = outputs
    return overlay, mask, heat, None, f"{verdict}\n\n*{NO_TUMOR_TYPE_NOTE}.*", size


def switch_model_for_ui(bank: SegmenterBank, model: str | None, file, spacing: float | None,
                        slice_index: int | None = -1, whole_volume: bool = False, progress=None,
                        cache: ScanCache = _SCANS):
    """On a new choice in the model menu: load the model (once), move the threshold slider to its
    own tuned threshold, retitle the tumor-type box, and analyze the loaded file again, if any.
    Returns updates for (threshold, overlay, mask, heatmap, tumor type, verdict, size)."""
    pipeline = pipeline_for_ui(bank, model)
    threshold = model_threshold(pipeline)
    title = TUMOR_TYPE_LABEL if bank.tumor_types(model) else NO_TUMOR_TYPE_NOTE
    if file is None:
        return gr.update(value=threshold), gr.skip(), gr.skip(), gr.skip(), gr.update(value=None, label=title), \
            gr.skip(), gr.skip()
    overlay, mask, heat, label, verdict, size = analyze_with_model(
        bank, model, file, threshold, spacing, slice_index, whole_volume, progress=progress, cache=cache)
    return gr.update(value=threshold), overlay, mask, heat, gr.update(value=label, label=title), verdict, size


def concurrency_limit() -> int:
    return max(1, int(os.environ.get(CONCURRENCY_ENV, DEFAULT_CONCURRENCY)))


def launch_options() -> dict:
    """Keyword arguments for `demo.launch`: the upload cap (Gradio refuses bigger files itself)."""
    return {"max_file_size": MAX_UPLOAD_BYTES}


def _example_rows(examples, bank: SegmenterBank) -> list[tuple[str, str]]:
    """(file, model name) rows: a plain path is the default model's; another model's examples are
    left out (with a log line) when the page does not offer that model."""
    rows = []
    for item in examples or []:
        path, model = (item, bank.default) if isinstance(item, (str, Path)) else item
        if model in bank.names:
            rows.append((str(path), model))
        else:
            log.warning("examples: %s is for the %s model, which this app does not offer; left out", path, model)
    return rows


def build_demo(pipeline: Pipeline | None, examples: list | None = None, *,
               segmenters: dict[str, str] | None = None, default_segmenter: str = DEFAULT_SEGMENTER,
               runtime: str = "auto", load_segmenter: Callable[[str], Segmenter] | None = None,
               concurrency: int | None = None, queue_size: int = QUEUE_SIZE) -> gr.Blocks:
    """`pipeline` serves `default_segmenter`; `segmenters` (registry name -> folder or Hub repo id;
    default: the shipped ones, `available_segmenters()`) adds the others to the model menu, loaded
    on first use with `load_segmenter` (default: `Segmenter.from_pretrained(..., runtime=runtime)`).
    `examples`: paths (for the default model) or (path, model name) pairs."""
    limit = concurrency or concurrency_limit()
    cache = ScanCache()
    if load_segmenter is None:
        def load_segmenter(location):  # a folder, a Hub repo id or a registry name
            return Segmenter.from_pretrained(resolve_model(location), runtime=runtime)
    bank = SegmenterBank(pipeline, available_segmenters() if segmenters is None else segmenters,
                         default=default_segmenter, load_segmenter=load_segmenter)
    example_rows = _example_rows(examples, bank)

    def inspect(file, autofilled):
        return inspect_for_ui(file, autofilled, cache=cache)

    # defaults make the API's optional parameters (the page always sends every value)
    def analyze(file, threshold=None, spacing=None, slice_index=-1, whole_volume=False, model=None,
                progress=gr.Progress()):
        return analyze_with_model(bank, model, file, threshold, spacing, slice_index, whole_volume,
                                  progress=progress, cache=cache)

    def switch_model(model, file, spacing, slice_index, whole_volume, progress=gr.Progress()):
        return switch_model_for_ui(bank, model, file, spacing, slice_index, whole_volume, progress=progress,
                                   cache=cache)

    # uploads and output images are removed from Gradio's cache after an hour
    with gr.Blocks(title="TumorLens", delete_cache=(1800, 3600)) as demo:
        gr.Markdown("# TumorLens: brain-tumor MRI segmentation and classification\n"
                    "Upload an MRI slice or scan; get the tumor outline, mask, confidence heatmap, tumor type "
                    "and size. *Research use only.*")
        if pipeline is None:
            gr.Markdown("**No model yet.** The app starts without weights; train or point "
                        "TUMORLENS_SEG_MODEL / TUMORLENS_CLS_MODEL at a model folder or Hub repo.")
        with gr.Row():
            with gr.Column():
                # hidden with one model; always there, so /analyze keeps one signature
                model = gr.Dropdown(bank.choices, value=bank.default, label="Segmentation model",
                                    visible=len(bank.names) > 1, elem_id="model",
                                    info="Tumor type comes only with the BRISC 2025 model, trained on T1c slices "
                                         "like its classifier.")
                # gr.File, not gr.Image: the upload reaches our reader, which explains bad files
                file = gr.File(label="MRI: image (PNG, JPEG, TIFF, BMP), DICOM (.dcm) or NIfTI (.nii, .nii.gz)",
                               type="filepath", file_types=list(SCAN_SUFFIXES) + [".gz"], elem_id="scan")
                info = gr.Markdown(elem_id="scan-info")
                slice_slider = gr.Slider(0, 1, value=0, step=1, precision=0, visible=False, label="Slice",
                                         info="Which slice of the volume to show", elem_id="slice")
                slice_index = gr.Number(-1, precision=0, visible=False, label="Slice index (-1: the middle one)",
                                        elem_id="slice-index")
                whole_volume = gr.Checkbox(False, visible=False, elem_id="whole-volume",
                                           label="Whole volume: segment every slice and report the tumor volume (cm³)")
                threshold = gr.Slider(0.05, 0.95, value=model_threshold(bank.get()), step=0.05,
                                      label="Mask threshold", elem_id="threshold")
                spacing = gr.Number(value=None, elem_id="spacing",
                                    label="Pixel spacing (mm per pixel; empty or 0 = pixels and % only; "
                                          "DICOM and NIfTI fill it from their header)")
                run = gr.Button("Analyze", variant="primary", elem_id="analyze")
                if example_rows:
                    sources = dict.fromkeys(SEGMENTERS[m].short for _, m in example_rows)
                    gr.Examples(examples=[list(row) for row in example_rows], inputs=[file, model],
                                visible_columns=[0], cache_examples=False,
                                example_labels=[example_label(p, m) for p, m in example_rows],
                                label=f"Examples ({' and '.join(sources)} test set{'s' if len(sources) > 1 else ''})")
            with gr.Column():
                verdict = gr.Markdown(elem_id="verdict")
                label = gr.Label(label=TUMOR_TYPE_LABEL if bank.tumor_types(None) else NO_TUMOR_TYPE_NOTE,
                                 num_top_classes=4, elem_id="label")
                size = gr.Textbox(label="Tumor size", lines=4, interactive=False, elem_id="size")
        with gr.Row():
            overlay = gr.Image(label="Tumor outline", type="numpy", format="png", interactive=False, elem_id="overlay")
            mask = gr.Image(label="Mask", type="numpy", format="png", interactive=False, elem_id="mask")
            heat = gr.Image(label="Confidence heatmap", type="numpy", format="png", interactive=False,
                            elem_id="heatmap")
        gr.Markdown(DISCLAIMER)
        autofilled = gr.State(False)
        slice_slider.change(None, inputs=slice_slider, outputs=slice_index, js="(v) => v")
        file.change(inspect, inputs=[file, autofilled],
                    outputs=[slice_slider, slice_index, spacing, info, autofilled, whole_volume],
                    api_name="inspect", concurrency_limit=4, concurrency_id="inspect", show_progress="hidden")
        run.click(analyze, inputs=[file, threshold, spacing, slice_index, whole_volume, model],
                  outputs=[overlay, mask, heat, label, verdict, size], api_name="analyze",
                  concurrency_limit=limit, concurrency_id="model")
        # the page's own (the menu or an example changed it): API clients pass `model` to /analyze
        model.change(switch_model, inputs=[model, file, spacing, slice_index, whole_volume],
                     outputs=[threshold, overlay, mask, heat, label, verdict, size], api_visibility="private",
                     concurrency_limit=limit, concurrency_id="model")
    demo.queue(max_size=queue_size, default_concurrency_limit=limit)
    return demo
