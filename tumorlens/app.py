"""The Gradio interface: upload an MRI (image, DICOM or NIfTI), get the tumor outline, mask,
confidence heatmap, tumor type, a verdict and the tumor's size.

`build_demo(pipeline, examples)` takes a loaded Pipeline (or None: the app then says there is no
model yet) and a list of example files (`tumorlens.examples.example_paths()`; `(file, model name)`
pairs pick a model too, as `lgg_example_paths()` do). With more than one segmenter available (each
segmenter folder under models/, `available_segmenters()`, or `segmenters=`), the page offers a
"Segmentation model" menu: the given pipeline serves the default one, the others load on first
use; each model's record (its folder's metadata.json) gives its label. Two named endpoints:

- `/analyze` (file, threshold, spacing, slice_index=-1, whole_volume=False, model=None) -> overlay,
  mask, heatmap, class probabilities, verdict (Markdown), size (text). `slice_index` -1 = the middle
  slice; `whole_volume` segments every slice of a volume and reports the tumor volume in cm³;
  `model` a model name (brisc2025, lgg; None = the default). Tumor types come only with models
  whose record says the classifier, trained on BRISC 2025 T1c slices, fits their inputs.
- `/inspect` (file) -> what the file is (slices, spacing); in the page it also shows the slice
  slider and fills in the pixel spacing from a DICOM/NIfTI header.

Uploads reach `tumorlens.medical_io.read_scan` as files, so a bad file gets our own explanation;
reading, slices, masks and sizes are `tumorlens.scan_analysis`'s (the batch CLI uses it too), and
this module only turns them into the page and its errors.
The queue holds at most `QUEUE_SIZE` waiting requests and runs at most $TUMORLENS_CONCURRENCY
(default 2) model calls at once, so memory stays bounded however many clients come; each request is
held to `medical_io.APP_BUDGET` (2048 x 2048 pixels per slice, decoded bytes, voxels per file, checked from the
header before decoding; at most 64 slices per whole-volume analysis, the rest with
`tumorlens predict`). Error messages name the upload by its base name only, never a server folder."""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import gradio as gr

from .errors import DataError, TumorLensError, public_message
from .examples import example_label
from .inference import Pipeline, Segmenter
from .model_record import ModelRecord, read_record, renamed, unknown_record
from .registry import DEFAULT_SEGMENTER, UnknownModelError, available_segmenters, resolve_model
from .medical_io import (APP_BUDGET, MAX_UPLOAD_BYTES, SCAN_SUFFIXES, RequestBudget, Scan, cli_command,
                         read_header)
from .scan_analysis import analyze_scan, load_scan, model_threshold, report
from .visualize import heatmap, mask_image, overlay_outline

log = logging.getLogger("tumorlens.app")

DISCLAIMER = ("**Research use only.** TumorLens is not a medical device; its output is not a diagnosis "
              "and must not guide clinical decisions.")
CONCURRENCY_ENV = "TUMORLENS_CONCURRENCY"
DEFAULT_CONCURRENCY = 2
QUEUE_SIZE = 64            # waiting requests beyond this are turned away ("queue is full")
TUMOR_TYPE_LABEL = "Tumor type"
NO_TUMOR_TYPE_NOTE = "Tumor type: only for the BRISC model (T1c)"


# -- the page ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Request:
    """One analysis as the page or an API client asks for it: the file and the settings."""

    file: str | None
    threshold: float | None = None      # None: the model's own
    spacing: float | None = None        # mm per pixel; None or 0: the header's, if any
    slice_index: int | None = -1        # -1: the middle slice
    whole_volume: bool = False
    model: str | None = None            # a model name of the page's menu; None: the page's default


@dataclass(frozen=True)
class PageState:
    """What one browser session's page remembers between events (held in a gr.State)."""

    spacing_from_header: bool = False   # the spacing field holds what /inspect read from a header


def _error(message: str, *paths) -> gr.Error:
    """The message a user sees: server folders (the upload's temporary one and any other) cut out."""
    return gr.Error(public_message(message, *paths), print_exception=False)


def _upload_path(file) -> str | None:
    return None if file is None else str(getattr(file, "path", file))


def _read(file, budget: RequestBudget = APP_BUDGET) -> Scan:
    if file is None:
        raise _error("Upload an MRI first (an image, a DICOM file or a NIfTI volume).")
    try:
        return load_scan(file, budget)
    except DataError as exc:
        raise _error(f"Cannot read this image: {exc.reason}.", _upload_path(file)) from exc
    except MemoryError as exc:
        raise _error("Cannot read this image: it needs more memory than this server has.") from exc


