"""The verdict and size text of one analysis, as the app, the API, the CLI report and the HTML report
show them: `report(result)` -> (verdict as Markdown, size as text).

- the verdict: tumor found / no tumor found; "Uncertain" when the segmenter and the tumor-type classifier
  contradict each other on a slice (`disagreement`); "Not analyzed" when the scope check refused the
  upload (`refusal`), with the way to analyze it anyway;
- the size: area in px and % (mm² and cm² with a pixel spacing), the spacing's origin, the volume in
  voxels and cm³ in whole-volume mode, non-finite pixels, the scope score, the analysis's notes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from .inference import Analysis
from .scope_gate import ScopeResult

if TYPE_CHECKING:  # the result type only: scan_analysis does not import this module
    from .scan_analysis import ScanResult

# a calibrated probability at which the classifier's word contradicts the segmenter's (see `disagreement`)
DISAGREE_CONFIDENCE = 0.8
NO_TUMOR = "no_tumor"
ANALYZE_ANYWAY_HINT = ("Tick **Analyze anyway** (API: `analyze_anyway=True`; CLI: `--no-scope-check`) to run the "
                       "models regardless.")


def describe_area(px: int, fraction: float, spacing, of: str = "the image") -> str:
    """'1,234 px (0.47% of the image) = 308.5 mm² (3.09 cm²)'; spacing: mm per pixel, or (row, col)."""
    text = f"{px:,} px ({100 * fraction:.2f}% of {of})"
    if spacing:
        row, col = (spacing, spacing) if np.isscalar(spacing) else spacing
        mm2 = px * float(row) * float(col)
        text += f" = {mm2:,.1f} mm² ({mm2 / 100:,.2f} cm²)"
    return text


def mm_text(x: float) -> str:
    return f"{x:.4g}"


def report(result: ScanResult) -> tuple[str, str]:
    """(verdict as Markdown, size as text) for the page and the API."""
    seg, scan = result.segmentation, result.scan
    if result.refused:
        return refusal(result.scope), ""
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
        lines.append(f"Pixel spacing {mm_text(row)} x {mm_text(col)} mm {origin}".rstrip())
    else:
        lines.append("No pixel spacing: size in pixels and % only (enter mm per pixel for mm²).")
    if result.slice_tumor_px is not None:
        counts = result.slice_tumor_px
        with_tumor = result.tumor_slices
        text = f"Volume: {result.tumor_voxels:,} voxels on {with_tumor} of {len(counts)} slices"
        if with_tumor:
            text += f" (largest on slice {int(np.argmax(counts))})"
        if result.volume_mm3 is not None:
            row, col = result.pixel_spacing_mm
            text += (f" = {result.volume_mm3:,.1f} mm³ ({result.volume_cm3:,.3f} cm³; voxel "
                     f"{mm_text(row)} x {mm_text(col)} x {mm_text(scan.slice_thickness_mm)} mm)")
        else:
            text += "; no voxel size in the header, so no cm³"
        lines.append(text)
    if scan.nonfinite:
        lines.append(scan.nonfinite_note())
    if result.scope is not None:
        lines.append(f"Scope check: {result.scope.message}")
    lines += result.notes
    if result.slice_tumor_px is not None:
        verdict = (f"### Tumor found\nOn {result.tumor_slices} of {scan.n_slices} slices." if result.tumor_found
                   else f"### No tumor found\nIn any of the {scan.n_slices} slices.")
    else:
        verdict = disagreement(result.analysis) or (
            f"### Tumor found\nOn {where}." if result.tumor_found else f"### No tumor found\nOn {where}.")
    if result.analyzed_anyway:
        verdict += f"\n\n**Analyzed anyway:** {result.scope.message} Read this result with that in mind."
    return verdict, "\n".join(lines)


def refusal(scope: ScopeResult) -> str:
    """The verdict (Markdown) for an upload the scope check refused: no tumor verdict, the score, the way on."""
    return f"### Not analyzed: this does not look like a brain MRI slice\n{scope.message}\n\n{ANALYZE_ANYWAY_HINT}"


def disagreement(analysis: Analysis, confident: float = DISAGREE_CONFIDENCE) -> str | None:
    """An 'uncertain' verdict (Markdown) when the two models contradict each other on one slice: a mask
    where the tumor-type classifier is confident there is no tumor, or no mask where it is confident
    there is one; None when they agree or there is only one model. Both numbers are shown."""
    probs, seg = analysis.class_probabilities, analysis.segmentation
    if not probs or seg is None or NO_TUMOR not in probs:
        return None
    healthy = probs[NO_TUMOR]
    if analysis.tumor_found and healthy >= confident:
        return (f"### Uncertain: small finding, the classifier disagrees\nThe segmenter outlined {seg.area_px:,} px, "
                f"but the tumor-type classifier says no tumor with probability {healthy:.2f}. Treat the outline "
                "with caution.")
    tumor_class = analysis.predicted_class
    if not analysis.tumor_found and tumor_class != NO_TUMOR and probs[tumor_class] >= confident:
        return (f"### Uncertain: no outline, the classifier disagrees\nThe segmenter found nothing at its threshold, "
                f"but the tumor-type classifier says {tumor_class} with probability {probs[tumor_class]:.2f}. "
                "A lower threshold may show the region.")
    return None


__all__ = ["ANALYZE_ANYWAY_HINT", "DISAGREE_CONFIDENCE", "describe_area", "disagreement", "mm_text", "refusal",
           "report"]
