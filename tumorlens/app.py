"""The Gradio interface: upload an MRI (an image, a DICOM file or series, a NIfTI volume), get the tumor
outline, mask, confidence heatmap, tumor type, a verdict, the tumor's size and the exports to download.

`build_demo(pipeline, examples)` takes a loaded Pipeline (or None: the app then says there is no
model yet) and a list of example files (`tumorlens.examples.example_paths()`; `(file, model name)`
pairs pick a model too, as `lgg_example_paths()` do). With more than one segmenter available (each
segmenter folder under models/, `available_segmenters()`, or `segmenters=`), the page offers a
"Segmentation model" menu: the given pipeline serves the default one, the others load on first
use; each model's record (its folder's metadata.json) gives its label. Two named endpoints:

- `/analyze` (file, threshold, spacing, slice_index=-1, whole_volume=False, model=None) -> overlay,
  mask, heatmap, class probabilities, verdict (Markdown), size (text). `file`: one file, or the files
  of one DICOM series; `slice_index` -1 = the middle slice; `whole_volume` segments every slice of a
  volume and reports the tumor volume in cm³; `model` a model name (brisc2025, lgg; None = the
  default). Tumor types come only with models whose record says the classifier, trained on BRISC 2025
  T1c slices, fits their inputs.
- `/inspect` (file) -> what the file is (slices, spacing); in the page it also shows the slice
  slider and fills in the pixel spacing from a DICOM/NIfTI header.

After an analysis the page offers a download button per export, written by
`scan_outputs.write_outputs` (as `tumorlens predict` writes them) from the analysis it shows
(`scan_analysis.RecentResults`: no second model run), and says which exports the input cannot have.
Reading, slices, masks and sizes are `scan_analysis`'s; this module only turns them into the page and
its errors. The queue holds at most `QUEUE_SIZE` waiting requests and runs at most
$TUMORLENS_CONCURRENCY (default 2) model calls at once; each request is held to
`medical_io.APP_BUDGET` (2048 x 2048 pixels per slice, decoded bytes, voxels per file, checked from the
header before decoding; at most 64 slices per whole-volume analysis, the rest with `tumorlens predict`).
Error messages name the upload by its base name only, never a server folder."""

from __future__ import annotations

import logging
import os
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import gradio as gr
from gradio.data_classes import FileData, ListFiles
from pydantic import model_validator

from .errors import DataError, public_message
from .examples import example_label
from .inference import Pipeline, Segmenter
from .medical_io import APP_BUDGET, MAX_UPLOAD_BYTES, RequestBudget, Scan, cli_command, read_header
from .registry import DEFAULT_SEGMENTER, UnknownModelError, available_segmenters, resolve_model
from .scan_analysis import RecentResults, ScanResult, analyze_scan, file_stamps, load_scan, model_threshold, report
from .scan_outputs import FORMATS, Outputs, source_name, write_outputs
from .segmenter_bank import SegmenterBank  # noqa: F401 - re-exported: the page's models
from .visualize import heatmap, mask_image, overlay_outline

log = logging.getLogger("tumorlens.app")

DISCLAIMER = ("**Research use only.** TumorLens is not a medical device; its output is not a diagnosis "
              "and must not guide clinical decisions.")
CONCURRENCY_ENV = "TUMORLENS_CONCURRENCY"
DEFAULT_CONCURRENCY = 2
QUEUE_SIZE = 64            # waiting requests beyond this are turned away ("queue is full")
TUMOR_TYPE_LABEL = "Tumor type"
NO_TUMOR_TYPE_NOTE = "Tumor type: only for the BRISC model (T1c)"
DOWNLOADS = {"png": "Mask (PNG)", "nifti": "Mask (NIfTI)", "dicom-seg": "DICOM SEG",
             "secondary-capture": "Outline (DICOM Secondary Capture)", "report": "Report (HTML)"}
UPLOAD_LABEL = ("MRI: an image (PNG, JPEG, TIFF, BMP), a DICOM file, a DICOM series (its files together, or a "
                ".zip) or a NIfTI volume (.nii, .nii.gz)")


# -- the page ------------------------------------------------------------------------------
@dataclass(frozen=True)
class Request:
    """One analysis as the page or an API client asks for it: the file and the settings."""

    file: str | list[str] | None        # one upload, or the files of one multi-file upload (a DICOM series)
    threshold: float | None = None      # None: the model's own
    spacing: float | None = None        # mm per pixel; None or 0: the header's, if any
    slice_index: int | None = -1        # -1: the middle slice
    whole_volume: bool = False
    model: str | None = None            # a model name of the page's menu; None: the page's default


