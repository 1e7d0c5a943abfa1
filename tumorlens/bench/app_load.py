"""/analyze through the real app, alone and under load, with the answers checked:

    python -m tumorlens.bench.app_load [--requests 30] [--clients 20] [--per-client 5] [--out benchmarks]

Starts the Space's app (`python space/app.py`, the shipped models, offline) as a server, then:
- one request at a time: `--requests` sequential /analyze calls (gradio_client, upload to download)
  on different real 512 x 512 BRISC 2025 test slices: p50, p95, max; once with the client as we
  advise API users to make it (one TLS context), once with gradio_client's defaults,
  which build a new TLS context for every file sent or fetched (about 20 ms each, even over http://);
- under load: `--clients` clients in threads, each sending `--per-client` different slices, all at
  once: wall time, per-request p50 / p95, how many were answered; `--rounds` times, each round
  reported and all pooled for the goals;
- every returned mask compared with the one the same models give in this process
  (`Pipeline.analyze(rgb).segmentation.mask`): mismatching pixels counted ("right masks": 0);
- an in-process profile of one request's stages on the same slices (tumorlens.bench.app_profile).
The server is stopped at the end, also on an error. Records the machine and what else ran on it
(load average, busy processes): figures from a busy machine say so. Writes app_load.json and
app_load.md into --out and prints the table."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from .app_server import AppServer, machine_state

GOAL_SINGLE_P50_S = 0.3          # the goal for one request alone (512 px slice)
BEFORE_LOAD_P95_S = 11.2         # 20 x 5 p95 measured before the issue; the goal is at most half
LOAD_ROUNDS = 3                  # the load test's rounds, pooled for the goals
WARMUP_CALLS = 2                 # untimed calls first: lazy initialisation, the client's first upload
SLICE_SIDE = 512
SEED = 0
# single-request runs: result key, the client as the report names it
SINGLE_RUNS = (("single", "gradio_client, one TLS context"), ("single_defaults", "gradio_client defaults"))


# -- pure helpers (tested) ---------------------------------------------------------------------------
def percentiles(seconds) -> dict:
    """{"n", "p50_ms", "p95_ms", "max_ms"} of a list of durations in seconds (None values when empty)."""
    ms = np.asarray([s * 1000 for s in seconds], float)
    if ms.size == 0:
        return {"n": 0, "p50_ms": None, "p95_ms": None, "max_ms": None}
    return {"n": int(ms.size), "p50_ms": round(float(np.percentile(ms, 50)), 1),
            "p95_ms": round(float(np.percentile(ms, 95)), 1), "max_ms": round(float(ms.max()), 1)}


def mask_mismatch(returned: np.ndarray, expected: np.ndarray) -> int:
    """Pixels where two masks differ (a returned 0/255 image counts as on above 127); a mask of
    another shape differs everywhere (the larger of the two sizes)."""
    got = np.asarray(returned)
    got = got > 127 if got.dtype != bool else got
    if got.ndim == 3:  # an RGB(A) rendering of the mask: any channel on
        got = got[..., :3].any(axis=-1)
    want = np.asarray(expected, bool)
    if got.shape != want.shape:
        return int(max(got.size, want.size))
    return int(np.count_nonzero(got != want))


def read_mask(path: str | Path) -> np.ndarray:
    from PIL import Image
    with Image.open(path) as im:
        return np.asarray(im.convert("L")) > 127


def output_path(value) -> str | None:
    """The local file of one output as gradio_client returns it (a path, or a dict with one)."""
    if isinstance(value, dict):
        value = value.get("path") or value.get("value")
    return str(value) if value else None


def _seconds(ms) -> str:
    return "-" if ms is None else f"{ms / 1000:.3f}"


def busy_cause(machine: dict) -> str:
    """What made `machine_state` call the machine busy when no single process did."""
    share = machine.get("cpu_busy_share_before")
    return "load average" if share is None else f"the CPU {share:.0%} busy"


def _met(ok) -> str:
    return "-" if ok is None else ("yes" if ok else "**no**")


def goals(result: dict) -> list[tuple[str, str, bool | None]]:
    """(goal, measured, met) rows of the issue's done-when, for this run's configuration; the
    single-request goal once per client kind measured."""
    load = result["load"]
    rows = []
    for key, client in SINGLE_RUNS:
        single = result.get(key)
        if single is not None:
            rows.append((f"one request alone ({client}): p50 <= {GOAL_SINGLE_P50_S} s", f"{_seconds(single['p50_ms'])} s",
                         None if single["p50_ms"] is None else single["p50_ms"] / 1000 <= GOAL_SINGLE_P50_S))
    rounds = load.get("rounds") or []
    cfg = f"{load['clients']} clients x {load['per_client']} slices" + (f", {len(rounds)} rounds pooled" if rounds else "")
    worst = max((r["p95_ms"] for r in rounds if r["p95_ms"] is not None), default=None)
    all_answered = load["answered"] == load["requests"]
    rows.append((f"{cfg}: all answered", f"{load['answered']}/{load['requests']}", all_answered))
    rows.append((f"{cfg}: right masks (0 mismatching px)", f"{load['mismatch_px']:,} px in {load['wrong_masks']} masks",
                 load["wrong_masks"] == 0 and all_answered))
    limit = BEFORE_LOAD_P95_S / 2
    measured = f"{_seconds(load['p95_ms'])} s" + (f" (worst round {_seconds(worst)} s)" if worst is not None else "")
    rows.append((f"{cfg}: p95 <= {limit:.1f} s (half of {BEFORE_LOAD_P95_S} s)", measured,
                 None if load["p95_ms"] is None else load["p95_ms"] / 1000 <= limit))
    return rows


def render_markdown(result: dict) -> str:
    """The report: machine, goals, the API table and the in-process stage table."""
    m, server = result["machine"], result["server"]
    hw = m.get("hardware", {})
    busy = ", ".join(f"`{p['command'][:70]}` ({p['cpu_share']:.0%} of a core)" for p in m["busy_processes_before"])
    lines = ["# /analyze through the app: one request alone and under load", "",
             f"`{result['command']}`, {result['date']}", "",
             f"Machine: {hw.get('cpu', '?')}, {m['cores']} cores; load average before start "
             f"{m['load_average_before'][0]:.2f}"
             + (f", after {m['load_average_after'][0]:.2f}" if m.get("load_average_after") else "")
             + (f"; CPU busy {m['cpu_busy_share_before']:.0%} over the second before start. "
                if m.get("cpu_busy_share_before") is not None else ". ")
             + (f"**Another heavy process was running** ({busy or busy_cause(m)}): these figures are from a "
                "busy machine." if m["another_heavy_process"] else "No other heavy process was running."),
             f"Server: `space/app.py`, concurrency {server['concurrency']}, torch threads {server['threads']}, "
             f"answered after {server['startup_s']:.1f} s; models {', '.join(result['profile']['runtimes'].values())} "
             f"(segmenter flip TTA {'on' if result['profile']['segmenter_tta'] else 'off'}, classifier "
             f"{'on' if result['profile']['classifier_tta'] else 'off'}).", "",
             "## Goals (issue done-when)", "", "| goal | measured | met |", "|---|---|---|"]
    lines += [f"| {g} | {v} | {_met(ok)} |" for g, v, ok in goals(result)]
    lines += ["", "## Through the API (gradio_client, upload to downloaded outputs)", "",
              "| run | requests | answered | wrong masks (px) | wall s | p50 s | p95 s | max s |",
              "|---|---|---|---|---|---|---|---|"]
    runs = [(f"one request at a time ({client})", result[key]) for key, client in SINGLE_RUNS if result.get(key)]
    load = result["load"]
    cfg = f"{load['clients']} clients x {load['per_client']} slices"
    rounds = load.get("rounds") or []
    runs += [(f"{cfg}, round {i + 1}", r) for i, r in enumerate(rounds)]
    runs.append((f"{cfg} ({SINGLE_RUNS[0][1]} each)" + (f", {len(rounds)} rounds pooled (wall: their sum)"
                                                       if rounds else ""), load))
    for name, r in runs:
        wall = f"{r['wall_s']:.2f}" if r.get("wall_s") is not None else "-"
        lines.append(f"| {name} | {r['requests']} | {r['answered']} | {r['wrong_masks']} ({r['mismatch_px']:,}) | "
                     f"{wall} | {_seconds(r['p50_ms'])} | {_seconds(r['p95_ms'])} | {_seconds(r['max_ms'])} |")
    for key, client in SINGLE_RUNS:
        split = (result.get(key) or {}).get("split")
        if split and split["server"]["p50_ms"] is not None:
            lines += ["", f"One request alone ({client}), split (p50): upload {split['upload']['p50_ms']:.0f} ms, "
                          f"server {split['server']['p50_ms']:.0f} ms (queue, the handler, Gradio's pre/postprocessing, "
                          f"the result message, the client's polling), download of the image outputs "
                          f"{split['download']['p50_ms']:.0f} ms (gradio_client: one connection per file)."]
    lines += ["", "The two clients differ only in `ssl_verify`: gradio_client opens every upload and download with "
                  "a new httpx client, which loads the certificate store again (about 20 ms of CPU each here, even "
                  "over http://) unless it is handed one `ssl.SSLContext` (still verifying), as the README's API "
                  "section advises."]
    errors = [e for key, _ in SINGLE_RUNS for e in (result.get(key) or {}).get("errors", [])] + result["load"]["errors"]
    if errors:
        lines += ["", f"Errors ({len(errors)}): " + "; ".join(sorted(set(errors))[:5])]
    p = result["profile"]
    total = next(r for r in p["rows"] if r["group"] == "total")
    lines += ["", f"## In process: one request's stages ({p['slices']} slices, torch threads {p['torch_threads']})", "",
              "Stages add up to the total; parts break a stage down, checks time the app's own calls whole, "
              "what-ifs time what the app does not do today (none of these three is in the total).", "",
              "| stage | kind | p50 ms | p95 ms | share of total p50 |", "|---|---|---|---|---|"]
    for r in p["rows"]:
        share = f"{r['p50_ms'] / total['p50_ms']:.0%}" if r["group"] in ("stage", "part") and total["p50_ms"] else ""
        name = f"**{r['stage']}**" if r["group"] == "total" else r["stage"]
        lines.append(f"| {name} | {r['group']} | {r['p50_ms']} | {r['p95_ms']} | {share} |")
    overhead = result.get("api_overhead_ms")
    if overhead is not None:
        lines += ["", f"API overhead: one request's p50 through the API minus the in-process total p50 = "
                      f"{overhead:.0f} ms (upload, queue, Gradio's pre/postprocessing other than the PNGs, download; "
                      "the client runs on the same machine here)."]
    lines += ["", "Encoded sizes (p50 KB): " + ", ".join(f"{k} {v}" for k, v in p["encoded_kb_p50"].items()),
              "", "API clients call /analyze alone; the page also runs /explain (Grad-CAM) and the downloads after "
              "each analysis, in the same concurrency group, so a page user loads the server more than one API call."]
    return "\n".join(lines) + "\n"


# -- slices and reference masks ------------------------------------------------------------------------
def pick_slices(data_root: Path, n: int, side: int = SLICE_SIDE, seed: int = SEED) -> list[Path]:
    """`n` different side x side BRISC 2025 classification test slices (all four classes, shuffled with
    `seed`); repeats only when asked for more than there are."""
    from PIL import Image
    root = data_root / "brisc2025" / "classification_task" / "test"
    found = []
    for path in sorted(root.glob("*/*.jpg")):
        with Image.open(path) as im:
            if im.size == (side, side):
                found.append(path)
    if not found:
        raise FileNotFoundError(f"no {side} x {side} slices under {root}")
    order = np.random.default_rng(seed).permutation(len(found))
    return [found[order[i % len(found)]] for i in range(n)]


def reference_masks(pipeline, paths) -> dict[str, np.ndarray]:
    """The mask the same models give in this process, per path, read as the app reads an upload."""
    from ..medical_io import APP_BUDGET, read_scan
    out = {}
    for path in dict.fromkeys(map(str, paths)):
        scan = read_scan(path, budget=APP_BUDGET)
        out[path] = pipeline.analyze(scan.rgb(scan.n_slices // 2)).segmentation.mask
    return out


# -- requests ------------------------------------------------------------------------------------------
def make_client(url: str, download_dir: str, *, one_tls_context: bool = True):
    """A gradio_client Client; `one_tls_context`: handed one verifying `ssl.SSLContext` for all its
    connections, as the Space's README shows API users; else gradio_client's defaults."""
    import ssl
    from gradio_client import Client
    tls = {"ssl_verify": ssl.create_default_context()} if one_tls_context else {}
    return Client(url, verbose=False, download_files=download_dir, analytics_enabled=False, **tls)


def call_analyze(client, path: Path, expected: np.ndarray | None, threshold: float) -> dict:
    """One /analyze call (file, threshold, spacing): seconds, mismatching mask pixels, error. The
    threshold is sent as a number (the model's own, as the page sends it): Gradio's slider refuses None."""
    from gradio_client import handle_file
    start = time.perf_counter()
    try:
        outputs = client.predict(handle_file(str(path)), threshold, None, api_name="/analyze")
    except Exception as exc:  # noqa: BLE001 - a refused or failed request is a result to count
        return {"seconds": time.perf_counter() - start, "error": f"{exc.__class__.__name__}: {exc}"[:200]}
    seconds = time.perf_counter() - start
    mask_file = output_path(outputs[1])
    if mask_file is None:
        return {"seconds": seconds, "error": "no mask in the answer (refused by the scope check?)"}
    mismatch = None if expected is None else mask_mismatch(read_mask(mask_file), expected)
    return {"seconds": seconds, "mismatch_px": mismatch, "error": None}


def summarize_calls(calls: list[dict], wall_s: float | None = None) -> dict:
    answered = [c for c in calls if c["error"] is None]
    wrong = [c for c in answered if c.get("mismatch_px")]
    return {"requests": len(calls), "answered": len(answered), "wall_s": None if wall_s is None else round(wall_s, 3),
            **percentiles([c["seconds"] for c in answered]), "wrong_masks": len(wrong),
            "mismatch_px": int(sum(c["mismatch_px"] for c in wrong)),
            "errors": [c["error"] for c in calls if c["error"]]}


class TransferTimer:
    """Seconds gradio_client spends uploading the input and downloading the outputs (its Endpoint's
    `_upload_file` / `_download_file`, wrapped while in use; left alone where a version lacks them):
    splits one request's latency into upload, server and download. Totals over all threads, so only
    meaningful one request at a time."""

    PARTS = {"upload_s": "_upload_file", "download_s": "_download_file"}

    def __init__(self):
        self.spent = dict.fromkeys(self.PARTS, 0.0)
        self._lock, self._originals = threading.Lock(), {}

    def _timed(self, key: str, original):
        def call(endpoint, *args, **kwargs):
            start = time.perf_counter()
            try:
                return original(endpoint, *args, **kwargs)
            finally:
                with self._lock:
                    self.spent[key] += time.perf_counter() - start
        return call

    def __enter__(self) -> "TransferTimer":
        from gradio_client.client import Endpoint
        for key, name in self.PARTS.items():
            if callable(getattr(Endpoint, name, None)):
                self._originals[name] = getattr(Endpoint, name)
                setattr(Endpoint, name, self._timed(key, self._originals[name]))
        return self

    def __exit__(self, *exc) -> None:
        from gradio_client.client import Endpoint
        for name, original in self._originals.items():
            setattr(Endpoint, name, original)

    def snapshot(self) -> dict:
        with self._lock:
            return dict(self.spent)


def single_requests(url: str, paths, references: dict, warmup_paths, download_dir: str, threshold: float,
                    one_tls_context: bool = True) -> dict:
    """One request at a time; each split into upload, server (queue, the handler, Gradio's pre- and
    postprocessing, the result message) and download of the image outputs."""
    client = make_client(url, download_dir, one_tls_context=one_tls_context)
    for path in warmup_paths:
        call_analyze(client, path, None, threshold)
    calls = []
    with TransferTimer() as transfer:
        for path in paths:
            before = transfer.snapshot()
            call = call_analyze(client, path, references.get(str(path)), threshold)
            call.update({k: v - before[k] for k, v in transfer.snapshot().items()})
            calls.append(call)
    ok = [c for c in calls if c["error"] is None]
    split = {"upload": percentiles([c["upload_s"] for c in ok]), "download": percentiles([c["download_s"] for c in ok]),
             "server": percentiles([c["seconds"] - c["upload_s"] - c["download_s"] for c in ok])}
    return {**summarize_calls(calls), "split": split}


def concurrent_requests(url: str, batches: list[list[Path]], references: dict, download_dir: str,
                        threshold: float) -> dict:
    """One client per batch, each in its own thread sending its slices one after another; all clients
    connect first, then start together."""
    start_line = threading.Barrier(len(batches) + 1)
    calls: list[list[dict]] = [[] for _ in batches]
    finished = [0.0] * len(batches)

    def client_thread(i: int, batch: list[Path]):
        try:
            client = make_client(url, download_dir)
        except Exception as exc:  # noqa: BLE001
            client, error = None, f"cannot connect: {exc.__class__.__name__}: {exc}"[:200]
        start_line.wait()
        for path in batch:
            calls[i].append(call_analyze(client, path, references.get(str(path)), threshold) if client
                            else {"seconds": 0.0, "error": error})
        finished[i] = time.perf_counter()

    threads = [threading.Thread(target=client_thread, args=(i, b), daemon=True) for i, b in enumerate(batches)]
    for t in threads:
        t.start()
    start_line.wait()
    start = time.perf_counter()
    for t in threads:
        t.join()
    flat = [c for per in calls for c in per]
    out = summarize_calls(flat, max(finished) - start)
    return {**out, "clients": len(batches), "per_client": len(batches[0]) if batches else 0, "calls": flat}


def load_rounds(url: str, batches: list[list[Path]], references: dict, download_dir: str, threshold: float,
                rounds: int) -> dict:
    """`concurrent_requests` `rounds` times on the same server: each round's figures, and all rounds'
    requests pooled (what the goals read). One round on these shared VMs ranged from 2.8 to 5.8 s p95
    within minutes, so one round alone says little."""
    each = [concurrent_requests(url, batches, references, download_dir, threshold) for _ in range(rounds)]
    pooled = summarize_calls([c for r in each for c in r.pop("calls")])
    return {**pooled, "wall_s": round(sum(r["wall_s"] for r in each), 3), "clients": len(batches),
            "per_client": len(batches[0]) if batches else 0, "rounds": each}


# -- the run -------------------------------------------------------------------------------------------
def run(out: Path, *, requests: int = 30, clients: int = 20, per_client: int = 5, rounds: int = LOAD_ROUNDS,
        data_root: Path | None = None, concurrency: int | None = None, threads: int | None = None, argv=None) -> dict:
    import torch
    from ..inference import Pipeline
    from ..paths import data_home
    from ..registry import default_model
    from . import app_profile
    from ..app import concurrency_limit, threads_per_call
    machine = machine_state()  # before this process loads anything
    # the server's thread count (space/app.py's default unless given), here too: the same runtime
    # choice and precision, so the same masks
    threads = threads if threads is not None else threads_per_call(concurrency)
    torch.set_num_threads(threads)
    seg, cls = default_model("segmenter"), default_model("classifier")
    if not seg or not cls:
        raise FileNotFoundError("the shipped models are missing under models/")
    slices = pick_slices(Path(data_root) if data_root else data_home(), WARMUP_CALLS + requests + clients * per_client)
    under_load = clients * per_client
    warm, single, loaded = slices[:WARMUP_CALLS], slices[WARMUP_CALLS:-under_load], slices[-under_load:]
    pipeline = Pipeline.from_pretrained(seg, cls)  # first: its runtime choice is the one the server reads back
    references = reference_masks(pipeline, single + loaded)
    profile = app_profile.profile(pipeline, single, app_profile.app_scope_gate(cls))
    threshold = float(pipeline.segmenter.threshold)
    with tempfile.TemporaryDirectory(prefix="tumorlens-app-load-") as downloads, \
            AppServer(seg, cls, concurrency=concurrency, threads=threads) as server:
        single_result = single_requests(server.url, single, references, warm, downloads, threshold)
        defaults_result = single_requests(server.url, single, references, warm, downloads, threshold,
                                          one_tls_context=False)
        batches = [loaded[i * per_client:(i + 1) * per_client] for i in range(clients)]
        load_result = load_rounds(server.url, batches, references, downloads, threshold, rounds)
        startup, port = server.startup_s, server.port
    machine["load_average_after"] = [round(x, 2) for x in os.getloadavg()]
    total = next(r for r in profile["rows"] if r["group"] == "total")["p50_ms"]
    result = {"command": "python -m tumorlens.bench.app_load " + " ".join(argv or []),
              "date": time.strftime("%Y-%m-%d %H:%M"), "machine": machine,
              "server": {"concurrency": concurrency or concurrency_limit(), "startup_s": round(startup, 1),
                         "threads": threads, "slice_side": SLICE_SIDE, "port": port},
              "single": single_result, "single_defaults": defaults_result, "load": load_result, "profile": profile,
              "api_overhead_ms": None if single_result["p50_ms"] is None else round(single_result["p50_ms"] - total, 1)}
    result["goals"] = [{"goal": g, "measured": v, "met": ok} for g, v, ok in goals(result)]
    out.mkdir(parents=True, exist_ok=True)
    (out / "app_load.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "app_load.md").write_text(render_markdown(result))
    return result


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    p = argparse.ArgumentParser(prog="python -m tumorlens.bench.app_load", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--requests", type=int, default=30, help="sequential single requests (timed)")
    p.add_argument("--clients", type=int, default=20)
    p.add_argument("--per-client", type=int, default=5, help="different slices each client sends")
    p.add_argument("--rounds", type=int, default=LOAD_ROUNDS,
                   help="times the load test runs (same server, same slices); the goals read all rounds pooled")
    p.add_argument("--out", type=Path, default=Path("benchmarks"))
    p.add_argument("--data-root", type=Path, default=None, help="the data home holding brisc2025/")
    p.add_argument("--concurrency", type=int, default=None,
                   help="the server's $TUMORLENS_CONCURRENCY (default: the app's)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch/ONNX threads per model call in the server (OMP_NUM_THREADS) and here "
                        "(default: the app's, the usable cores shared out among --concurrency calls)")
    args = p.parse_args(argv)
    if min(args.requests, args.clients, args.per_client, args.rounds) < 1:
        p.error("--requests, --clients, --per-client and --rounds must be at least 1")
    run(args.out, requests=args.requests, clients=args.clients, per_client=args.per_client, rounds=args.rounds,
        data_root=args.data_root,
        concurrency=args.concurrency, threads=args.threads, argv=argv)
    print((args.out / "app_load.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