def inspect_for_ui(file, state: PageState | None = None):
    """On upload: describe the file, show the slice slider for volumes, fill in the header's spacing.
    Returns updates for (slice slider, slice index, spacing, info, page state, whole-volume box).

    The slider is for the page only; /analyze takes the slice as a plain number (kept in step with
    the slider in the browser), so the slider's per-session range never rejects an API call."""
    state = state or PageState()
    hidden_slider = gr.update(minimum=0, maximum=1, value=0, visible=False)
    if file is None:
        return (hidden_slider, -1, (gr.update(value=None) if state.spacing_from_header else gr.update()), "",
                PageState(), gr.update(visible=False))
    scan = _read(file)
    info = [scan.describe()]
    if scan.is_volume:
        middle = scan.n_slices // 2
        slider = gr.update(minimum=0, maximum=scan.n_slices - 1, value=middle, visible=True,
                           label=f"Slice (0-{scan.n_slices - 1})")
    else:
        middle, slider = -1, hidden_slider
    if scan.pixel_spacing_mm:
        spacing_update, state = gr.update(value=float(scan.pixel_spacing_mm[0])), PageState(spacing_from_header=True)
        info.append("Pixel spacing read from the header.")
    elif state.spacing_from_header:
        spacing_update, state = gr.update(value=None), PageState()
    else:
        spacing_update = gr.update()
    info += scan.notes
    limit = APP_BUDGET.max_volume_slices
    if limit is not None and scan.n_slices > limit:
        info.append(f"Whole-volume mode analyzes at most {limit} slices per request here; single slices all work. "
                    f"For the whole volume run `{cli_command(_upload_path(file))}`.")
    return slider, middle, spacing_update, "  \n".join(info), state, gr.update(visible=scan.is_volume, value=False)


def analyze_for_ui(pipeline: Pipeline | None, request: Request, progress=None):
    """`request` with `pipeline`: (overlay, mask, heatmap, class probabilities, verdict, size)."""
    if pipeline is None:
        raise _error("No model yet: train one (train/train_segmenter.py) or set TUMORLENS_SEG_MODEL.")
    if request.whole_volume and request.file is not None:
        # refused from the header, before the volume is decoded
        try:
            header = read_header(_upload_path(request.file)) if Path(_upload_path(request.file)).is_file() else None
        except DataError:  # an unreadable file: _read below says why
            header = None
        if header is not None and header.slices > 1:
            try:
                APP_BUDGET.check_whole_volume(header.slices, _upload_path(request.file))
            except DataError as exc:
                raise _error(f"Cannot analyze this image: {exc.reason}.", _upload_path(request.file)) from exc
    scan = _read(request.file)
    try:
        result = analyze_scan(pipeline, scan, threshold=request.threshold, spacing=request.spacing,
                              slice_index=request.slice_index, whole_volume=bool(request.whole_volume),
                              progress=progress, budget=APP_BUDGET)
    except DataError as exc:
        raise _error(f"Cannot analyze this image: {exc.reason}.", _upload_path(request.file)) from exc
    except MemoryError as exc:
        raise _error("Cannot analyze this image: it needs more memory than this server has.") from exc
    rgb, seg = result.analysis.image, result.segmentation
    if seg is None:
        overlay = mask = heat = rgb
    else:
        overlay, mask, heat = overlay_outline(rgb, seg.mask), mask_image(seg.mask), heatmap(rgb, seg.probability)
    verdict, size = report(result)
    return overlay, mask, heat, result.analysis.class_probabilities or None, verdict, size


class SegmenterBank:
    """The segmentation models the page offers, by name (the keys of `locations`, plus `default`).
    Each model's record (its folder's metadata.json, tumorlens.model_record) gives its menu label,
    how notes name it and whether the tumor-type classifier applies to its inputs. The default one's
    pipeline comes ready; the others load on first use and stay, so start-up stays fast. Each loads
    once under its own lock (the queue runs requests on several threads)."""

    def __init__(self, pipeline: Pipeline | None, locations: dict[str, str] | None = None, *,
                 default: str = DEFAULT_SEGMENTER,
                 load_segmenter: Callable[[str], Segmenter] = Segmenter.from_pretrained):
        self.default, self.locations, self._load = default, dict(locations or {}), load_segmenter
        # without a ready pipeline the app has no model at all: offer nothing else either
        others = [n for n in self.locations if n != default] if pipeline is not None else []
        self.names = [default, *others]
        self.records = {name: self._read_record(name, pipeline) for name in self.names}
        self.classifier = pipeline.classifier if pipeline is not None else None
        self._pipelines: dict[str, Pipeline | None] = {default: self._fit(default, pipeline)}
        self._locks = {name: threading.Lock() for name in self.names}

    def _read_record(self, name: str, pipeline: Pipeline | None) -> ModelRecord:
        """The ready segmenter's own record for the default, else the one its location's folder or
        Hub repo states (a few small JSON files); a model that states nothing gets the fallback."""
        ready = pipeline.segmenter if pipeline is not None and name == self.default else None
        if getattr(ready, "record", None) is not None:
            return renamed(ready.record, name)
        location = self.locations.get(name) or available_segmenters().get(name)
        if location is not None:
            try:
                return renamed(read_record(resolve_model(location)), name)
            except (TumorLensError, ValueError, OSError) as exc:  # unreadable: the model may still load
                log.warning("the %s segmenter's record cannot be read (%s); its inputs count as unknown", name, exc)
        if name == self.default and pipeline is not None and pipeline.segmenter is None:
            # a classifier alone: it runs on what the user chose to give it
            return replace(unknown_record(name), tumor_types=pipeline.classifier is not None)
        return unknown_record(name)

    def _fit(self, name: str, pipeline: Pipeline | None) -> Pipeline | None:
        """`pipeline` without the classifier where the model's inputs are not what it was trained on."""
        if pipeline is None or pipeline.classifier is None or pipeline.segmenter is None or self.tumor_types(name):
            return pipeline
        return Pipeline(pipeline.segmenter, None)

    def record(self, name: str | None = None) -> ModelRecord:
        """The record of model `name` (None: the default)."""
        name = name or self.default
        if name not in self.records:
            raise UnknownModelError(f"unknown segmentation model {name!r}: choose one of {', '.join(self.names)}")
        return self.records[name]

    @property
    def choices(self) -> list[tuple[str, str]]:
        """(label, name) pairs for the model menu; a label an earlier model has (a copied folder) says
        which model it is."""
        pairs, seen = [], set()
        for name in self.names:
            title = self.records[name].title
            pairs.append((f"{title} ({name})" if title in seen else title, name))
            seen.add(title)
        return pairs

    def tumor_types(self, name: str | None) -> bool:
        return self.record(name).tumor_types

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
        raise _error(f"Cannot load the {bank.record(name).short} model ({exc.__class__.__name__}: {exc}); "
                     "the other models still work.") from exc


