"""Tiny real-data training runs shared by the model tests (a few steps on a handful of BRISC slices)."""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "train"))


def train_tiny(kind: str, workdir: Path) -> tuple[Path, Path]:
    """Run the real training script for 2 steps on 12 slices; returns (best fp32 folder, shipped fp16 folder)."""
    import train_classifier
    import train_segmenter
    run_dir, out = workdir / f"run-{kind}", workdir / f"out-{kind}"
    argv = ["--run-dir", str(run_dir), "--out", str(out), "--limit", "12", "--max-steps", "2",
            "--batch-size", "4", "--skip-eval", "--threads", "2"]
    assert (train_segmenter if kind == "segmenter" else train_classifier).main(argv) == 0
    return run_dir / "best", out
