"""Where one /analyze request's time goes, in process: the stages the app's `analyze_with_model` runs
for one image (read -> `analyze_scan`: scope check, segmenter, classifier -> `page_outputs`: verdict
and panels), each timed on its own by calling the same functions, plus what Gradio does with each
returned image (`gr.Image(format=...)` postprocess, in the page's `app.PANEL_FORMATS`:
`processing_utils.save_img_array_to_cache`, i.e. PIL encoding, hashing and writing the file).

Parts break the segmenter and the classifier down (preprocessing, each pass of the flip average,
mapping back, clean-up), so a proposal can name the line it saves. Check rows time the app's own
`analyze_scan` and `page_outputs` whole (the stages should add up to them); what-if rows time what the
app does not do (its colour panels as PNG, at Gradio's level and at level 1). None is in the total.
Used by `tumorlens.bench.app_load`; no Gradio server here."""

from __future__ import annotations

import io
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch

from ..app import PANEL_FORMATS

# the stages one request runs, in order (panels and their encodings: one row each, named below); their sum is the total
STAGES = ("read + decode", "scope check", "segmenter", "classifier", "verdict text")
PANEL_NAMES = ("overlay", "mask", "heatmap", "uncertainty")   # the page's image outputs, in order
# parts of a stage above (not added to the total again)
PARTS = ("segmenter > letterbox + normalize", "segmenter > forward pass", "segmenter > mirrored forward pass",
         "segmenter > map back (probability)", "segmenter > map back (flip disagreement)",
         "segmenter > threshold + clean-up", "classifier > forward pass(es)")
# the app's own calls, timed whole (to check the stages add up to them), and variants it does not run
CHECKS = ("check: analyze_scan as the app calls it", "check: page_outputs as the app calls it")
WHAT_IF = "what-if: "
ENCODE = "encode: "  # a returned image written as the page's gr.Image writes it (app.PANEL_FORMATS)


@contextmanager
def timed(into: dict, stage: str):
    """Adds the seconds the block took to `into[stage]` (a list per stage)."""
    start = time.perf_counter()
    try:
        yield
    finally:
        into.setdefault(stage, []).append(time.perf_counter() - start)


def gradio_save(arr: np.ndarray, cache_dir: str, fmt: str = "png") -> str:
    """What `gr.Image(type="numpy", format=fmt)` does with a returned array: its own function."""
    from gradio.processing_utils import save_img_array_to_cache
    return save_img_array_to_cache(arr, cache_dir=cache_dir, format=fmt)


def png_bytes(arr: np.ndarray, compress_level: int) -> int:
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "png", compress_level=compress_level)
    return buf.tell()


def _segmenter_parts(segmenter, rgb: np.ndarray, threshold: float, times: dict) -> None:
    """`Segmenter.segment`'s steps (as `probability_maps(disagreement=True)` runs them), one by one."""
    from ..preprocess import letterbox_image, restore_map
    with timed(times, PARTS[0]):
        pixels, box = letterbox_image(rgb, segmenter.pre.size)
        x = segmenter.pre.normalize(torch.from_numpy(pixels[None]))
    with timed(times, PARTS[1]):
        logits = segmenter.runner(x)
    if segmenter.tta:
        with timed(times, PARTS[2]):
            mirrored = segmenter.runner(x.flip(3)).flip(3)
        gaps = (torch.sigmoid(logits[:, 0]) - torch.sigmoid(mirrored[:, 0])).abs()
        logits = (logits + mirrored) / 2
        with timed(times, PARTS[4]):
            restore_map(gaps[0], box)
    with timed(times, PARTS[3]):
        prob = restore_map(torch.sigmoid(logits[:, 0])[0], box)
    with timed(times, PARTS[5]):
        segmenter.from_probability(prob, threshold)


def app_page_outputs():
    """The app's own `page_outputs` (in tumorlens.app_actions, or tumorlens.app before the split)."""
    try:
        from ..app_actions import page_outputs
    except ImportError:
        from ..app import page_outputs
    return page_outputs


def app_scope_gate(cls_model):
    """The scope gate space/app.py loads beside the classifier (None where there is none)."""
    try:
        from ..scope_gate import load_gate
    except ImportError:
        return None
    return load_gate(cls_model)


def panel_renderers(rgb: np.ndarray, seg) -> dict:
    """name -> the tumorlens.visualize call that draws that panel of the page (as page_outputs does)."""
    from .. import visualize as v
    heat = getattr(v, "probability_image", None) or v.heatmap  # with its colour bar, where the app has one
    out = {"overlay": lambda: v.overlay_outline(rgb, seg.mask), "mask": lambda: v.mask_image(seg.mask),
           "heatmap": lambda: heat(rgb, seg.probability)}
    if seg.disagreement is not None and hasattr(v, "disagreement_image"):
        out["uncertainty"] = lambda: v.disagreement_image(rgb, seg.disagreement)
    return out


