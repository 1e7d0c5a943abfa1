"""What the app's page and API do, with no layout: read an upload, analyze it (after the out-of-scope
check), turn the result into the page's panels, explain the tumor type, write the downloads. Every
failure becomes a `gr.Error` whose message names the upload by its base name only, never a server
folder. `tumorlens.app.build_demo` lays these out on the page."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path

import gradio as gr

from .errors import DataError, public_message
from .inference import Pipeline
from .medical_io import APP_BUDGET, RequestBudget, Scan, cli_command, read_header
from .registry import UnknownModelError
from .scan_analysis import RecentResults, ScanResult, analyze_scan, file_stamps, load_scan, model_threshold
from .scan_verdict import report
from .scan_outputs import FORMATS, Outputs, source_name, write_outputs
from .scope_gate import ScopeGate
from .segmenter_bank import SegmenterBank
from .visualize import activation_image, disagreement_image, mask_image, overlay_outline, probability_image

log = logging.getLogger("tumorlens.app")

TUMOR_TYPE_LABEL = "Tumor type"
NO_TUMOR_TYPE_NOTE = "Tumor type: only for the BRISC model (T1c)"
DOWNLOADS = {"png": "Mask (PNG)", "nifti": "Mask (NIfTI)", "dicom-seg": "DICOM SEG",
             "secondary-capture": "Outline (DICOM Secondary Capture)", "report": "Report (HTML)"}


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
    analyze_anyway: bool = False        # run the models even where the scope check refuses the upload


@dataclass(frozen=True)
class PageState:
    """What one browser session's page remembers between events (held in a gr.State)."""

    spacing_from_header: bool = False   # the spacing field holds what /inspect read from a header


def _error(message: str, *paths) -> gr.Error:
    """The message a user sees: server folders (the upload's temporary one and any other) cut out."""
    return gr.Error(public_message(message, *paths), print_exception=False)


def upload_paths(file) -> list[str]:
    """The upload's files: one, or several (a multi-file upload); [] when none."""
    items = [] if file is None else list(file) if isinstance(file, (list, tuple)) else [file]
    return [str(getattr(item, "path", item)) for item in items]


def _read(file, budget: RequestBudget = APP_BUDGET) -> Scan:
    paths = upload_paths(file)
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
    paths = upload_paths(file)
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


def analyze_result(pipeline: Pipeline | None, request: Request, progress=None,
                   scope_gate: ScopeGate | None = None) -> ScanResult:
    """`request` analysed with `pipeline`, after `scope_gate`'s check (if any); every failure a message
    for the page."""
    if pipeline is None:
        raise _error("No model yet: train one (train/train_segmenter.py) or set TUMORLENS_SEG_MODEL.")
    paths = upload_paths(request.file)
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
                            progress=progress, budget=APP_BUDGET, scope_gate=scope_gate,
                            analyze_anyway=bool(request.analyze_anyway))
    except DataError as exc:
        raise _error(f"Cannot analyze this image: {exc.reason}.", *paths) from exc
    except MemoryError as exc:
        raise _error("Cannot analyze this image: it needs more memory than this server has.") from exc


PAGE_OUTPUTS = ("overlay", "mask", "heatmap", "uncertainty", "class probabilities", "verdict", "size")


def page_outputs(result: ScanResult):
    """(overlay, mask, heatmap, uncertainty, class probabilities, verdict, size) of `result`, as the page
    shows them: the maps with their colour bars; a refused upload shows only itself (no maps, no type)."""
    rgb, seg = result.analysis.image, result.segmentation
    if seg is None:
        overlay, mask, heat, uncertainty = rgb, None, None, None
    else:
        overlay, mask, heat = overlay_outline(rgb, seg.mask), mask_image(seg.mask), probability_image(rgb, seg.probability)
        uncertainty = disagreement_image(rgb, seg.disagreement) if seg.disagreement is not None else None
    verdict, size = report(result)
    return overlay, mask, heat, uncertainty, result.analysis.class_probabilities or None, verdict, size


def analyze_for_ui(pipeline: Pipeline | None, request: Request, progress=None, scope_gate: ScopeGate | None = None):
    """`request` with `pipeline`: (overlay, mask, heatmap, uncertainty, class probabilities, verdict, size)."""
    return page_outputs(analyze_result(pipeline, request, progress, scope_gate))


