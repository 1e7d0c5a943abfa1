"""The app load benchmark (tumorlens.bench.app_load): its pure helpers (percentiles, mask comparison,
the report), the server it starts being stopped on every path, and the speedups it measured
(the heatmap drawn with fewer float64 passes, pixel for pixel the same; threads per model call).
One slow smoke run starts the real app and sends it real slices."""

from __future__ import annotations

import json
import sys
import urllib.error
import urllib.request

import numpy as np
import pytest
from matplotlib import colormaps
from PIL import Image

from tumorlens import visualize
from tumorlens.bench import app_load, app_profile
from tumorlens.bench import app_server
from tumorlens.bench.app_load import (goals, mask_mismatch, output_path, percentiles, read_mask, render_markdown,
                                      summarize_calls)
from tumorlens.bench.app_server import AppServer
from tumorlens.hardware import cgroup_cores, usable_cores, worker_threads


# -- percentiles and masks -------------------------------------------------------------------------
def test_percentiles_in_ms_and_an_empty_list():
    out = percentiles([0.1, 0.2, 0.3, 0.4, 1.0])
    assert out == {"n": 5, "p50_ms": 300.0, "p95_ms": 880.0, "max_ms": 1000.0}
    assert percentiles([]) == {"n": 0, "p50_ms": None, "p95_ms": None, "max_ms": None}


def test_mask_mismatch_counts_differing_pixels_of_a_0_255_image():
    want = np.zeros((8, 8), bool)
    want[2:4, 2:4] = True
    assert mask_mismatch((want * 255).astype(np.uint8), want) == 0
    got = (want * 255).astype(np.uint8)
    got[0, 0], got[2, 2] = 255, 0
    assert mask_mismatch(got, want) == 2
    assert mask_mismatch(want, want) == 0                      # bool against bool
    assert mask_mismatch(np.dstack([got] * 3), want) == 2     # an RGB rendering of the mask
    assert mask_mismatch(np.zeros((4, 8), np.uint8), want) == 64  # another shape: every pixel


def test_a_returned_mask_file_reads_back_as_the_same_mask(tmp_path):
    mask = np.random.default_rng(0).random((32, 40)) > 0.7
    Image.fromarray(visualize.mask_image(mask)).save(tmp_path / "mask.png")
    assert mask_mismatch(read_mask(tmp_path / "mask.png"), mask) == 0
    assert output_path(str(tmp_path / "mask.png")) == str(tmp_path / "mask.png")
    assert output_path({"path": "/x/mask.png"}) == "/x/mask.png"
    assert output_path(None) is None


def test_calls_summarized_with_errors_and_wrong_masks_counted():
    calls = [{"seconds": 0.2, "mismatch_px": 0, "error": None}, {"seconds": 0.4, "mismatch_px": 7, "error": None},
             {"seconds": 9.0, "error": "AppError: queue is full"}]
    out = summarize_calls(calls, wall_s=1.23456)
    assert (out["requests"], out["answered"], out["wrong_masks"], out["mismatch_px"]) == (3, 2, 1, 7)
    assert out["p50_ms"] == 300.0 and out["wall_s"] == 1.235  # only answered calls are timed
    assert out["errors"] == ["AppError: queue is full"]


# -- the report ---------------------------------------------------------------------------------------
def _result(single_p50_ms=250.0, load_p95_ms=4000.0, wrong=0, busy=True) -> dict:
    calls = {"requests": 100, "answered": 100, "wall_s": 30.0, "n": 100, "p50_ms": 2000.0, "p95_ms": load_p95_ms,
             "max_ms": 6000.0, "wrong_masks": wrong, "mismatch_px": 12 * wrong, "errors": [],
             "clients": 20, "per_client": 5}
    times = {"read + decode": [0.01, 0.02], "segmenter": [0.05, 0.07], "panel: overlay": [0.001, 0.001],
             "encode: overlay (jpeg)": [0.03, 0.02], "segmenter > forward pass": [0.02, 0.03],
             "check: page_outputs as the app calls it": [0.1, 0.1], "what-if: png level 1, overlay": [0.01, 0.01]}
    busy_list = [{"pid": 1, "cpu_share": 0.99, "command": "python train.py"}] if busy else []
    return {"command": "python -m tumorlens.bench.app_load", "date": "2026-12-02 20:00",
            "machine": {"hardware": {"cpu": "Test CPU"}, "cores": 2, "load_average_before": [1.4, 1.0, 0.7],
                        "load_average_after": [2.0, 1.2, 0.8],
                        "busy_processes_before": busy_list,
                        "another_heavy_process": busy},
            "server": {"concurrency": 2, "startup_s": 12.3, "threads": 2, "slice_side": 512, "port": 1},
            "single": {**calls, "requests": 30, "answered": 30, "wall_s": None, "p50_ms": single_p50_ms,
                       "wrong_masks": 0, "mismatch_px": 0},
            "load": calls,
            "profile": {"rows": app_profile.summarize(times), "slices": 2, "encoded_kb_p50": {"overlay": 120.0},
                        "segmenter_tta": True, "classifier_tta": True, "torch_threads": 2, "scope_check": False,
                        "runtimes": {"segmenter": "onnx/fp32", "classifier": "onnx/fp32"}},
            "api_overhead_ms": 100.0}