@dataclass(frozen=True)
class PageState:
    """What one browser session's page remembers between events (held in a gr.State)."""

    spacing_from_header: bool = False   # the spacing field holds what /inspect read from a header


class OneOrMoreFiles(ListFiles):
    """The upload's files: several (the slices of one DICOM series), or the one file an API client sends
    as `handle_file(path)`, taken as a list of one, so calls made before multi-file uploads still work."""

    @model_validator(mode="before")
    @classmethod
    def _listed(cls, value):
        return [value] if isinstance(value, (dict, FileData)) else value


def _error(message: str, *paths) -> gr.Error:
    """The message a user sees: server folders (the upload's temporary one and any other) cut out."""
    return gr.Error(public_message(message, *paths), print_exception=False)


def _upload_paths(file) -> list[str]:
    """The upload's files: one, or several (a multi-file upload); [] when none."""
    items = [] if file is None else list(file) if isinstance(file, (list, tuple)) else [file]
    return [str(getattr(item, "path", item)) for item in items]


def _read(file, budget: RequestBudget = APP_BUDGET) -> Scan:
    paths = _upload_paths(file)
    if not paths:
        raise _error("Upload an MRI first (an image, a DICOM file or series, or a NIfTI volume).")
    try:
        return load_scan(paths, budget)
    except DataError as exc:
        raise _error(f"Cannot read this image: {exc.reason}.", *paths) from exc
    except MemoryError as exc:
        raise _error("Cannot read this image: it needs more memory than this server has.") from exc


def inspect_for_ui(file, state: PageState | None = None):
    """On upload: describe the file, show the slice slider for volumes, fill in the header's spacing.
    Returns updates for (slice slider, slice index, spacing, info, page state, whole-volume box).

    The slider is for the page only; /analyze takes the slice as a plain number (kept in step with
    the slider in the browser), so the slider's per-session range never rejects an API call."""
    state = state or PageState()
    hidden_slider = gr.update(minimum=0, maximum=1, value=0, visible=False)
    paths = _upload_paths(file)
    if not paths:
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
                    f"For the whole volume run `{cli_command(paths[0] if len(paths) == 1 else 'SERIES_FOLDER')}`.")
    return slider, middle, spacing_update, "  \n".join(info), state, gr.update(visible=scan.is_volume, value=False)


def analyze_result(pipeline: Pipeline | None, request: Request, progress=None) -> ScanResult:
    """`request` analysed with `pipeline`; every failure a message for the page."""
    if pipeline is None:
        raise _error("No model yet: train one (train/train_segmenter.py) or set TUMORLENS_SEG_MODEL.")
    paths = _upload_paths(request.file)
    if request.whole_volume and len(paths) == 1 and Path(paths[0]).is_file():
        # refused from the header, before the volume is decoded
        try:
            header = read_header(paths[0])
        except DataError:  # an unreadable file: _read below says why
            header = None
        if header is not None and header.slices > 1:
            try:
                APP_BUDGET.check_whole_volume(header.slices, paths[0])
            except DataError as exc:
                raise _error(f"Cannot analyze this image: {exc.reason}.", *paths) from exc
    scan = _read(request.file)
    try:
        return analyze_scan(pipeline, scan, threshold=request.threshold, spacing=request.spacing,
                            slice_index=request.slice_index, whole_volume=bool(request.whole_volume),
                            progress=progress, budget=APP_BUDGET)
    except DataError as exc:
        raise _error(f"Cannot analyze this image: {exc.reason}.", *paths) from exc
    except MemoryError as exc:
        raise _error("Cannot analyze this image: it needs more memory than this server has.") from exc


def page_outputs(result: ScanResult):
    """(overlay, mask, heatmap, class probabilities, verdict, size) of `result`, as the page shows them."""
    rgb, seg = result.analysis.image, result.segmentation
    if seg is None:
        overlay = mask = heat = rgb
    else:
        overlay, mask, heat = overlay_outline(rgb, seg.mask), mask_image(seg.mask), heatmap(rgb, seg.probability)
    verdict, size = report(result)
    return overlay, mask, heat, result.analysis.class_probabilities or None, verdict, size


def analyze_for_ui(pipeline: Pipeline | None, request: Request, progress=None):
    """`request` with `pipeline`: (overlay, mask, heatmap, class probabilities, verdict, size)."""
    return page_outputs(analyze_result(pipeline, request, progress))


def result_key(bank: SegmenterBank, request: Request) -> tuple | None:
    """What makes two requests the same analysis: the files (path, size, modification time), the settings
    and the model; None when a file is gone."""
    stamps = file_stamps(_upload_paths(request.file))
    if stamps is None:
        return None
    return (stamps, request.threshold, request.spacing, request.slice_index, bool(request.whole_volume),
            request.model or bank.default)


