"""What one request may cost, checked from a file's header before any pixel is decoded.

A `RequestBudget` is checked from the header (PIL's size and mode, the DICOM header read without its pixel data, the NIfTI header) before any
pixel is decoded; over it, `BudgetError` (a DataError) says the limit, the file's size and what to do:

                              APP_BUDGET (the web app)     CLI_BUDGET (predict; read_scan's default)
  pixels per slice            4,194,304 (2048 x 2048)      40,000,000 (preprocess.MAX_IMAGE_PIXELS)
  decoded bytes per file      128 MB                       256 MB
  pixels x slices per file    33,554,432 (e.g. 512x512x128) 67,108,864 (MAX_VOLUME_VOXELS)
  slices per whole-volume run 64                           no limit

Why these numbers: every output the app returns (outline, mask, heatmap, probability map) is at the
slice's own resolution, so a slice's cost grows with its pixels: measured (bench/request_budget.py)
at about 110 bytes a pixel end to end (a 4096 x 4096 16-bit PNG took 1.8 GB over the loaded app), so
2048 x 2048 keeps a request near 450 MB; MRI slices are 256-1024 px a side, so none is refused (the
6300 x 6300 16-bit "bomb" is, from its header; a phone photo of a film must be scaled down). Decoded bytes are width x height x slices x the bytes a
value takes once decoded (PIL's mode for images, float32 for DICOM and NIfTI). A model call costs the
same for any slice size (it sees a fixed input), about 0.1-0.2 s a slice on two CPU cores, so 64
slices keep a whole-volume request near 10 s; longer volumes run whole with `tumorlens predict`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from .errors import BudgetError, DataError
from .decode import MAX_IMAGE_PIXELS, check_image_size, mode_bytes

# What one web request may cost (see the module docstring for why)
APP_MAX_IMAGE_PIXELS = 2048 * 2048
APP_MAX_DECODED_BYTES = 128 * 2**20
APP_MAX_TOTAL_PIXELS = 2 ** 25
APP_MAX_VOLUME_SLICES = 64
CLI_MAX_DECODED_BYTES = 256 * 2**20
CLI_COMMAND = "tumorlens predict {file} --out DIR"


@dataclass(frozen=True)
class RequestBudget:
    """What reading (and, for volumes, analyzing) one file may cost; checked from its header."""

    max_image_pixels: int = APP_MAX_IMAGE_PIXELS        # pixels of one slice
    max_decoded_bytes: int = APP_MAX_DECODED_BYTES      # the decoded array(s), at the dtype they decode to
    max_total_pixels: int = APP_MAX_TOTAL_PIXELS        # pixels x slices of one file
    max_volume_slices: int | None = APP_MAX_VOLUME_SLICES  # slices one whole-volume analysis segments

    def check(self, header: "ScanHeader", name: str | None = None) -> None:
        """BudgetError when reading the file `header` describes would cost more than this budget."""
        w, h, n = header.width, header.height, header.slices
        if header.kind == "image":  # the plain-image checks (and wording) are preprocess's
            try:
                check_image_size(name, w, h, header.mode or "L", max_pixels=self.max_image_pixels,
                                 max_bytes=self.max_decoded_bytes)
            except DataError as exc:
                raise BudgetError(name, exc.reason) from None
            return
        what = f"{w}x{h}" + (f"x{n}" if n > 1 else "")
        if w * h > self.max_image_pixels:
            raise BudgetError(name, f"slices are {w}x{h} ({w * h:,} pixels), over the {self.max_image_pixels:,} "
                                    "pixel limit per slice here; resample the scan to a smaller grid")
        if header.total_pixels > self.max_total_pixels:
            raise BudgetError(name, f"the scan is {what} ({header.total_pixels:,} voxels), over the "
                                    f"{self.max_total_pixels:,} voxel limit per file here; crop or resample it, "
                                    f"or run `{cli_command(name)}` on your own machine")
        if header.decoded_bytes > self.max_decoded_bytes:
            raise BudgetError(name, f"the scan is {what}, {header.decoded_bytes / 2**20:,.0f} MB once decoded, over "
                                    f"the {self.max_decoded_bytes / 2**20:,.0f} MB decoding limit per file here; "
                                    f"crop or resample it, or run `{cli_command(name)}` on your own machine")

    def check_whole_volume(self, n_slices: int, name: str | None = None) -> None:
        """BudgetError when a whole-volume analysis of `n_slices` slices is over `max_volume_slices`."""
        if self.max_volume_slices is not None and n_slices > self.max_volume_slices:
            raise BudgetError(name, f"this volume has {n_slices} slices; whole-volume mode analyzes at most "
                                    f"{self.max_volume_slices} slices per request here. Analyze one slice at a "
                                    f"time (untick whole volume), or run `{cli_command(name)}` for the whole volume")


def cli_command(name: str | None) -> str:
    """The batch command that analyzes file `name` (its base name only) whole."""
    return CLI_COMMAND.format(file=Path(name).name if name else "FILE")


APP_BUDGET = RequestBudget()
CLI_BUDGET = RequestBudget(MAX_IMAGE_PIXELS, CLI_MAX_DECODED_BYTES, 2 ** 26, None)


@dataclass(frozen=True)
class ScanHeader:
    """What a file's header says about its size, read without decoding a pixel."""

    kind: str
    width: int
    height: int
    slices: int = 1
    bytes_per_value: int = 4   # once decoded
    mode: str | None = None    # plain images: PIL's mode

    @property
    def total_pixels(self) -> int:
        return self.width * self.height * self.slices

    @property
    def decoded_bytes(self) -> int:
        if self.kind == "image":
            return self.width * self.height * mode_bytes(self.mode or "L")
        return self.total_pixels * self.bytes_per_value