def result_key(bank: SegmenterBank, request: Request) -> tuple | None:
    """What makes two requests the same analysis: the files (path, size, modification time), the settings
    and the model; None when a file is gone."""
    stamps = file_stamps(upload_paths(request.file))
    if stamps is None:
        return None
    return (stamps, request.threshold, request.spacing, request.slice_index, bool(request.whole_volume),
            request.model or bank.default, bool(request.analyze_anyway))


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
    result = analyze_result(pipeline_for_ui(bank, request.model), request, progress, bank.scope_gate)
    if recent is not None:
        recent.put(result_key(bank, request), result)
    outputs = page_outputs(result)
    if bank.tumor_types(request.model) or result.refused:
        return outputs
    *maps, _, verdict, size = outputs
    return *maps, None, f"{verdict}\n\n*{NO_TUMOR_TYPE_NOTE}.*", size


def switch_model_for_ui(bank: SegmenterBank, request: Request, progress=None, recent: RecentResults | None = None):
    """On a new choice in the model menu (`request.model`): load the model (once), move the threshold
    slider to its own tuned threshold, retitle the tumor-type box, and analyze the loaded file again,
    if any. Returns updates for (threshold, overlay, mask, heatmap, uncertainty, tumor type, verdict, size)."""
    threshold = model_threshold(pipeline_for_ui(bank, request.model))
    title = TUMOR_TYPE_LABEL if bank.tumor_types(request.model) else NO_TUMOR_TYPE_NOTE
    if not upload_paths(request.file):
        return (gr.update(value=threshold), *(gr.skip() for _ in range(4)), gr.update(value=None, label=title),
                gr.skip(), gr.skip())
    *maps, label, verdict, size = analyze_with_model(bank, replace(request, threshold=threshold), progress, recent)
    return gr.update(value=threshold), *maps, gr.update(value=label, label=title), verdict, size


def exports_for_ui(bank: SegmenterBank, request: Request, out: Path, recent: RecentResults | None = None,
                   progress=None) -> Outputs:
    """Every export (`scan_outputs.FORMATS`) of `request`'s analysis, written into folder `out` by
    `scan_outputs.write_outputs` (as `tumorlens predict` writes them): the analysis the page shows when
    `recent` holds it, else a fresh one. The report names the models with their test scores."""
    result, created = shown_result(bank, request, recent, progress)
    paths = upload_paths(request.file)
    return write_outputs(result, out, formats=FORMATS, stem=Path(paths[0]).name if len(paths) == 1 else "series",
                         models=bank.summaries(request.model), name=source_name(result.scan), created=created)


def downloads_note(outputs: Outputs | None) -> str:
    """What the page says under its download buttons: the exports it could not make, and why."""
    if outputs is None or not outputs.skipped:
        return ""
    return "Not for this input:  \n" + "  \n".join(f"- {DOWNLOADS[fmt]}: {why}." for fmt, why in outputs.skipped.items())



def shown_result(bank: SegmenterBank, request: Request, recent: RecentResults | None = None,
                 progress=None) -> tuple[ScanResult, object]:
    """(the analysis of `request`, when it ran): the one the page shows when `recent` holds it (no second
    model run), else a fresh one, kept there."""
    recent = recent if recent is not None else RecentResults(0)
    key = result_key(bank, request)
    return recent.get(key) or recent.put(
        key, analyze_result(pipeline_for_ui(bank, request.model), request, progress, bank.scope_gate))


def explain_for_ui(bank: SegmenterBank, request: Request, recent: RecentResults | None = None, progress=None):
    """/explain: the class-activation map (tumorlens.explain, Grad-CAM) of the tumor-type decision on the
    slice the page shows, with its colour bar; None where no tumor type was given (no classifier for this
    model, or the upload was refused)."""
    from .explain import explain
    if not upload_paths(request.file):
        return None
    result, _ = shown_result(bank, request, recent, progress)
    pipeline = pipeline_for_ui(bank, request.model)
    classifier = pipeline.classifier if pipeline is not None else None
    if (classifier is None or result.refused or not bank.tumor_types(request.model)
            or not result.analysis.class_probabilities):
        return None
    seg = result.segmentation
    mask = pipeline.segmenter.classifier_mask(seg) if classifier.needs_masks and seg is not None else None
    try:
        cam = explain(classifier, result.analysis.image, mask)
    except DataError as exc:
        raise _error(f"Cannot explain this tumor type: {exc.reason}.", *upload_paths(request.file)) from exc
    return activation_image(result.analysis.image, cam.map, cam.label)
