"""A one-page report of one scan's analysis, as a self-contained HTML file: the slice with the tumor
outline (a base64 PNG inside the page), the verdict, the tumor's size, the tumor type, the models with
their test scores, the input's SHA-256 and the time of the analysis, and the research-use statement.
Nothing is fetched when it opens (no links to other files, no scripts; a Content-Security-Policy says
so), and it prints on one A4 page.

- `model_summary(folder_or_repo)` -> `ModelSummary`: a model's name and title (metadata.json), version
  (the first 12 hex digits of its weights' SHA-256) and test scores (eval.json: the segmenter's mean
  Dice per tumor slice, the classifier's accuracy and macro F1); make it once per model, not per scan.
- `render_report(result, source_sha256=..., models=..., created=...)` -> the HTML text;
  `write_report(result, out, ...)` writes it (the SHA-256 of `result.scan.source` when none is given).

The verdict is `scan_verdict.report`'s (with its "Uncertain" verdict when the two models disagree),
sizes are `describe_area`'s, the slice picture is `visualize.overlay_outline`'s. Every text taken from
the input (file name, header description, notes) is HTML-escaped."""

from __future__ import annotations

import base64
import html
import io
import json
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Sequence

import numpy as np

from .imagenet import sha256_of
from .model_record import RESEARCH_USE, read_record
from .models import EVAL_NAME, fetch_file
from .scan_analysis import ScanResult
from .scan_verdict import describe_area, mm_text, report
from .visualize import overlay_outline

WEIGHTS_NAME = "model.safetensors"
VERSION_DIGITS = 12   # a model's version: this many hex digits of its weights' SHA-256 (as model cards pin them)
DESCRIPTION_CHARS = 200
# eval.json key -> (the label the report and the model card give it, the eval.json key of its count)
SCORES = {
    "segmentation": (("dice_mean", "Mean Dice per tumor slice", "n_tumor_slices"),
                     ("dice_per_patient_mean", "Mean Dice per patient", "n_patients")),
    "classification": (("accuracy", "Accuracy", "n"), ("macro_f1", "Macro F1", "n")),
}
ROLES = {"segmentation": "Segmenter", "classification": "Tumor-type classifier"}
CSP = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
STYLE = """
@page { size: A4; margin: 12mm; }
* { box-sizing: border-box; }
body { font: 9.5pt/1.35 system-ui, -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #111;
       max-width: 186mm; margin: 0 auto; padding: 4mm; }
h1 { font-size: 15pt; margin: 0 0 2mm; }
h2 { font-size: 11pt; margin: 3mm 0 1mm; }
.verdict h2 { font-size: 13pt; margin-top: 0; }
.ruo { border: 1.5px solid #b00; background: #fff3f3; padding: 1.5mm 3mm; font-weight: 600; margin: 0 0 3mm; }
.grid { display: flex; gap: 5mm; align-items: flex-start; }
.grid > figure { flex: 0 0 92mm; margin: 0; }
.grid > div { flex: 1 1 auto; min-width: 0; }
figure img { width: 100%; max-height: 100mm; object-fit: contain; background: #000; display: block;
             image-rendering: pixelated; }
figcaption { font-size: 8.5pt; color: #444; margin-top: 1mm; }
table { border-collapse: collapse; width: 100%; margin: 1mm 0 2mm; }
th, td { text-align: left; vertical-align: top; padding: 0.6mm 2mm 0.6mm 0; border-bottom: 0.5px solid #ccc; }
th { font-weight: 600; white-space: nowrap; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
.mono { font-family: ui-monospace, Menlo, Consolas, monospace; font-size: 8pt; overflow-wrap: anywhere; }
ul { margin: 1mm 0; padding-left: 5mm; }
footer { margin-top: 3mm; font-size: 8pt; color: #444; }
@media print { body { padding: 0; } .grid { break-inside: avoid; } }
"""


# -- the models ----------------------------------------------------------------------------
@dataclass(frozen=True)
class ModelSummary:
    """What the report says about one model: who it is, which weights, how it scored on test data."""

    task: str                                          # 'segmentation' | 'classification'
    name: str                                          # the folder's (or Hub repo's) name
    title: str                                         # metadata.json's title
    version: str                                       # VERSION_DIGITS of the weights' SHA-256, or 'unknown'
    test_set: str | None = None                        # eval.json's dataset; None: never scored
    scores: tuple[tuple[str, float, int | None], ...] = ()  # (label, value, number of test items)

    @property
    def role(self) -> str:
        return ROLES.get(self.task, self.task)