def analyze_with_model(bank: SegmenterBank, request: Request, progress=None):
    """/analyze with the segmentation model `request.model` names (None: the default): the outputs
    of `analyze_for_ui`; for a model the classifier does not fit, no tumor type and a note why."""
    outputs = analyze_for_ui(pipeline_for_ui(bank, request.model), request, progress)
    if bank.tumor_types(request.model):
        return outputs
    overlay, mask, heat, _, verdict, size = outputs
    return overlay, mask, heat, None, f"{verdict}\n\n*{NO_TUMOR_TYPE_NOTE}.*", size


def switch_model_for_ui(bank: SegmenterBank, request: Request, progress=None):
    """On a new choice in the model menu (`request.model`): load the model (once), move the threshold
    slider to its own tuned threshold, retitle the tumor-type box, and analyze the loaded file again,
    if any. Returns updates for (threshold, overlay, mask, heatmap, tumor type, verdict, size)."""
    threshold = model_threshold(pipeline_for_ui(bank, request.model))
    title = TUMOR_TYPE_LABEL if bank.tumor_types(request.model) else NO_TUMOR_TYPE_NOTE
    if request.file is None:
        return gr.update(value=threshold), gr.skip(), gr.skip(), gr.skip(), gr.update(value=None, label=title), \
            gr.skip(), gr.skip()
    overlay, mask, heat, label, verdict, size = analyze_with_model(bank, replace(request, threshold=threshold), progress)
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
    """`pipeline` serves `default_segmenter`; `segmenters` (name -> folder or Hub repo id;
    default: the shipped ones, `available_segmenters()`) adds the others to the model menu, loaded
    on first use with `load_segmenter` (default: `Segmenter.from_pretrained(..., runtime=runtime)`).
    `examples`: paths (for the default model) or (path, model name) pairs."""
    limit = concurrency or concurrency_limit()
    if load_segmenter is None:
        def load_segmenter(location):  # a folder, a Hub repo id or an available segmenter's name
            return Segmenter.from_pretrained(resolve_model(location), runtime=runtime)
    bank = SegmenterBank(pipeline, available_segmenters() if segmenters is None else segmenters,
                         default=default_segmenter, load_segmenter=load_segmenter)
    example_rows = _example_rows(examples, bank)

    # defaults make the API's optional parameters (the page always sends every value)
    def analyze(file, threshold=None, spacing=None, slice_index=-1, whole_volume=False, model=None,
                progress=gr.Progress()):
        return analyze_with_model(bank, Request(file, threshold, spacing, slice_index, whole_volume, model), progress)

    def switch_model(model, file, spacing, slice_index, whole_volume, progress=gr.Progress()):
        return switch_model_for_ui(bank, Request(file, None, spacing, slice_index, whole_volume, model), progress)

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
                    sources = dict.fromkeys(bank.record(m).short for _, m in example_rows)
                    gr.Examples(examples=[list(row) for row in example_rows], inputs=[file, model],
                                visible_columns=[0], cache_examples=False,
                                example_labels=[example_label(p, m, short=bank.record(m).short)
                                                for p, m in example_rows],
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
        state = gr.State(PageState())
        slice_slider.change(None, inputs=slice_slider, outputs=slice_index, js="(v) => v")
        file.change(inspect_for_ui, inputs=[file, state],
                    outputs=[slice_slider, slice_index, spacing, info, state, whole_volume],
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
