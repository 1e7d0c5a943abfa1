"""What one web request costs: python -m tumorlens.bench.request_budget [--skip-model-cases]

Builds, in a temporary folder, the uploads that used to cost the most and runs each through the app's
own functions (`tumorlens.app.inspect_for_ui` then `analyze_for_ui`, with the shipped models when
present), one fresh subprocess per case so each peak is its own:

- bomb: an ~80 KB 16-bit PNG of 6300 x 6300 px (just under the old 40 Mpx cap);
- long volume: a 16 x 16 x 1024-slice NIfTI, in whole-volume mode, then one slice of it;
- the edges of the budget: a 4096 x 4096 16-bit PNG (the largest slice the app takes) and a
  64-slice volume in whole-volume mode (the most slices one request segments);
- NaN/inf: a float TIFF (a real-looking slice) with NaN and +-inf pixels sprinkled in, against its
  clean original: the masks must agree.

Prints, per case: outcome (answered / refused and why), wall seconds, the process's RSS once the
models are loaded and its peak RSS (getrusage) over the whole run. A benchmark, not a test: the
figures depend on the machine. Gradio's own work (upload, PNG encoding of the outputs) is not in it."""

from __future__ import annotations

import argparse
import json
import os
import resource
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np


# -- builders (the tests use them too) -------------------------------------------------------
def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def write_png_bomb(path: Path, side: int = 6300, bit_depth: int = 16) -> Path:
    """A grayscale PNG of `side` x `side` zeros, streamed (never held in memory): ~80 KB at 6300 px."""
    comp = zlib.compressobj(9)
    row = b"\x00" * (1 + side * bit_depth // 8)  # filter byte + one row of zeros
    parts = [comp.compress(row) for _ in range(side)]
    data = b"".join(parts) + comp.flush()
    ihdr = struct.pack(">IIBBBBB", side, side, bit_depth, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IDAT", data) + _chunk(b"IEND", b""))
    return path


def write_long_nifti(path: Path, slices: int = 1024, side: int = 16, seed: int = 0) -> Path:
    """A `side` x `side` x `slices` int16 NIfTI of noise with a bright blob (1 mm voxels)."""
    import nibabel as nib
    rng = np.random.default_rng(seed)
    vol = rng.integers(0, 400, (side, side, slices)).astype(np.int16)
    vol[side // 4: side // 2, side // 4: side // 2, :] += 2000
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(path))
    return path


def gray_slice(size: int = 256, seed: int = 0) -> np.ndarray:
    """A generated float32 'MRI slice': a head-like oval, a gradient, noise and a bright blob."""
    rng = np.random.default_rng(seed)
    yy, xx = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    r = np.hypot(xx / 0.85, yy / 0.95)
    img = np.where(r < 1, 400 + 150 * xx + 100 * yy, 0.0) + np.where((r > 0.88) & (r < 1), 300, 0)
    img += 900 * np.exp(-((xx - 0.25) ** 2 + (yy + 0.2) ** 2) / 0.02) + rng.normal(0, 20, img.shape) * (r < 1)
    return img.astype(np.float32)


def write_nan_tiffs(folder: Path, source: np.ndarray | None = None, n_bad: int = 200, seed: int = 0):
    """(clean.tif, dirty.tif): float32 TIFFs, the dirty one with `n_bad` NaN / +inf / -inf pixels."""
    import tifffile
    clean = gray_slice() if source is None else np.asarray(source, np.float32)
    dirty = clean.copy()
    spots = np.random.default_rng(seed).choice(clean.size, n_bad, replace=False)
    third = n_bad // 3
    dirty.flat[spots[:third]] = np.nan
    dirty.flat[spots[third:2 * third]] = np.inf
    dirty.flat[spots[2 * third:]] = -np.inf
    tifffile.imwrite(folder / "clean.tif", clean)
    tifffile.imwrite(folder / "dirty.tif", dirty)
    return folder / "clean.tif", folder / "dirty.tif"


# -- one case, in its own process ------------------------------------------------------------
def _rss_mb() -> float:
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        return float("nan")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def _pipeline():
    from tumorlens.inference import Pipeline
    from tumorlens.registry import default_model
    seg, clf = default_model("segmenter"), default_model("classifier")
    if not seg:
        return None
    return Pipeline.from_pretrained(seg, clf)


def _run_case(case: str, file: str, whole_volume: bool, slice_index: int) -> dict:
    """In this process: load the models, warm them up, then inspect + analyze `file` as the app does."""
    import gradio as gr
    from tumorlens.app import Request, analyze_for_ui, inspect_for_ui
    from tumorlens.app_actions import PAGE_OUTPUTS
    pipeline = _pipeline()
    if pipeline is not None:  # warm up: the first call pays for lazy initialisation
        pipeline.analyze(np.zeros((64, 64, 3), np.uint8))
    loaded_rss, loaded_peak = _rss_mb(), _peak_mb()
    out = {"case": case, "models": pipeline is not None, "rss_loaded_mb": round(loaded_rss),
           "peak_before_mb": round(loaded_peak)}
    start = time.perf_counter()
    try:
        inspect_for_ui(file)
        if pipeline is not None:
            result = analyze_for_ui(pipeline, Request(file, None, None, slice_index, whole_volume))
            verdict = result[PAGE_OUTPUTS.index("verdict")]
            out["outcome"] = "answered: " + verdict.splitlines()[0].lstrip("# ")
        else:
            out["outcome"] = "inspected (no model here)"
    except gr.Error as exc:
        out["outcome"] = f"refused: {exc.message}"
    out["wall_s"] = round(time.perf_counter() - start, 2)
    out["peak_mb"] = round(_peak_mb())
    return out


def _nan_case(clean: str, dirty: str) -> dict:
    from tumorlens.medical_io import read_scan
    out = {"case": "nan_inf_tiff"}
    a, b = read_scan(clean), read_scan(dirty)
    out["nonfinite_reported"] = b.nonfinite
    pipeline = _pipeline()
    if pipeline is None or pipeline.segmenter is None:
        out["outcome"] = "no segmenter here"
        return out
    ma = pipeline.segmenter.segment(a.rgb(0)).mask.astype(bool)
    mb = pipeline.segmenter.segment(b.rgb(0)).mask.astype(bool)
    union = (ma | mb).sum()
    out["mask_px_clean"], out["mask_px_dirty"] = int(ma.sum()), int(mb.sum())
    out["pixels_differing"] = int((ma ^ mb).sum())
    out["dice"] = round(float(2 * (ma & mb).sum() / (ma.sum() + mb.sum())), 4) if union else 1.0
    return out


def _subprocess(args: list[str]) -> dict:
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-m", "tumorlens.bench.request_budget", *args],
                          capture_output=True, text=True, env=env)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"case": args[1] if len(args) > 1 else args, "error": (proc.stderr or proc.stdout)[-800:]}
    return json.loads(lines[-1])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m tumorlens.bench.request_budget", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--case", help=argparse.SUPPRESS)
    p.add_argument("--file", help=argparse.SUPPRESS)
    p.add_argument("--whole-volume", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--slice-index", type=int, default=-1, help=argparse.SUPPRESS)
    p.add_argument("--clean", help=argparse.SUPPRESS)
    p.add_argument("--skip-edges", action="store_true", help="leave out the two at-the-limit cases (the slowest)")
    p.add_argument("--out", type=Path, default=None, help="also write request_budget.md into this folder")
    args = p.parse_args(argv)
    if args.case == "nan":
        print(json.dumps(_nan_case(args.clean, args.file)))
        return 0
    if args.case:
        print(json.dumps(_run_case(args.case, args.file, args.whole_volume, args.slice_index)))
        return 0

    from tumorlens.medical_io import APP_BUDGET
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        bomb = write_png_bomb(d / "bomb16.png")
        long_vol = write_long_nifti(d / "long.nii.gz")
        cases = [("bomb_png_6300px_16bit", bomb, True, -1), ("volume_1024_whole", long_vol, True, -1),
                 ("volume_1024_one_slice", long_vol, False, 512)]
        if not args.skip_edges:
            edge_png = d / "edge16.png"
            side = int(APP_BUDGET.max_image_pixels ** 0.5)
            from PIL import Image
            arr = (np.indices((side, side)).sum(0) % 4096).astype(np.uint16)  # not all zeros: real windowing
            Image.fromarray(arr).save(edge_png)
            cases += [(f"png_{side}px_16bit_at_limit", edge_png, True, -1),
                      (f"volume_{APP_BUDGET.max_volume_slices}_whole_at_limit",
                       write_long_nifti(d / "cap.nii.gz", APP_BUDGET.max_volume_slices), True, -1)]
        lines = [f"{'case':34} {'size':>9} {'wall s':>7} {'RSS loaded':>10} {'peak RSS':>9}  outcome"]
        print(lines[0])
        for name, path, whole, index in cases:
            r = _subprocess(["--case", name, "--file", str(path), "--slice-index", str(index)]
                            + (["--whole-volume"] if whole else []))
            if "error" in r:
                lines.append(f"{name:34} ERROR {r['error']}")
            else:
                size = f"{path.stat().st_size / 1024:,.0f} KB"
                lines.append(f"{name:34} {size:>9} {r['wall_s']:>7.2f} {r['rss_loaded_mb']:>7} MB "
                             f"{r['peak_mb']:>6} MB  {r['outcome'][:160]}")
            print(lines[-1])
        clean, dirty = write_nan_tiffs(d)
        r = _subprocess(["--case", "nan", "--clean", str(clean), "--file", str(dirty)])
        lines.append("nan_inf_tiff: " + json.dumps(r))
        print(lines[-1])
    if args.out is not None:
        load = os.getloadavg()[0]
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "request_budget.md").write_text(
            "# What one web request costs\n\n" + __doc__.split("\n\n", 1)[1] + "\n\n"
            f"`python -m tumorlens.bench.request_budget --out {args.out}`, {time.strftime('%Y-%m-%d %H:%M')}, "
            f"{os.cpu_count()} cores, load average at the end {load:.2f} (wall seconds stretch on a busy machine; "
            "peak memory does not).\n\n```\n" + "\n".join(lines) + "\n```\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
