"""The Gradio interface: upload an MRI slice, get the tumor outline, mask, heatmap, class and area.

`build_demo` takes a loaded Pipeline (or None: the app then says there is no model yet)."""

from __future__ import annotations

from pathlib import Path

import datasets
import gradio as gr
import numpy as np

from .data import TUMOR_CLASSES, brisc2025
from .errors import DataError, TumorLensError
from .inference import DEFAULT_THRESHOLD, Pipeline
from .preprocess import decode_image
from .visualize import heatmap, mask_image, overlay_outline

DISCLAIMER = ("**Research use only.** TumorLens is not a medical device; its output is not a diagnosis "
              "and must not guide clinical decisions.")
MAX_UPLOAD_BYTES = 50 * 1024 * 1024


def example_paths(data_root=None) -> list[str]:
    """One real BRISC test slice per class (no_tumor is the healthy example), read from the dataset
    location at start-up; nothing is copied into the project."""
    try:
        test = brisc2025.load_classification(data_root, check="none")["test"]
    except TumorLensError:
        return []
    raw = test.cast_column("image", datasets.Image(decode=False))
    picked = {}
    for image, label in zip(raw["image"], test["label"]):
        picked.setdefault(TUMOR_CLASSES[label], image["path"])
    return [picked[c] for c in TUMOR_CLASSES if c in picked]


def describe_area(px: int, fraction: float, spacing: float | None) -> str:
    text = f"{px:,} px ({100 * fraction:.2f}% of the image)"
    if spacing:
        mm2 = px * spacing * spacing
        text += f" = {mm2:,.1f} mm² ({mm2 / 100:,.2f} cm²)"
    return text


def analyze_for_ui(pipeline: Pipeline | None, image_path, threshold: float, spacing: float | None):
    if pipeline is None:
        raise gr.Error("No model yet: train one (train/train_segmenter.py) or set TUMORLENS_SEG_MODEL.")
    if image_path is None:
        raise gr.Error("Upload an MRI slice first.")
    path = Path(image_path)
    if path.is_file() and path.stat().st_size > MAX_UPLOAD_BYTES:
        raise gr.Error(f"File is over {MAX_UPLOAD_BYTES // 2**20} MB.")
    try:
        rgb = decode_image(path)
        result = pipeline.analyze(rgb, threshold=threshold, pixel_spacing_mm=(spacing, spacing) if spacing else None)
    except DataError as exc:
        raise gr.Error(f"Cannot read this image: {exc.reason}.") from exc
    seg = result.segmentation
    if seg is None:
        overlay = mask = heat = rgb
        verdict, area = "No segmenter loaded.", ""
    else:
        overlay = overlay_outline(rgb, seg.mask)
        mask = mask_image(seg.mask)
        heat = heatmap(rgb, seg.probability)
        verdict = "### Tumor found" if result.tumor_found else "### No tumor found"
        area = describe_area(seg.area_px, seg.area_fraction, spacing)
    return overlay, mask, heat, result.class_probabilities or None, verdict, area


def build_demo(pipeline: Pipeline | None, examples: list[str] | None = None) -> gr.Blocks:
    with gr.Blocks(title="TumorLens") as demo:
        gr.Markdown("# TumorLens: brain-tumor MRI segmentation and classification")
        if pipeline is None:
            gr.Markdown("**No model yet.** The app starts without weights; train or point "
                        "TUMORLENS_SEG_MODEL / TUMORLENS_CLS_MODEL at a model folder or Hub repo.")
        with gr.Row():
            with gr.Column():
                # gr.File, not gr.Image: the upload reaches our decoder, which explains bad files
                image = gr.File(label="MRI slice (PNG, JPEG, TIFF, BMP)", type="filepath",
                                file_types=[".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp"])
                threshold = gr.Slider(0.05, 0.95, value=DEFAULT_THRESHOLD, step=0.05, label="Mask threshold")
                spacing = gr.Number(value=None, label="Pixel spacing (mm per pixel; empty = pixels and % only)")
                run = gr.Button("Analyze", variant="primary")
                if examples:
                    gr.Examples(examples=[[p] for p in examples], inputs=[image], label="Examples (BRISC 2025 test)")
            with gr.Column():
                verdict = gr.Markdown()
                label = gr.Label(label="Tumor type", num_top_classes=4)
                area = gr.Textbox(label="Tumor area", interactive=False)
        with gr.Row():
            overlay = gr.Image(label="Tumor outline", type="numpy")
            mask = gr.Image(label="Mask", type="numpy")
            heat = gr.Image(label="Confidence heatmap", type="numpy")
        gr.Markdown(DISCLAIMER)
        run.click(lambda *a: analyze_for_ui(pipeline, *a), inputs=[image, threshold, spacing],
                  outputs=[overlay, mask, heat, label, verdict, area], api_name="analyze", concurrency_limit=2)
    demo.queue(max_size=64, default_concurrency_limit=2)
    return demo
