"""What this machine is and what it runs best: the CPU probe, the numeric precision per machine,
and the one thread default. The ground floor: imports nothing from TumorLens but its errors.

Precision: bf16 where the hardware does it natively, fp32 elsewhere. Measured (torch 2.14.1,
2 threads): on an AVX-512 bf16 CPU, bf16 autocast + channels_last is 2-4x faster than fp32; on an
AVX2-only CPU, bf16 autocast is 10x *slower* (emulated)."""

from __future__ import annotations

import math
import os
import platform
from pathlib import Path

import torch

from .errors import ConfigError

BF16_CPU_FLAGS = ("avx512_bf16", "amx_bf16")
PRECISIONS = ("auto", "bf16", "fp32")
THREADS_ENV = "TUMORLENS_THREADS"


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return set()
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_model(cpuinfo: str | None = None) -> str:
    if cpuinfo is None:
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return platform.processor() or platform.machine()
    for line in cpuinfo.splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def pick_precision(requested: str = "auto", device: str | torch.device = "cpu", flags: set[str] | None = None) -> str:
    """'auto' -> 'bf16' on CUDA and on CPUs with AVX-512 bf16 or AMX, else 'fp32'."""
    if requested not in PRECISIONS:
        raise ConfigError(f"precision must be auto, bf16 or fp32, not {requested!r}")
    if requested != "auto":
        return requested
    if torch.device(device).type == "cuda":
        return "bf16"
    flags = cpu_flags() if flags is None else flags
    return "bf16" if any(f in flags for f in BF16_CPU_FLAGS) else "fp32"


def default_threads() -> int:
    """Torch threads when none are asked for: $TUMORLENS_THREADS (a positive whole number), else
    all cores. The one thread default for training, tuning and the benchmarks."""
    value = os.environ.get(THREADS_ENV, "").strip()
    if not value:
        return os.cpu_count() or 1
    if not value.isdigit() or int(value) < 1:
        raise ConfigError(f"${THREADS_ENV} must be a positive whole number, not {value!r}")
    return int(value)


CGROUP_ROOT = Path("/sys/fs/cgroup")


def cgroup_cores(root: Path = CGROUP_ROOT) -> float | None:
    """The CPU quota of this process's cgroup in cores (v2 cpu.max, else v1 cfs quota / period); None
    when unlimited or unknown. A container (a Space) may see all the host's cores but run on 2."""
    try:
        quota, period = (root / "cpu.max").read_text().split()[:2]
    except (OSError, ValueError):
        try:
            quota = (root / "cpu" / "cpu.cfs_quota_us").read_text().strip()
            period = (root / "cpu" / "cpu.cfs_period_us").read_text().strip()
        except OSError:
            return None
    if quota in ("max", "-1") or not quota.lstrip("-").isdigit() or not period.isdigit() or int(period) <= 0:
        return None
    return int(quota) / int(period) if int(quota) > 0 else None


def usable_cores(root: Path = CGROUP_ROOT) -> int:
    """Cores this process may use: its CPU affinity, capped by the cgroup quota (rounded up)."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = cgroup_cores(root)
    return max(1, min(cores, math.ceil(quota)) if quota else cores)


def worker_threads(concurrency: int, cores: int | None = None) -> int:
    """Torch / ONNX Runtime threads per model call for a server running `concurrency` calls at once:
    the usable cores shared out, at least 1. More threads than cores oversubscribes the CPU, and every
    parallel op then waits for a descheduled thread: on 2 cores with one held by another process, in a
    worker thread as the app runs them, the segmenter took 145 ms p50 with 2 threads and 74 ms with 1,
    the classifier 67 and 23 ms (tumorlens.bench.app_profile). Set it (torch.set_num_threads) before
    the models load: ONNX sessions and the measured runtime choice read torch's count when built."""
    cores = usable_cores() if cores is None else cores
    return max(1, cores // max(1, int(concurrency)))


def hardware_summary(device: str | torch.device = "cpu") -> dict:
    dev = torch.device(device)
    flags = cpu_flags()
    info = {
        "device": dev.type,
        "cpu": cpu_model(),
        "avx512_bf16": "avx512_bf16" in flags,
        "amx_bf16": "amx_bf16" in flags,
        "avx512f": "avx512f" in flags,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
    }
    if dev.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(dev)
    return info
