"""The Space's app as a real server for a benchmark: `python space/app.py --port P` in a subprocess
(offline, the shipped models), waited for until it answers, always stopped at the end; and what the
machine was doing before it started (cores, load average, the processes using the CPU), so a
figure measured beside a training run says so."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from ..paths import PROJECT_ROOT

READY_TIMEOUT_S = 300       # model loading, and a first runtime measurement on a new machine
BUSY_SHARE = 0.3            # a process using this share of one core counts as a heavy one
BUSY_MACHINE_SHARE = 0.25   # the machine is busy when this share of all its CPU time was in use


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class AppServer:
    """`with AppServer(seg, cls) as server:` ... `server.url`. Stopped (its process group) on leaving,
    also on an error or Ctrl-C; `startup_s` is how long it took to answer."""

    def __init__(self, seg_model: str, cls_model: str, *, concurrency: int | None = None,
                 threads: int | None = None, ready_timeout: float = READY_TIMEOUT_S):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.command = [sys.executable, str(PROJECT_ROOT / "space" / "app.py"), "--port", str(self.port),
                        "--seg-model", str(seg_model), "--cls-model", str(cls_model)]
        self.env = {**os.environ, "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
                    "PYTHONUNBUFFERED": "1"}
        if concurrency is not None:
            self.env["TUMORLENS_CONCURRENCY"] = str(concurrency)
        if threads is not None:  # torch reads it at start; the ONNX sessions follow torch's count
            self.env["OMP_NUM_THREADS"] = str(threads)
        self.ready_timeout = ready_timeout
        self.cache_dir: str | None = None  # the server's Gradio cache (uploads, outputs), removed on stop
        self.proc: subprocess.Popen | None = None
        self.startup_s: float | None = None
        self._log = None

    def __enter__(self) -> "AppServer":
        self._log = tempfile.NamedTemporaryFile("w+", prefix="tumorlens-app-", suffix=".log", delete=False)
        self.cache_dir = tempfile.mkdtemp(prefix="tumorlens-app-cache-")
        start = time.perf_counter()
        # its own process group: Ctrl-C here does not reach it, and stopping it takes its children too
        env = {**self.env, "GRADIO_TEMP_DIR": self.cache_dir}
        self.proc = subprocess.Popen(self.command, cwd=PROJECT_ROOT, env=env, stdout=self._log,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        self.startup_s = time.perf_counter() - start
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.ready_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the app exited with code {self.proc.returncode} before answering:\n"
                                   f"{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/gradio_api/info", timeout=5) as response:
                    if response.status == 200:
                        return
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                pass
            time.sleep(0.5)
        raise TimeoutError(f"the app did not answer within {self.ready_timeout:.0f} s:\n{self.log_tail()}")

    def log_tail(self, chars: int = 3000) -> str:
        if self._log is None:
            return ""
        self._log.flush()
        return Path(self._log.name).read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)  # the group this object started, by its id
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=15)
            except ProcessLookupError:
                pass
        if self._log is not None:
            self._log.close()
            Path(self._log.name).unlink(missing_ok=True)
            self._log = None
        if self.cache_dir is not None:
            shutil.rmtree(self.cache_dir, ignore_errors=True)
            self.cache_dir = None


# -- what else the machine was doing ---------------------------------------------------------------
def _cpu_ticks() -> dict[int, tuple[int, str]]:
    """pid -> (user + system clock ticks so far, command line) for every readable process."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:
            continue
        out[int(entry.name)] = (int(fields[11]) + int(fields[12]), cmd or entry.name)
    return out


def _cpu_times() -> tuple[int, int] | None:
    """(busy, total) clock ticks of all CPUs so far (/proc/stat), None where it cannot be read."""
    try:
        fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return sum(fields[:8]) - idle, sum(fields[:8])


def cpu_busy_share(before: tuple[int, int] | None, after: tuple[int, int] | None) -> float | None:
    """Share of all CPU time that was busy between two `_cpu_times()` readings."""
    if before is None or after is None or after[1] <= before[1]:
        return None
    return (after[0] - before[0]) / (after[1] - before[1])


def busy_processes(interval: float = 1.0, share: float = BUSY_SHARE, stats: dict | None = None) -> list[dict]:
    """Processes that used at least `share` of a core over `interval` seconds (this one excluded);
    `stats` (if given) gets the machine's busy CPU share over the same interval."""
    hz = os.sysconf("SC_CLK_TCK")
    before, cpu_before = _cpu_ticks(), _cpu_times()
    time.sleep(interval)
    after = _cpu_ticks()
    if stats is not None:
        stats["cpu_busy_share"] = cpu_busy_share(cpu_before, _cpu_times())
    busy = []
    for pid, (ticks, cmd) in after.items():
        used = (ticks - before.get(pid, (ticks, ""))[0]) / hz / interval
        if used >= share and pid != os.getpid():
            busy.append({"pid": pid, "cpu_share": round(used, 2), "command": cmd[:160]})
    return sorted(busy, key=lambda p: -p["cpu_share"])


def machine_state() -> dict:
    """Cores, load average and the heavy processes running before the benchmark starts anything."""
    try:
        from ..hardware import hardware_summary
        hardware = hardware_summary()
    except ImportError:
        hardware = {}
    stats: dict = {}
    busy = busy_processes(stats=stats)
    load = os.getloadavg()
    share = stats.get("cpu_busy_share")
    # the CPU's own busy share over that second decides; the load average only where /proc/stat is
    # missing (on these VMs it reads above 1 with both cores idle)
    heavy = bool(busy) or (share >= BUSY_MACHINE_SHARE if share is not None else load[0] >= 0.5)
    return {"hardware": hardware, "cores": os.cpu_count(), "load_average_before": [round(x, 2) for x in load],
            "cpu_busy_share_before": None if share is None else round(share, 3),
            "busy_processes_before": busy, "another_heavy_process": heavy}
