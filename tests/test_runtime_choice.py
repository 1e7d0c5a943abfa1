"""'auto' runtime and precision on a CPU are measured on the machine, cached, and the fastest wins."""

from __future__ import annotations

import json

import pytest
import torch

from tumorlens import models, runtime_choice
from tumorlens.runtime import Runner


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(runtime_choice, "onnx_cache_dir", lambda: tmp_path)
    monkeypatch.setattr("tumorlens.runtime.onnx_cache_dir", lambda: tmp_path)
    return tmp_path


def _tiny():
    torch.manual_seed(0)
    return models.build_segmenter().eval()


@pytest.mark.parametrize("fastest", ["onnx/fp32", "torch/fp32"])
def test_the_fastest_measured_candidate_is_chosen_and_cached(cache_dir, monkeypatch, fastest):
    speeds = {"onnx/fp32": 0.02, "torch/fp32": 0.03, "torch/bf16": 0.05}
    speeds[fastest] = 0.001
    timed = []

    def fake_time(runner, size, best=float("inf")):
        timed.append(f"{runner.runtime}/{runner.precision}")
        return speeds[timed[-1]]

    monkeypatch.setattr(runtime_choice, "time_runner", fake_time)
    monkeypatch.setattr(Runner, "_onnx_session", lambda self: object())  # no export: nothing runs here
    runner = Runner(_tiny(), 64, kind="segmenter", cache_key=f"seg-{fastest.replace('/', '-')}")
    assert f"{runner.runtime}/{runner.precision}" == fastest
    assert set(timed) == {f"{r}/{p}" for r, p in runtime_choice.candidates()}
    names = [f"{r}/{p}" for r, p in runtime_choice.candidates()]
    assert timed[:len(names)] == names  # round 1 times every candidate before round 2 starts
    assert all(speeds[t] <= runtime_choice.HOPELESS * 0.001 for t in timed[len(names):])  # hopeless: once
    cache = json.loads((cache_dir / runtime_choice.CACHE_NAME).read_text())
    (entry,) = cache.values()
    assert entry["runtime"] + "/" + entry["precision"] == fastest and set(entry["median_seconds"]) == set(timed)

    def no_timing(*args, **kwargs):
        raise AssertionError("measured again although the choice was cached")

    monkeypatch.setattr(runtime_choice, "time_runner", no_timing)
    again = Runner(_tiny(), 64, kind="segmenter", cache_key=f"seg-{fastest.replace('/', '-')}")
    assert f"{again.runtime}/{again.precision}" == fastest


def test_a_slow_burst_in_one_round_does_not_decide(cache_dir, monkeypatch):
    """Round 1 catches torch in a burst of load elsewhere; its second round decides."""
    rounds = {"onnx/fp32": iter([0.020, 0.021]), "torch/fp32": iter([0.050, 0.040]), "torch/bf16": iter([0.055, 0.015])}
    monkeypatch.setattr(runtime_choice, "time_runner", lambda runner, size, best=0: next(
        rounds[f"{runner.runtime}/{runner.precision}"]))
    monkeypatch.setattr(runtime_choice, "candidates", lambda: [("onnx", "fp32"), ("torch", "fp32"), ("torch", "bf16")])
    monkeypatch.setattr(Runner, "_onnx_session", lambda self: object())
    assert runtime_choice.measured_choice(_tiny(), 64, kind="segmenter", model_key="seg-burst") == ("torch", "bf16")
    (entry,) = json.loads((cache_dir / runtime_choice.CACHE_NAME).read_text()).values()
    assert entry["median_seconds"] == {"onnx/fp32": 0.02, "torch/fp32": 0.04, "torch/bf16": 0.015}


def test_explicit_settings_are_not_measured(cache_dir, monkeypatch):
    monkeypatch.setattr(runtime_choice, "time_runner", lambda *a, **k: pytest.fail("measured"))
    runner = Runner(_tiny(), 64, kind="segmenter", cache_key="seg-explicit", runtime="torch", precision="fp32")
    assert (runner.runtime, runner.precision) == ("torch", "fp32")
    assert not (cache_dir / runtime_choice.CACHE_NAME).exists()


@pytest.mark.slow  # exports the model to ONNX and times every candidate
def test_a_real_measurement_times_every_candidate_and_keeps_the_result(cache_dir):
    choice = runtime_choice.measured_choice(_tiny(), 64, kind="segmenter", model_key="seg-real")
    assert choice in runtime_choice.candidates()
    (entry,) = json.loads((cache_dir / runtime_choice.CACHE_NAME).read_text()).values()
    seconds = entry["median_seconds"]
    assert set(seconds) == {f"{r}/{p}" for r, p in runtime_choice.candidates()}
    assert all(v > 0 for v in seconds.values())
    assert seconds[f"{choice[0]}/{choice[1]}"] == min(seconds.values())


def test_onnx_pools_do_not_spin_and_the_choice_cache_says_so(cache_dir):
    """A spinning ONNX pool holds a core the next model needs (155 vs 85 ms per request on 2 cores):
    sessions sleep, and a choice measured with spinning pools (an older key) is not reused."""
    runner = Runner(_tiny(), 64, kind="segmenter", cache_key="seg-spin", runtime="onnx", precision="fp32")
    options = runner.session.get_session_options()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert runtime_choice.cache_key("seg-spin", 64).endswith("spinning 0")
