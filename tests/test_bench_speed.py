"""The speed bench's harness, in tiny mode: every runtime and model yields timings, ratios and a
table naming the CPU. Timings are printed by the bench, never asserted here."""

from __future__ import annotations

import json

import pytest
import torch
from torch import nn

from tumorlens.bench import speed
from tumorlens.hardware import cpu_model

pytestmark = pytest.mark.slow  # builds, exports to ONNX and times every model: minutes of CPU, not the fast lane

NAMES = (speed.OURS, speed.OURS_TTA, speed.SEED004, speed.SEED001_UNET, speed.SEED001_DENSENET, speed.SEED001_PAIR)
TINY = {"runs": 2, "warmup": 1, "batch": 2, "batch_runs": 1, "tiny": True, "threads": 1}


@pytest.fixture(scope="module")
def onnx_cache(tmp_path_factory):
    """Seed ONNX exports go to a throwaway cache, not the user's."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("TUMORLENS_CACHE", str(tmp_path_factory.mktemp("tumorlens-cache")))
        yield


@pytest.fixture(scope="module")
def tiny_result(onnx_cache):
    return speed.speed_benchmark(**TINY)


def test_plain_unet_full_size_has_five_levels_of_doubling_widths():
    net = speed.PlainUNet()
    down_widths = [block[0].out_channels for block in net.down]
    assert down_widths == [64, 128, 256, 512, 1024]
    assert [m.out_channels for m in net.up if isinstance(m, nn.ConvTranspose2d)] == [512, 256, 128, 64]
    # every 3x3 conv sits in a double-conv block: 2 per level down, 2 per level up
    assert sum(isinstance(m, nn.Conv2d) and m.kernel_size == (3, 3) for m in net.modules()) == 2 * 5 + 2 * 4
    with torch.no_grad():
        out = net.eval()(torch.zeros(1, 3, 32, 32))
    assert out.shape == (1, 1, 32, 32)


def test_tiny_seed_models_are_small_and_in_eval_mode():
    seeds = speed.build_seed_models(tiny=True)
    assert set(seeds) == {speed.SEED004, speed.SEED001_UNET, speed.SEED001_DENSENET}
    unet, size = seeds[speed.SEED001_UNET]
    assert unet.widths == [8, 16, 32, 64, 128] and size == 64
    assert all(not model.training for model, _ in seeds.values())
    with torch.no_grad():
        assert unet(torch.zeros(1, 3, size, size)).shape == (1, 1, size, size)


def test_tiny_benchmark_times_every_model_in_every_runtime(tiny_result):
    rows = {(r["name"], r["runtime"]): r for r in tiny_result["rows"]}
    for runtime in speed.RUNTIMES:
        for name in NAMES:
            row = rows[(name, runtime)]
            assert "error" not in row, row
            assert row["p50_ms"] > 0 and row["p90_ms"] >= row["p50_ms"], row
            assert row["throughput_img_s"] > 0, row
        assert "emulated" in rows[(speed.SEED004, "torch-bf16")]
    assert tiny_result["threads"] == 1 and tiny_result["runs"] == 2
    assert tiny_result["hardware"]["cpu"] == cpu_model()
    json.dumps(tiny_result)  # the CLI writes it as JSON


def test_ratios_compare_best_runtimes_and_each_runtime(tiny_result):
    ratios, targets = tiny_result["ratios"], tiny_result["targets"]
    assert "fastest runtime" in ratios["how"] and "same runtime" in ratios["how"]
    for key in ("vs_seed004_p50", "vs_seed001_pair_p50"):
        entry = ratios[key]
        assert entry["best_vs_best"] > 0 and entry["best_vs_best_tta"] > 0
        assert set(entry["same_runtime"]) == set(speed.RUNTIMES)
        assert all(v > 0 for v in entry["same_runtime"].values())
        assert entry["best_runtimes"]["ours"] in speed.RUNTIMES and entry["best_runtimes"]["seed"] in speed.RUNTIMES
        assert isinstance(targets[key]["met"], bool) and targets[key]["target_x"] == speed.TARGETS[key]


def test_table_names_cpu_simd_and_threads(tiny_result):
    table = speed.format_speed_table(tiny_result)
    header = table.splitlines()[0]
    assert cpu_model() in header and "AVX-512" in header and "bf16" in header and "threads: 1" in header
    for name in NAMES:
        assert f"| {name} |" in table


def test_failed_onnx_export_is_recorded_not_raised(onnx_cache, monkeypatch, tmp_path):
    monkeypatch.setenv("TUMORLENS_CACHE", str(tmp_path))  # empty: forces an export

    def broken_export(*args, **kwargs):
        raise RuntimeError("export broke")

    monkeypatch.setattr(torch.onnx, "export", broken_export)
    result = speed.speed_benchmark(runtimes=("onnx",), include_ours=False, **{**TINY, "runs": 1, "warmup": 0})
    names = [r["name"] for r in result["rows"]]
    assert names == [speed.SEED004, speed.SEED001_UNET, speed.SEED001_DENSENET, speed.SEED001_PAIR]
    assert all("error" in r and r["p50_ms"] is None for r in result["rows"])
    assert "export broke" in result["rows"][0]["error"]
    assert result["ratios"]["vs_seed004_p50"]["best_vs_best"] is None
    assert result["targets"]["vs_seed004_p50"]["met"] is False
    assert "export broke" in speed.format_speed_table(result)


def test_cli_writes_json_and_prints_table(onnx_cache, tmp_path, capsys):
    out = tmp_path / "speed.json"
    assert speed.main(["--tiny", "--runs", "1", "--warmup", "0", "--batch", "1", "--batch-runs", "1",
                       "--runtimes", "onnx", "--threads", "1", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "CPU: " in printed and "| seed001_pair | onnx |" in printed
    result = json.loads(out.read_text())
    assert result["command"].startswith("python -m tumorlens.bench.speed --tiny")
    assert {r["name"] for r in result["rows"]} == set(NAMES)