def profile_slice(pipeline, path: str | Path, cache_dir: str, times: dict, scope_gate=None) -> dict:
    """Times every stage of one request for the image at `path` into `times` (stage -> list of seconds);
    returns the encoded size in bytes of each image the app returns."""
    from ..medical_io import APP_BUDGET, read_scan
    from ..scan_analysis import analyze_scan
    from ..scan_verdict import report
    page_outputs = app_page_outputs()
    with timed(times, "read + decode"):  # load_scan's cache misses on every new upload
        scan = read_scan(str(path), budget=APP_BUDGET)
        rgb = scan.rgb(scan.n_slices // 2)
    seg_model, classifier = pipeline.segmenter, pipeline.classifier
    if scope_gate is not None:
        with timed(times, "scope check"):
            scope_gate.check(rgb)
    with timed(times, "segmenter"):  # what Pipeline.analyze runs
        seg = seg_model.segment(rgb, seg_model.threshold)
    with timed(times, "classifier"):
        classifier.probabilities([rgb], [seg_model.classifier_mask(seg)] if classifier.needs_masks else None)
    _segmenter_parts(seg_model, rgb, seg_model.threshold, times)
    with timed(times, PARTS[6]):
        classifier.forward(classifier.pre.normalize(torch.from_numpy(classifier.pre.prepare(rgb)[0][None])))
    extra = {"scope_gate": scope_gate} if scope_gate is not None else {}
    with timed(times, CHECKS[0]):
        result = analyze_scan(pipeline, scan, budget=APP_BUDGET, **extra)
    with timed(times, "verdict text"):
        report(result)
    for name, draw in panel_renderers(rgb, seg).items():
        with timed(times, f"panel: {name}"):
            draw()
    with timed(times, CHECKS[1]):
        outputs = page_outputs(result)
    images = [o for o in outputs if isinstance(o, np.ndarray)]
    sizes = {}
    for name, image in zip(PANEL_NAMES, images):
        fmt = PANEL_FORMATS[name]
        with timed(times, f"{ENCODE}{name} ({fmt})"):
            sizes[name] = Path(gradio_save(image, cache_dir, fmt)).stat().st_size
        if name != "mask":  # the mask stays a lossless PNG (and costs little)
            with timed(times, f"{WHAT_IF}png level 1, {name}"):
                png_bytes(image, 1)
            with timed(times, f"{WHAT_IF}gr.Image(format='png'), {name}"):
                gradio_save(image, cache_dir, "png")
    return sizes


def stage_names(times: dict) -> list[str]:
    """The stages timed, in request order: those of STAGES, then each panel, then each encoding."""
    named = [s for s in STAGES if s in times]
    return named + [k for k in times if k.startswith("panel: ")] + [k for k in times if k.startswith(ENCODE)]


def summarize(times: dict) -> list[dict]:
    """One row per stage, part, check and what-if: p50 and p95 ms over the slices; the total row sums
    the stages per slice (so its p50 is a real request's, not a sum of medians)."""
    from .app_load import percentiles
    stages = stage_names(times)
    groups = (("stage", stages), ("part", [p for p in PARTS if p in times]),
              ("check", [c for c in CHECKS if c in times]), ("what-if", [k for k in times if k.startswith(WHAT_IF)]))
    rows = [{"stage": name, "group": group, **percentiles(times[name])} for group, names in groups for name in names]
    per_slice = [sum(vals) for vals in zip(*(times[s] for s in stages))]
    rows.append({"stage": "total (in process)", "group": "total", **percentiles(per_slice)})
    return rows


def in_worker_thread(fn, *args):
    """`fn(*args)` run in a new thread, as Gradio runs an event handler (anyio's worker threads): torch
    behaves differently there (measured here: the scope gate's pass 43 ms in a worker thread, 1.6 s on
    the main thread, 2 threads, another process busy), so a main-thread profile would mislead."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn(*args)
        except BaseException as exc:  # noqa: BLE001 - raised again in the caller's thread
            box["error"] = exc

    worker = threading.Thread(target=target, name="profile-worker")
    worker.start()
    worker.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


def _profile_slices(pipeline, paths, scope_gate, warmup: int) -> tuple[dict, dict]:
    times: dict = {}
    sizes: dict = {}
    with tempfile.TemporaryDirectory(prefix="tumorlens-profile-") as cache_dir:
        for path in list(paths)[:warmup]:
            profile_slice(pipeline, path, cache_dir, {}, scope_gate)
        for path in paths:
            for name, size in profile_slice(pipeline, path, cache_dir, times, scope_gate).items():
                sizes.setdefault(name, []).append(size)
    return times, sizes


def profile(pipeline, paths, scope_gate=None, warmup: int = 1) -> dict:
    """Stage table over `paths` (after `warmup` untimed slices), the panels' encoded sizes, and the runtimes;
    timed in a worker thread, where the app runs a request."""
    times, sizes = in_worker_thread(_profile_slices, pipeline, paths, scope_gate, warmup)
    return {"rows": summarize(times), "slices": len(paths), "scope_check": scope_gate is not None,
            "encoded_kb_p50": {name: round(float(np.median(v)) / 1024, 1) for name, v in sizes.items()},
            "segmenter_tta": bool(pipeline.segmenter.tta), "classifier_tta": bool(pipeline.classifier.tta),
            "runtimes": {"segmenter": f"{pipeline.segmenter.runner.runtime}/{pipeline.segmenter.runner.precision}",
                         "classifier": f"{pipeline.classifier.runner.runtime}/{pipeline.classifier.runner.precision}"},
            "torch_threads": torch.get_num_threads()}