def eval_scores(ev: dict, task: str) -> tuple[tuple[str, float, int | None], ...]:
    """The headline test scores of an eval.json, as (label, value, count)."""
    out = []
    for key, label, count in SCORES.get(task, ()):
        if ev.get(key) is not None:
            n = ev.get(count)
            out.append((label, float(ev[key]), None if n is None else int(n)))
    return tuple(out)


def model_summary(name_or_path: str | Path) -> ModelSummary:
    """A model folder's (or Hub repo's) summary, from metadata.json, eval.json and its weights file."""
    record = read_record(name_or_path)
    weights = fetch_file(name_or_path, WEIGHTS_NAME, required=False)
    version = sha256_of(weights)[:VERSION_DIGITS] if weights else "unknown"
    ev_path = fetch_file(name_or_path, EVAL_NAME, required=False)
    ev = json.loads(Path(ev_path).read_text()) if ev_path else {}
    name = Path(str(name_or_path).rstrip("/")).name or str(name_or_path)
    return ModelSummary(task=record.task, name=name, title=record.title, version=version,
                        test_set=ev.get("dataset"), scores=eval_scores(ev, record.task))


# -- what the input says about itself -----------------------------------------------------
def header_description(scan) -> str | None:
    """The description the file's header gives: a DICOM's SeriesDescription (else StudyDescription;
    for a series read from a folder or zip, from the headers the Scan kept), a NIfTI's `descrip`; None
    for a plain image or an empty field. Untrusted text: escape it."""
    series = getattr(scan, "datasets", None)
    if scan.kind == "dicom" and series:
        return _clean(_dicom_description(series[0]))
    if not scan.source or not Path(scan.source).is_file():
        return None
    text = None
    try:
        if scan.kind == "dicom":
            import pydicom
            text = _dicom_description(pydicom.dcmread(scan.source, stop_before_pixels=True, force=True))
        elif scan.kind == "nifti":
            import nibabel as nib
            raw = nib.load(scan.source).header.get("descrip")
            text = bytes(np.asarray(raw).item()).decode("utf-8", "replace") if raw is not None else ""
    except Exception:  # noqa: BLE001 - the description is a nicety; the scan itself was read already
        return None
    return _clean(text)


def _dicom_description(ds) -> str:
    return str(ds.get("SeriesDescription", "") or ds.get("StudyDescription", "") or "")


def _clean(text: str | None) -> str | None:
    text = " ".join((text or "").replace("\x00", " ").split())
    return text[:DESCRIPTION_CHARS] or None


# -- the page ------------------------------------------------------------------------------
def _e(text) -> str:
    return html.escape(str(text), quote=True)