def test_goals_follow_the_issue():
    met = {g: ok for g, _, ok in goals(_result())}
    assert list(met.values()) == [True, True, True, True]
    met = [ok for _, _, ok in goals(_result(single_p50_ms=310.0, load_p95_ms=5700.0, wrong=2))]
    assert met == [False, True, False, False]  # 5.7 s is over half of 11.2 s
    both = _result()
    both["single_defaults"] = {**both["single"], "p50_ms": 340.0}
    rows = goals(both)
    assert [(g.split(":")[0], ok) for g, _, ok in rows[:2]] == [
        ("one request alone (gradio_client, one TLS context)", True), ("one request alone (gradio_client defaults)", False)]
    assert "| one request at a time (gradio_client defaults) | 30 |" in render_markdown(both)


def test_load_rounds_are_each_reported_and_pooled_for_the_goals(monkeypatch):
    seconds = iter([1.0, 2.0, 3.0, 4.0, 9.0, 10.0])  # three rounds of two requests

    def one_round(*args):
        calls = [{"seconds": next(seconds), "mismatch_px": 0, "error": None} for _ in range(2)]
        return {**summarize_calls(calls, 1.5), "clients": 2, "per_client": 1, "calls": calls}
    monkeypatch.setattr(app_load, "concurrent_requests", one_round)
    load = app_load.load_rounds("url", [["a"], ["b"]], {}, "dir", 0.5, rounds=3)
    assert [r["requests"] for r in load["rounds"]] == [2, 2, 2] and "calls" not in load["rounds"][0]
    assert (load["requests"], load["p50_ms"], load["wall_s"]) == (6, 3500.0, 4.5)
    result = _result()
    result["load"] = load
    rows = goals(result)
    assert rows[-1][0].startswith("2 clients x 1 slices, 3 rounds pooled: p95") and rows[-1][2] is False
    assert rows[-1][1] == "9.750 s (worst round 9.950 s)"
    text = render_markdown(result)
    assert "| 2 clients x 1 slices, round 3 | 2 | 2 |" in text and "3 rounds pooled (wall: their sum) | 6 |" in text


def test_the_report_names_a_busy_machine_and_every_table():
    text = render_markdown(_result())
    assert "Another heavy process was running" in text and "python train.py" in text and "busy machine" in text
    assert "| one request alone (gradio_client, one TLS context): p50 <= 0.3 s | 0.250 s | yes |" in text
    assert "gradio_client defaults" not in text.split("## Through")[0]  # not measured in this result: no row
    assert "| 20 clients x 5 slices (gradio_client, one TLS context each) | 100 | 100 | 0 (0) | 30.00 | 2.000 | 4.000 | 6.000 |" in text
    assert "| segmenter > forward pass | part |" in text and "| **total (in process)** | total |" in text
    assert "No other heavy process" in render_markdown(_result(busy=False))
    result = _result()
    result["single"]["split"] = {"upload": percentiles([0.01]), "server": percentiles([0.2]),
                                 "download": percentiles([0.04])}
    assert "split (p50): upload 10 ms, server 200 ms" in render_markdown(result)


def test_profile_total_sums_the_stages_per_slice_not_parts_checks_or_what_ifs():
    rows = {r["stage"]: r for r in _result()["profile"]["rows"]}
    assert rows["total (in process)"]["p50_ms"] == pytest.approx((91 + 111) / 2, abs=0.1)  # (10+50+1+30, 20+70+1+20)
    assert [r["group"] for r in _result()["profile"]["rows"]][:4] == ["stage"] * 4
    assert app_profile.stage_names({"encode: mask (png)": [0], "panel: mask": [0], "segmenter": [0], "x": [0]}) == [
        "segmenter", "panel: mask", "encode: mask (png)"]


# -- the server is stopped on every path ----------------------------------------------------------------
def test_the_machine_is_busy_by_its_cpu_time_not_its_load_average():
    assert app_server.cpu_busy_share((100, 1000), (150, 1200)) == 0.25
    assert app_server.cpu_busy_share(None, (1, 2)) is None and app_server.cpu_busy_share((5, 10), (5, 10)) is None
    busy, total = app_server._cpu_times()
    assert 0 <= busy <= total


@pytest.mark.parametrize("share, load, heavy", [(0.01, 1.4, False), (0.6, 0.1, True), (None, 1.4, True),
                                                (None, 0.1, False)])
