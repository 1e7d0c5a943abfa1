"""The Gradio interface: upload an MRI (an image, a DICOM file or series, a NIfTI volume), get the tumor
outline, mask, confidence heatmap, tumor type, a verdict, the tumor's size and the exports to download.

`build_demo(pipeline, examples)` takes a loaded Pipeline (or None: the app then says there is no
model yet) and a list of example files (`tumorlens.examples.example_paths()`; `(file, model name)`
pairs pick a model too, as `lgg_example_paths()` do). With more than one segmenter available (each
segmenter folder under models/, `available_segmenters()`, or `segmenters=`), the page offers a
"Segmentation model" menu: the given pipeline serves the default one, the others load on first
use; each model's record (its folder's metadata.json) gives its label. Three named endpoints:

- `/analyze` (file, threshold, spacing, slice_index=-1, whole_volume=False, model=None,
  analyze_anyway=False) -> overlay, mask, heatmap, uncertainty (where the slice and its mirror image
  disagree), class probabilities, verdict (Markdown), size (text). `file`: one file, or the files of one
  DICOM series; `slice_index` -1 = the middle slice; `whole_volume` segments every slice of a volume and
  reports the tumor volume in cm³; `model` a model name (brisc2025, lgg; None = the default). With a
  scope gate (`build_demo(scope_gate=)`), an upload that does not look like a brain MRI slice is refused
  (the verdict says so, with its score; no maps, no tumor type) unless `analyze_anyway`. Tumor types
  come only with models whose record says the classifier, trained on BRISC 2025 T1c slices, fits their
  inputs.
- `/explain` (the same inputs) -> the Grad-CAM map of the tumor-type decision (None without one); the
  page asks for it after the answer, from the analysis it keeps, so the verdict does not wait for it.
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
from pathlib import Path
from typing import Callable

import gradio as gr
from gradio.data_classes import FileData, ListFiles
from pydantic import model_validator

# re-exported: the page's actions and models, as tests and the benchmarks call them
from .app_actions import (DOWNLOADS, NO_TUMOR_TYPE_NOTE, TUMOR_TYPE_LABEL, PageState, Request,  # noqa: F401
                          analyze_for_ui, analyze_result, analyze_with_model, downloads_note, explain_for_ui,
                          exports_for_ui, inspect_for_ui, page_outputs, pipeline_for_ui, result_key,
                          switch_model_for_ui, upload_paths)
from .app_gallery import example_gallery
from .app_results import results_tab
from .examples import example_label
from .hardware import worker_threads
from .inference import Pipeline, Segmenter
from .medical_io import MAX_UPLOAD_BYTES
from .registry import DEFAULT_SEGMENTER, available_segmenters, resolve_model
from .scan_analysis import RecentResults, model_threshold  # noqa: F401 - RecentResults re-exported
from .scope_gate import ScopeGate
from .segmenter_bank import SegmenterBank  # noqa: F401 - re-exported: the page's models

log = logging.getLogger("tumorlens.app")

DISCLAIMER = ("**Research use only.** TumorLens is not a medical device; its output is not a diagnosis "
              "and must not guide clinical decisions.")
CONCURRENCY_ENV = "TUMORLENS_CONCURRENCY"
DEFAULT_CONCURRENCY = 2
QUEUE_SIZE = 64            # waiting requests beyond this are turned away ("queue is full")
# the colour panels as JPEG: PNG encoding was ~30 ms of a ~230 ms request per panel, JPEG ~2 ms
# (python -m tumorlens.bench.app_load profile); the mask stays a lossless PNG, it is data
PANEL_FORMATS = {"overlay": "jpeg", "mask": "png", "heatmap": "jpeg", "uncertainty": "jpeg", "activation": "jpeg"}
UPLOAD_LABEL = ("MRI: an image (PNG, JPEG, TIFF, BMP), a DICOM file, a DICOM series (its files together, or a "
                ".zip) or a NIfTI volume (.nii, .nii.gz)")


class OneOrMoreFiles(ListFiles):
    """The upload's files: several (the slices of one DICOM series), or the one file an API client sends
    as `handle_file(path)`, taken as a list of one, so calls made before multi-file uploads still work."""

    @model_validator(mode="before")
    @classmethod
    def _listed(cls, value):
        return [value] if isinstance(value, (dict, FileData)) else value



def concurrency_limit() -> int:
    return max(1, int(os.environ.get(CONCURRENCY_ENV, DEFAULT_CONCURRENCY)))


def threads_per_call(concurrency: int | None = None) -> int:
    """Torch threads per model call: $OMP_NUM_THREADS, else the usable cores shared out among the
    `concurrency` (default `concurrency_limit()`) calls that run at once, so they do not oversubscribe."""
    return max(1, int(os.environ.get("OMP_NUM_THREADS") or 0) or worker_threads(concurrency or concurrency_limit()))


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


def _panel(name: str, label: str) -> gr.Image:
    """One of the page's output images (elem_id `name`), written in its PANEL_FORMATS format."""
    return gr.Image(label=label, type="numpy", format=PANEL_FORMATS[name], interactive=False, elem_id=name)