def pipeline_for_ui(bank: SegmenterBank, name: str | None) -> Pipeline | None:
    try:
        return bank.get(name)
    except UnknownModelError as exc:
        raise _error(f"{exc}.") from exc
    except Exception as exc:  # noqa: BLE001 - a missing or broken model must not stop the app
        log.error("cannot load the %s segmenter: %s: %s", name, exc.__class__.__name__, exc)
        raise _error(f"Cannot load the {bank.record(name).short} model ({exc.__class__.__name__}: {exc}); "
                     "the other models still work.") from exc


def analyze_with_model(bank: SegmenterBank, request: Request, progress=None, recent: RecentResults | None = None):
    """/analyze with the segmentation model `request.model` names (None: the default): the outputs
    of `analyze_for_ui`; for a model the classifier does not fit, no tumor type and a note why. The
    result is kept in `recent` (if given) for the page's downloads."""
    result = analyze_result(pipeline_for_ui(bank, request.model), request, progress)
    if recent is not None:
        recent.put(result_key(bank, request), result)
    outputs = page_outputs(result)
    if bank.tumor_types(request.model):
        return outputs
    overlay, mask, heat, _, verdict, size = outputs
    return overlay, mask, heat, None, f"{verdict}\n\n*{NO_TUMOR_TYPE_NOTE}.*", size


def switch_model_for_ui(bank: SegmenterBank, request: Request, progress=None, recent: RecentResults | None = None):
    """On a new choice in the model menu (`request.model`): load the model (once), move the threshold
    slider to its own tuned threshold, retitle the tumor-type box, and analyze the loaded file again,
    if any. Returns updates for (threshold, overlay, mask, heatmap, tumor type, verdict, size)."""
    threshold = model_threshold(pipeline_for_ui(bank, request.model))
    title = TUMOR_TYPE_LABEL if bank.tumor_types(request.model) else NO_TUMOR_TYPE_NOTE
    if not _upload_paths(request.file):
        return gr.update(value=threshold), gr.skip(), gr.skip(), gr.skip(), gr.update(value=None, label=title), \
            gr.skip(), gr.skip()
    overlay, mask, heat, label, verdict, size = analyze_with_model(bank, replace(request, threshold=threshold),
                                                                   progress, recent)
    return gr.update(value=threshold), overlay, mask, heat, gr.update(value=label, label=title), verdict, size


def exports_for_ui(bank: SegmenterBank, request: Request, out: Path, recent: RecentResults | None = None,
                   progress=None) -> Outputs:
    """Every export (`scan_outputs.FORMATS`) of `request`'s analysis, written into folder `out` by
    `scan_outputs.write_outputs` (as `tumorlens predict` writes them): the analysis the page shows when
    `recent` holds it, else a fresh one. The report names the models with their test scores."""
    recent = recent if recent is not None else RecentResults(0)
    key = result_key(bank, request)
    entry = recent.get(key) or recent.put(key, analyze_result(pipeline_for_ui(bank, request.model), request, progress))
    result, created = entry
    paths = _upload_paths(request.file)
    return write_outputs(result, out, formats=FORMATS, stem=Path(paths[0]).name if len(paths) == 1 else "series",
                         models=bank.summaries(request.model), name=source_name(result.scan), created=created)