def test_busy_by_cpu_share_else_load_average(monkeypatch, share, load, heavy):
    """A quiet CPU with a high load average (as on these VMs) is quiet; the load average decides only
    where /proc/stat cannot be read."""
    readings = iter([(0, 1000), (None if share is None else int(share * 1000), 2000)])
    monkeypatch.setattr(app_server, "_cpu_times", lambda: (lambda r: None if r[0] is None else r)(next(readings)))
    monkeypatch.setattr(app_server, "_cpu_ticks", dict)
    monkeypatch.setattr(app_server.time, "sleep", lambda s: None)
    monkeypatch.setattr(app_server.os, "getloadavg", lambda: (load, load, load))
    state = app_server.machine_state()
    assert state["another_heavy_process"] is heavy and state["busy_processes_before"] == []
    assert state["cpu_busy_share_before"] == share
    text = render_markdown({**_result(busy=heavy), "machine": {**_result()["machine"], **state}})
    assert ("the CPU 60% busy" in text) if share == 0.6 else ("load average" in text or not heavy)


def test_a_server_that_exits_is_reported_with_its_log():
    server = AppServer("seg", "cls", ready_timeout=30)
    server.command = [sys.executable, "-c", "import sys; print('cannot load the models'); sys.exit(3)"]
    with pytest.raises(RuntimeError, match="(?s)exited with code 3.*cannot load the models"):
        with server:
            pass
    assert server.proc.poll() == 3


def test_a_server_that_never_answers_is_stopped():
    server = AppServer("seg", "cls", ready_timeout=1)
    server.command = [sys.executable, "-c", "import time; time.sleep(120)"]
    with pytest.raises(TimeoutError):
        with server:
            pass
    assert server.proc.poll() is not None  # killed, not left running
    assert server.cache_dir is None and server._log is None  # its cache folder and log removed


# -- the speedups --------------------------------------------------------------------------------------
def _plain_heatmap(rgb, probability, alpha=0.55, cmap="inferno"):
    """heatmap as it was written first: the reference the faster one must match pixel for pixel."""
    colored = colormaps[cmap](np.clip(probability, 0, 1))[..., :3] * 255
    gray = rgb.mean(axis=-1, keepdims=True).repeat(3, axis=-1)
    weight = alpha * np.clip(probability, 0, 1)[..., None] ** 0.5
    return np.clip(gray * (1 - weight) + colored * weight, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("cmap", ["inferno", "viridis", "turbo"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_faster_heatmap_draws_the_same_pixels(cmap, dtype):
    rng = np.random.default_rng(1)
    rgb = rng.integers(0, 256, (67, 91, 3), dtype=np.uint8)
    p = np.clip(rng.normal(0.4, 0.5, (67, 91)), -0.3, 1.3).astype(dtype)
    p[0, :3] = (1.0, np.nextafter(dtype(1), dtype(0)), 0.0)  # the top bin's edge cases
    for alpha in (0.55, 0.3):
        assert np.array_equal(visualize.heatmap(rgb, p, alpha, cmap), _plain_heatmap(rgb, p, alpha, cmap))
    p[5, 5] = np.nan  # matplotlib's 'bad' colour, as before
    with np.errstate(invalid="ignore"):
        assert np.array_equal(visualize.heatmap(rgb, p, cmap=cmap), _plain_heatmap(rgb, p, cmap=cmap))


def test_threads_per_model_call_share_out_the_cores(tmp_path):
    assert worker_threads(2, cores=2) == 1 and worker_threads(1, cores=2) == 2
    assert worker_threads(4, cores=2) == 1 and worker_threads(2, cores=16) == 8
    assert 1 <= worker_threads(2) <= usable_cores()
    (tmp_path / "cpu.max").write_text("200000 100000\n")
    assert cgroup_cores(tmp_path) == 2.0
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cores(tmp_path) is None
    v1 = tmp_path / "v1"
    (v1 / "cpu").mkdir(parents=True)
    (v1 / "cpu" / "cpu.cfs_quota_us").write_text("150000\n")
    (v1 / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cores(v1) == 1.5 and usable_cores(v1) <= 2
    assert cgroup_cores(tmp_path / "missing") is None


# -- the real app, a smoke run -------------------------------------------------------------------------
@pytest.mark.slow
def test_smoke_run_against_the_real_app(data_home, tmp_path, capsys):
    assert app_load.main(["--requests", "2", "--clients", "2", "--per-client", "1", "--rounds", "2",
                          "--out", str(tmp_path), "--data-root", str(data_home)]) == 0
    result = json.loads((tmp_path / "app_load.json").read_text())
    for run, n in (("single", 2), ("single_defaults", 2), ("load", 4)):  # the load test's 2 rounds pooled
        assert result[run]["answered"] == result[run]["requests"] == n, result[run]["errors"]
        assert result[run]["wrong_masks"] == 0, result[run]
        assert result[run]["p95_ms"] > 0
    assert result["load"]["clients"] == 2 and result["load"]["per_client"] == 1
    assert {"read + decode", "segmenter", "classifier", "encode: mask (png)"} <= {r["stage"] for r in result["profile"]["rows"]}
    assert "## Through the API" in (tmp_path / "app_load.md").read_text() and "## Goals" in capsys.readouterr().out
    with pytest.raises((urllib.error.URLError, ConnectionError, OSError)):  # the server is gone
        urllib.request.urlopen(f"http://127.0.0.1:{result['server']['port']}/gradio_api/info", timeout=5)