def build_demo(pipeline: Pipeline | None, examples: list | None = None, *,
               segmenters: dict[str, str] | None = None, default_segmenter: str = DEFAULT_SEGMENTER,
               runtime: str = "auto", load_segmenter: Callable[[str], Segmenter] | None = None,
               concurrency: int | None = None, queue_size: int = QUEUE_SIZE,
               model_locations: tuple[str | None, str | None] | None = None,
               scope_gate: ScopeGate | None = None, data_home: str | Path | None = None) -> gr.Blocks:
    """`pipeline` serves `default_segmenter`; `segmenters` (name -> folder or Hub repo id;
    default: the shipped ones, `available_segmenters()`) adds the others to the model menu, loaded
    on first use with `load_segmenter` (default: `Segmenter.from_pretrained(..., runtime=runtime)`).
    `examples`: paths (for the default model) or (path, model name) pairs. `model_locations`: where
    `pipeline`'s (segmenter, classifier) came from, so the report gives their versions and test scores.
    `scope_gate` (tumorlens.scope_gate.load_gate()): refuse uploads that do not look like a brain MRI slice
    (the page's "Analyze anyway" box overrides it); None: no check. `data_home`: the folder holding the
    datasets, where the Results tab's slice pager reads the test slices (None: $TUMORLENS_DATA, else
    ../shared/data)."""
    limit = concurrency or concurrency_limit()
    if load_segmenter is None:
        def load_segmenter(location):  # a folder, a Hub repo id or an available segmenter's name
            return Segmenter.from_pretrained(resolve_model(location), runtime=runtime)
    bank = SegmenterBank(pipeline, available_segmenters() if segmenters is None else segmenters,
                         default=default_segmenter, load_segmenter=load_segmenter, pipeline_locations=model_locations,
                         scope_gate=scope_gate)
    example_rows = _example_rows(examples, bank)
    recent = RecentResults()

    # defaults make the API's optional parameters (the page always sends every value)
    def analyze(file, threshold=None, spacing=None, slice_index=-1, whole_volume=False, model=None,
                analyze_anyway=False, progress=gr.Progress()):
        request = Request(file, threshold, spacing, slice_index, whole_volume, model, analyze_anyway)
        return analyze_with_model(bank, request, progress, recent)

    def explain(file, threshold=None, spacing=None, slice_index=-1, whole_volume=False, model=None,
                analyze_anyway=False, progress=gr.Progress()):
        request = Request(file, threshold, spacing, slice_index, whole_volume, model, analyze_anyway)
        return explain_for_ui(bank, request, recent, progress)

    def switch_model(model, file, spacing, slice_index, whole_volume, analyze_anyway, progress=gr.Progress()):
        request = Request(file, None, spacing, slice_index, whole_volume, model, analyze_anyway)
        return switch_model_for_ui(bank, request, progress, recent)

    def offer_downloads(file, threshold, spacing, slice_index, whole_volume, model, analyze_anyway,
                        progress=gr.Progress()):
        """The download buttons of the analysis just shown; the exports, written into a private folder,
        are handed to Gradio's cache (removed with it) and the folder removed."""
        if not upload_paths(file):
            return hide_downloads()
        with tempfile.TemporaryDirectory(prefix="tumorlens-exports-") as folder:
            outputs = exports_for_ui(bank, Request(file, threshold, spacing, slice_index, whole_volume, model,
                                                   analyze_anyway), Path(folder), recent, progress)
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
        with gr.Tabs():
            with gr.Tab("Analyze", id="analyze-tab"):
                with gr.Row():
                    with gr.Column():
                        # hidden with one model; always there, so /analyze keeps one signature
                        model = gr.Dropdown(bank.choices, value=bank.default, label="Segmentation model",
                                            visible=len(bank.names) > 1, elem_id="model",
                                            info="Tumor type comes only with the BRISC 2025 model, trained on T1c "
                                                 "slices like its classifier.")
                        # gr.File, not gr.Image: the upload reaches our reader, which explains bad files (no
                        # file_types: DICOM slice files often have no suffix). Several files: one DICOM series.
                        file = gr.File(label=UPLOAD_LABEL, type="filepath", file_count="multiple", elem_id="scan")
                        file.data_model = OneOrMoreFiles
                        info = gr.Markdown(elem_id="scan-info")
                        slice_slider = gr.Slider(0, 1, value=0, step=1, precision=0, visible=False, label="Slice",
                                                 info="Which slice of the volume to show", elem_id="slice")
                        slice_index = gr.Number(-1, precision=0, visible=False, elem_id="slice-index",
                                                label="Slice index (-1: the middle one)")
                        whole_volume = gr.Checkbox(False, visible=False, elem_id="whole-volume",
                                                   label="Whole volume: segment every slice and report the tumor "
                                                         "volume (cm³)")
                        threshold = gr.Slider(0.05, 0.95, value=model_threshold(bank.get()), step=0.05,
                                              label="Mask threshold", elem_id="threshold")
                        spacing = gr.Number(value=None, elem_id="spacing",
                                            label="Pixel spacing (mm per pixel; empty or 0 = pixels and % only; "
                                                  "DICOM and NIfTI fill it from their header)")
                        analyze_anyway = gr.Checkbox(False, label="Analyze anyway", elem_id="analyze-anyway",
                                                     info="Run the models even on an upload that does not look like a "
                                                          "brain MRI slice of the kind they were trained on")
                        run = gr.Button("Analyze", variant="primary", elem_id="analyze")
                        sources = dict.fromkeys(bank.record(m).short for _, m in example_rows)
                        example_gallery(example_rows, [example_label(p, m, short=bank.record(m).short)
                                                       for p, m in example_rows], file, model,
                                        label=f"Examples ({' and '.join(sources)} test set"
                                              f"{'s' if len(sources) > 1 else ''}): click one to load it")
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
                    overlay = _panel("overlay", "Tumor outline")
                    mask = _panel("mask", "Mask")
                    heat = _panel("heatmap", "Confidence heatmap")
                with gr.Row():
                    uncertainty = _panel("uncertainty", "Uncertainty: where the slice and its mirror image disagree")
                    activation = _panel("activation", "Why this tumor type (Grad-CAM)")
            with gr.Tab("Results", id="results-tab", elem_id="results-tab"):
                results_tab(bank, data_home)
        gr.Markdown(DISCLAIMER)
        state = gr.State(PageState())
        request_inputs = [file, threshold, spacing, slice_index, whole_volume, model, analyze_anyway]
        shown = [overlay, mask, heat, uncertainty, label, verdict, size]
        download_outputs = [*buttons.values(), downloads]
        slice_slider.change(None, inputs=slice_slider, outputs=slice_index, js="(v) => v")
        file.change(inspect_for_ui, inputs=[file, state],
                    outputs=[slice_slider, slice_index, spacing, info, state, whole_volume],
                    api_name="inspect", concurrency_limit=4, concurrency_id="inspect", show_progress="hidden")
        # the page's own: a new upload or a new analysis first takes the old downloads away
        for trigger in (file.change, run.click, model.change):
            trigger(hide_downloads, outputs=download_outputs, api_visibility="private", concurrency_limit=None,
                    show_progress="hidden")
            trigger(lambda: None, outputs=activation, api_visibility="private", concurrency_limit=None,
                    show_progress="hidden")
        analyzed = run.click(analyze, inputs=request_inputs, outputs=shown, api_name="analyze",
                             concurrency_limit=limit, concurrency_id="model")
        # after the answer, not in it: the explanation costs backward passes the verdict need not wait for
        analyzed.success(explain, inputs=request_inputs, outputs=activation, api_name="explain",
                         concurrency_limit=limit, concurrency_id="model", show_progress="minimal")
        analyzed.success(offer_downloads, inputs=request_inputs, outputs=download_outputs, api_visibility="private",
                         concurrency_limit=limit, concurrency_id="model", show_progress="minimal")
        # the page's own (the menu or an example changed it): API clients pass `model` to /analyze
        switched = model.change(switch_model, inputs=[model, file, spacing, slice_index, whole_volume, analyze_anyway],
                                outputs=[threshold, *shown], api_visibility="private",
                                concurrency_limit=limit, concurrency_id="model")
        switched.success(explain, inputs=request_inputs, outputs=activation, api_visibility="private",
                         concurrency_limit=limit, concurrency_id="model", show_progress="minimal")
        switched.success(offer_downloads, inputs=request_inputs, outputs=download_outputs, api_visibility="private",
                         concurrency_limit=limit, concurrency_id="model", show_progress="minimal")
    demo.queue(max_size=queue_size, default_concurrency_limit=limit)
    return demo