def downloads_note(outputs: Outputs | None) -> str:
    """What the page says under its download buttons: the exports it could not make, and why."""
    if outputs is None or not outputs.skipped:
        return ""
    return "Not for this input:  \n" + "  \n".join(f"- {DOWNLOADS[fmt]}: {why}." for fmt, why in outputs.skipped.items())


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
               concurrency: int | None = None, queue_size: int = QUEUE_SIZE,
               model_locations: tuple[str | None, str | None] | None = None) -> gr.Blocks:
    """`pipeline` serves `default_segmenter`; `segmenters` (name -> folder or Hub repo id;
    default: the shipped ones, `available_segmenters()`) adds the others to the model menu, loaded
    on first use with `load_segmenter` (default: `Segmenter.from_pretrained(..., runtime=runtime)`).
    `examples`: paths (for the default model) or (path, model name) pairs. `model_locations`: where
    `pipeline`'s (segmenter, classifier) came from, so the report gives their versions and test scores."""
    limit = concurrency or concurrency_limit()
    if load_segmenter is None:
        def load_segmenter(location):  # a folder, a Hub repo id or an available segmenter's name
            return Segmenter.from_pretrained(resolve_model(location), runtime=runtime)
    bank = SegmenterBank(pipeline, available_segmenters() if segmenters is None else segmenters,
                         default=default_segmenter, load_segmenter=load_segmenter, pipeline_locations=model_locations)
    example_rows = _example_rows(examples, bank)
    recent = RecentResults()

    # defaults make the API's optional parameters (the page always sends every value)
    def analyze(file, threshold=None, spacing=None, slice_index=-1, whole_volume=False, model=None,
                progress=gr.Progress()):
        request = Request(file, threshold, spacing, slice_index, whole_volume, model)
        return analyze_with_model(bank, request, progress, recent)

    def switch_model(model, file, spacing, slice_index, whole_volume, progress=gr.Progress()):
        request = Request(file, None, spacing, slice_index, whole_volume, model)
        return switch_model_for_ui(bank, request, progress, recent)

    def offer_downloads(file, threshold, spacing, slice_index, whole_volume, model, progress=gr.Progress()):
        """The download buttons of the analysis just shown; the exports, written into a private folder,
        are handed to Gradio's cache (removed with it) and the folder removed."""
        if not _upload_paths(file):
            return hide_downloads()
        with tempfile.TemporaryDirectory(prefix="tumorlens-exports-") as folder:
            outputs = exports_for_ui(bank, Request(file, threshold, spacing, slice_index, whole_volume, model),
                                     Path(folder), recent, progress)
            updates = []
            for fmt, button in buttons.items():
                path = outputs.download(fmt)
                updates.append(gr.update(value=button.move_resource_to_block_cache(path), visible=True) if path
                               else gr.update(value=None, visible=False))
        return *updates, downloads_note(outputs)

    def hide_downloads():
        return *(gr.update(value=None, visible=False) for _ in buttons), ""

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
                # gr.File, not gr.Image: the upload reaches our reader, which explains bad files (no
                # file_types: DICOM slice files often have no suffix). Several files: one DICOM series.
                file = gr.File(label=UPLOAD_LABEL, type="filepath", file_count="multiple", elem_id="scan")
                file.data_model = OneOrMoreFiles
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
                    # a list of one file: what the multi-file box holds, so the page sends it back as a list
                    gr.Examples(examples=[[[path], name] for path, name in example_rows], inputs=[file, model],
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
                    buttons = {fmt: gr.DownloadButton(text, visible=False, size="sm", elem_id=f"download-{fmt}")
                               for fmt, text in DOWNLOADS.items()}
                downloads = gr.Markdown(elem_id="downloads-note")
        with gr.Row():
            overlay = gr.Image(label="Tumor outline", type="numpy", format="png", interactive=False, elem_id="overlay")
            mask = gr.Image(label="Mask", type="numpy", format="png", interactive=False, elem_id="mask")
            heat = gr.Image(label="Confidence heatmap", type="numpy", format="png", interactive=False,
                            elem_id="heatmap")
        gr.Markdown(DISCLAIMER)
        state = gr.State(PageState())
        request_inputs = [file, threshold, spacing, slice_index, whole_volume, model]
        download_outputs = [*buttons.values(), downloads]
        slice_slider.change(None, inputs=slice_slider, outputs=slice_index, js="(v) => v")
        file.change(inspect_for_ui, inputs=[file, state],
                    outputs=[slice_slider, slice_index, spacing, info, state, whole_volume],
                    api_name="inspect", concurrency_limit=4, concurrency_id="inspect", show_progress="hidden")
        # the page's own: a new upload or a new analysis first takes the old downloads away
        for trigger in (file.change, run.click, model.change):
            trigger(hide_downloads, outputs=download_outputs, api_visibility="private", concurrency_limit=None,
                    show_progress="hidden")
        run.click(analyze, inputs=request_inputs, outputs=[overlay, mask, heat, label, verdict, size],
                  api_name="analyze", concurrency_limit=limit, concurrency_id="model").success(
            offer_downloads, inputs=request_inputs, outputs=download_outputs, api_visibility="private",
            concurrency_limit=limit, concurrency_id="model", show_progress="minimal")
        # the page's own (the menu or an example changed it): API clients pass `model` to /analyze
        model.change(switch_model, inputs=[model, file, spacing, slice_index, whole_volume],
                     outputs=[threshold, overlay, mask, heat, label, verdict, size], api_visibility="private",
                     concurrency_limit=limit, concurrency_id="model").success(
            offer_downloads, inputs=request_inputs, outputs=download_outputs, api_visibility="private",
            concurrency_limit=limit, concurrency_id="model", show_progress="minimal")
    demo.queue(max_size=queue_size, default_concurrency_limit=limit)
    return demo