def png_data_uri(rgb: np.ndarray) -> str:
    """An H x W x 3 uint8 image as a data: URI holding a PNG."""
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(np.asarray(rgb, dtype=np.uint8)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def utc_iso(when: datetime) -> str:
    """An aware datetime as UTC ISO 8601 to the second ('2026-12-02T15:18:05+00:00')."""
    if when.tzinfo is None or when.utcoffset() is None:
        raise ValueError("the analysis time must carry its time zone (datetime.now(timezone.utc))")
    return when.astimezone(timezone.utc).isoformat(timespec="seconds")


def _markdown_verdict(text: str) -> str:
    """report()'s verdict ('### Title\\nbody' or one line) as HTML."""
    out = []
    for line in text.splitlines():
        if line.startswith("### "):
            out.append(f'<h2 data-field="verdict">{_e(line[4:])}</h2>')
        elif line.strip():
            out.append(f"<p>{_e(line)}</p>")
    return "\n".join(out)


def _row(label: str, value: str, field: str, *, mono: bool = False) -> str:
    cls = ' class="mono"' if mono else ""
    return f'<tr><th>{_e(label)}</th><td data-field="{_e(field)}"{cls}>{_e(value)}</td></tr>'


def slice_ranges(indices: Sequence[int]) -> str:
    """Sorted slice numbers as runs: [0, 1, 2, 5, 7, 8] -> '0-2, 5, 7-8'."""
    runs: list[list[int]] = []
    for i in indices:
        if runs and i == runs[-1][1] + 1:
            runs[-1][1] = i
        else:
            runs.append([i, i])
    return ", ".join(f"{a}" if a == b else f"{a}-{b}" for a, b in runs)


def finding_rows(result: ScanResult) -> list[tuple[str, str, str]]:
    """(label, value, field) for the size table: the slice, its tumor area, the volume, the spacing."""
    scan, seg = result.scan, result.segmentation
    rows = []
    if scan.is_volume:
        where = f"{result.index} of {scan.n_slices} (numbered 0-{scan.n_slices - 1})"
        counts = result.slice_tumor_px
        if counts is not None and result.tumor_found and counts[result.index] == max(counts):
            where += ", the slice with the most tumor"
        rows.append(("Slice shown", where, "slice"))
    if seg is not None:
        area = describe_area(seg.area_px, seg.area_fraction, result.pixel_spacing_mm,
                             of="the slice" if scan.is_volume else "the image")
        rows.append(("Tumor on this slice" if scan.is_volume else "Tumor area", area, "area"))
    if result.slice_tumor_px is not None:
        with_tumor = [i for i, c in enumerate(result.slice_tumor_px) if c > 0]
        text = f"{result.tumor_slices} of {len(result.slice_tumor_px)}"
        rows.append(("Slices with tumor", text + (f": {slice_ranges(with_tumor)}" if with_tumor else ""),
                     "tumor_slices"))
        if result.volume_cm3 is not None:
            row, col = result.pixel_spacing_mm
            volume = (f"{result.volume_cm3:,.3f} cm³ ({result.volume_mm3:,.1f} mm³: {result.tumor_voxels:,} voxels "
                      f"of {mm_text(row)} x {mm_text(col)} x {mm_text(scan.slice_thickness_mm)} mm)")
        else:
            volume = f"{result.tumor_voxels:,} voxels; no voxel size in the header, so no cm³"
        rows.append(("Tumor volume", volume, "volume"))
    if result.pixel_spacing_mm:
        row, col = result.pixel_spacing_mm
        origin = {"header": f"from the {'DICOM' if scan.kind == 'dicom' else 'NIfTI'} header",
                  "entered": "as entered"}.get(result.spacing_source, "")
        rows.append(("Pixel spacing", f"{mm_text(row)} x {mm_text(col)} mm {origin}".rstrip(), "spacing"))
    else:
        rows.append(("Pixel spacing", "unknown: sizes in pixels and % of the image only", "spacing"))
    if seg is not None:
        rows.append(("Threshold", f"{seg.threshold:.2f} (tumor probability)", "threshold"))
    return rows


def _tumor_type(result: ScanResult) -> str:
    probs = result.analysis.class_probabilities
    if not probs:
        return ""
    best = result.analysis.predicted_class
    rows = "\n".join(
        f'<tr><th>{"<strong>" if name == best else ""}{_e(name)}{"</strong>" if name == best else ""}</th>'
        f'<td class="num" data-field="p:{_e(name)}">{p:.1%}</td></tr>'
        for name, p in sorted(probs.items(), key=lambda kv: -kv[1]))
    where = f"slice {result.index}" if result.scan.is_volume else "the image"
    return (f'<h2>Tumor type</h2>\n<p>Classifier on {_e(where)}: <strong data-field="tumor_type">{_e(best)}</strong>'
            f"</p>\n<table>{rows}</table>")


def _models(models: Sequence[ModelSummary]) -> str:
    if not models:
        return ""
    rows = []
    for m in models:
        scores = "; ".join(f"{label} {value:.4f}" + (f" (n={n:,})" if n is not None else "")
                           for label, value, n in m.scores) or "not scored (no eval.json)"
        test = f" on {m.test_set}" if m.test_set and m.scores else ""
        rows.append(f'<tr><th>{_e(m.role)}</th><td data-field="model:{_e(m.name)}">{_e(m.title)}<br>'
                    f'<span class="mono">{_e(m.name)}, weights {_e(m.version)}</span></td>'
                    f'<td data-field="scores:{_e(m.name)}">{_e(scores + test)}</td></tr>')
    return ("<h2>Models</h2>\n<table><tr><th>Role</th><th>Model, version (weights SHA-256)</th>"
            "<th>Test scores</th></tr>\n" + "\n".join(rows) + "</table>")


def render_report(result: ScanResult, *, source_sha256: str, models: Sequence[ModelSummary] = (),
                  created: datetime | None = None, source_name: str | None = None,
                  description: str | None = None) -> str:
    """The one-page HTML report of `result`.

    source_sha256: the hex SHA-256 of the bytes analysed; models: the summaries of the models that ran
    (`model_summary`); created: when the analysis ran (aware; default now), shown in UTC;
    source_name: the file's name as the user knows it (default: the scan's file name);
    description: the header's description (default: `header_description(result.scan)`)."""
    digest = str(source_sha256).lower()
    if len(digest) != 64 or any(c not in "0123456789abcdef" for c in digest):
        raise ValueError(f"source_sha256 must be 64 hex digits, not {source_sha256!r}")
    when = utc_iso(created if created is not None else datetime.now(timezone.utc))
    scan, seg = result.scan, result.segmentation
    name = source_name if source_name is not None else (Path(scan.source).name if scan.source else "(no file name)")
    description = header_description(scan) if description is None else description
    verdict, _ = report(result)

    picture = result.analysis.image if seg is None else overlay_outline(result.analysis.image, seg.mask)
    h, w = picture.shape[:2]
    caption = (f"Slice {result.index} of {scan.n_slices} (numbered 0-{scan.n_slices - 1})" if scan.is_volume
               else "The image") + f", {w} x {h} px"
    caption += ": tumor outline in red." if seg is not None and seg.area_px else (
        ": no tumor outlined." if seg is not None else
        ": not analyzed (the scope check refused it)." if result.refused else ": no segmenter, no outline.")

    inputs = [_row("File", name, "source_name"), _row("Kind", scan.describe(), "kind")]
    if description:
        inputs.append(_row("Description", description, "description"))
    inputs += [_row("SHA-256", digest, "sha256", mono=True), _row("Analysed (UTC)", when, "created")]
    notes = [n for n in [*scan.notes, scan.nonfinite_note(), *result.notes] if n]
    notes_html = ("<h2>Notes</h2>\n<ul>" + "".join(f"<li>{_e(n)}</li>" for n in notes) + "</ul>") if notes else ""
    findings = "\n".join(_row(label, value, key) for label, value, key in finding_rows(result))

    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta http-equiv="Content-Security-Policy" content="{_e(CSP)}">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>TumorLens report: {_e(name)}</title>
<style>{STYLE}</style>
</head>
<body>
<h1>TumorLens scan report</h1>
<p class="ruo" data-field="research_use">{_e(RESEARCH_USE)}</p>
<table>{"".join(inputs)}</table>
<div class="grid">
<figure><img src="{png_data_uri(picture)}" alt="{_e(caption)}" width="{w}" height="{h}">
<figcaption data-field="caption">{_e(caption)}</figcaption></figure>
<div>
<div class="verdict">{_markdown_verdict(verdict)}</div>
<table>{findings}</table>
{_tumor_type(result)}
</div>
</div>
{_models(models)}
{notes_html}
<footer>Made by TumorLens {_e(_tumorlens_version())}. {_e(RESEARCH_USE)}</footer>
</body>
</html>
"""


def write_report(result: ScanResult, out: str | Path, *, source_sha256: str | None = None,
                 models: Sequence[ModelSummary] = (), created: datetime | None = None,
                 source_name: str | None = None, description: str | None = None) -> Path:
    """`render_report` written to `out` (UTF-8); without `source_sha256`, that of the file
    `result.scan.source` (read again now: pass the digest of the bytes analysed when they may have
    changed). Returns `out`."""
    if source_sha256 is None:
        if not result.scan.source or not Path(result.scan.source).is_file():
            raise ValueError("no source_sha256 given and the scan has no file to hash")
        source_sha256 = sha256_of(Path(result.scan.source))
    text = render_report(result, source_sha256=source_sha256, models=models, created=created,
                         source_name=source_name, description=description)
    out = Path(out)
    out.write_text(text, encoding="utf-8")
    return out


def _tumorlens_version() -> str:
    from importlib.metadata import PackageNotFoundError, version
    try:
        return version("tumorlens")
    except PackageNotFoundError:
        return "(version unknown)"


__all__ = ["ModelSummary", "eval_scores", "header_description", "model_summary", "png_data_uri", "render_report",
           "slice_ranges", "utc_iso", "write_report"]
