"""The page's examples as a gallery of small thumbnails: a click puts the example in the upload box and
picks its model, as the old text buttons (gr.Examples) did.

`example_gallery(rows, labels, file, model)`, called inside an open `gr.Blocks`, adds the gallery
(elem_id "examples") and wires its `.select`. Each row is (example file, model name), as
`tumorlens.app._example_rows` builds them; `labels` are the captions (`tumorlens.examples.example_label`).
The thumbnails (128 px PNG) and a copy of each example are made once, at build time, in a private temp
folder: Gradio hands out only files under the working directory or the temp folder, and the LGG
examples live in the dataset location, outside both. Any file `load_scan` reads renders: images,
DICOM and NIfTI (their middle slice), 3-channel LGG slices."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

import gradio as gr
import numpy as np
from PIL import Image

from .errors import TumorLensError
from .scan_analysis import load_scan

log = logging.getLogger("tumorlens.app")

THUMBNAIL_PX = 128
GALLERY_COLUMNS = 8


def thumbnail(path: str | Path, size: int = THUMBNAIL_PX) -> Image.Image:
    """The example's middle slice as RGB, fitted into a `size` x `size` black square (aspect kept)."""
    scan = load_scan(str(path))
    image = Image.fromarray(np.asarray(scan.rgb(scan.n_slices // 2), np.uint8))
    image.thumbnail((size, size), Image.Resampling.LANCZOS)
    square = Image.new("RGB", (size, size))
    square.paste(image, ((size - image.width) // 2, (size - image.height) // 2))
    return square


def prepare_examples(rows: list[tuple[str, str]], labels: list[str], folder: Path
                     ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(gallery items: (thumbnail, caption), rows with the example copied into `folder`) for the rows
    whose file renders; one that does not is left out with a log line, so the two lists stay paired."""
    if len(rows) != len(labels):
        raise ValueError(f"{len(rows)} example rows but {len(labels)} labels")
    items, kept = [], []
    for i, ((path, model), label) in enumerate(zip(rows, labels)):
        try:
            thumb = thumbnail(path)
        except (TumorLensError, OSError, ValueError) as exc:
            log.warning("examples: no thumbnail for %s (%s); left out of the gallery", Path(path).name, exc)
            continue
        own = folder / str(i)  # one folder per example: the upload keeps the example's own file name
        own.mkdir(parents=True, exist_ok=True)
        thumb_path = own / f"thumbnail-{THUMBNAIL_PX}.png"
        thumb.save(thumb_path)
        copy = own / Path(path).name
        shutil.copyfile(path, copy)
        items.append((str(thumb_path), label))
        kept.append((str(copy), model))
    return items, kept


def example_choice(rows: list[tuple[str, str]], index: int | None):
    """What a click on gallery item `index` sets: (the upload box's value: a list of one file, the model
    name). An index outside the rows (a stale page) changes nothing."""
    if index is None or not 0 <= int(index) < len(rows):
        return gr.skip(), gr.skip()
    path, model = rows[int(index)]
    return [path], model


def example_gallery(rows: list[tuple[str, str]], labels: list[str], file: gr.File, model: gr.Dropdown,
                    folder: str | Path | None = None, label: str = "Examples: click one to load it") -> gr.Gallery:
    """The examples' thumbnail gallery, captioned with `labels`; a click sets `file` (a multi-file
    gr.File: the value is a list of one path) and `model`. Call inside an open gr.Blocks, after `file`
    and `model` exist. `folder`: where thumbnails and copies go (default: a new temp folder). Without
    rows (or none renders) the gallery is there but hidden."""
    folder = Path(folder) if folder is not None else Path(tempfile.mkdtemp(prefix="tumorlens-examples-"))
    items, kept = prepare_examples(rows, labels, folder)
    gallery = gr.Gallery(items, label=label, elem_id="examples", columns=GALLERY_COLUMNS,
                         height="auto", object_fit="contain", allow_preview=False, interactive=False,
                         buttons=[], format="png", visible=bool(items))

    def choose(evt: gr.SelectData):
        return example_choice(kept, evt.index)

    gallery.select(choose, outputs=[file, model], api_visibility="private", show_progress="hidden",
                   concurrency_limit=None)
    return gallery


__all__ = ["THUMBNAIL_PX", "example_choice", "example_gallery", "prepare_examples", "thumbnail"]
