"""Where a model runs: torch (precision per machine, as in training; channels_last on CPU) or ONNX
Runtime (exported once per weights file and cached under paths.onnx_cache_dir()).

The runtime is chosen once, when a runner is built, from what the caller asks and the model's kind
(segmenter or classifier), and recorded on the runner with that kind. On a CPU with runtime and
precision both 'auto': measured on the machine at hand (tumorlens.runtime_choice, cached). With only one
of them 'auto', the rule in `pick_runtime` / `hardware.pick_precision`; torch on a GPU."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import torch

from .errors import ConfigError
from .hardware import pick_precision
from .models import fetch_file
from .paths import onnx_cache_dir

RUNTIMES = ("auto", "torch", "onnx")
KINDS = ("segmenter", "classifier")


def pick_runtime(requested: str = "auto", device: str = "cpu", kind: str = "segmenter") -> str:
    """Measured with `python -m tumorlens.bench.latency` (AVX-512 bf16 EPYC, 2 threads, p50):
    classifier ONNX Runtime 3.9 ms vs torch bf16 8.1 ms; segmenter ONNX 18.8 ms vs torch bf16
    18.6 ms. On CPUs without bf16, ONNX Runtime beats torch fp32 for both. So: the classifier runs
    in ONNX Runtime on any CPU, the segmenter in torch where bf16 is native, ONNX elsewhere."""
    if requested not in RUNTIMES:
        raise ConfigError(f"runtime must be auto, torch or onnx, not {requested!r}")
    if requested != "auto":
        return requested
    if device != "cpu":
        return "torch"
    if kind == "classifier":
        return "onnx"
    return "torch" if pick_precision("auto", "cpu") == "bf16" else "onnx"


def model_key(name_or_path: str | Path, kind: str) -> str:
    """`kind`-<hash of the weights file's path, size, mtime and the torch version>: names the ONNX
    export of these weights, and any cache built from the model's outputs."""
    weights = fetch_file(name_or_path, "model.safetensors")
    st = weights.stat()
    raw = f"{kind}:{weights.resolve()}:{st.st_size}:{st.st_mtime_ns}:{torch.__version__}"
    return f"{kind}-{hashlib.sha256(raw.encode()).hexdigest()[:16]}"


ORT_SPINNING = "0"  # part of runtime_choice.cache_key: a choice measured with spinning pools is not reused


class Runner:
    """Runs a float32 eval-mode model on N x 3 x S x S batches with torch or ONNX Runtime.

    `kind` ('segmenter' or 'classifier') decides what runtime='auto' picks; `cache_key` names the
    ONNX export (a `model_key`, or any name unique to the weights). Both are recorded, as are the
    runtime and precision picked."""

    def __init__(self, model: torch.nn.Module, size: int, *, kind: str, cache_key: str, runtime: str = "auto",
                 device: str = "cpu", precision: str = "auto"):
        if kind not in KINDS:
            raise ConfigError(f"kind must be segmenter or classifier, not {kind!r}")
        self.model, self.size, self.device = model.eval(), size, torch.device(device)
        self.kind, self.cache_key = kind, cache_key
        if runtime == "auto" and precision == "auto" and self.device.type == "cpu":
            from .runtime_choice import measured_choice  # it builds Runners itself
            runtime, precision = measured_choice(model, size, kind=kind, model_key=cache_key)
        self.runtime = pick_runtime(runtime, self.device.type, kind)
        self.precision = pick_precision(precision, self.device) if self.runtime == "torch" else "fp32"
        self.session = None
        if self.runtime == "onnx":
            self.session = self._onnx_session()
        else:
            self.model.to(self.device)
            if self.device.type == "cpu":
                self.model.to(memory_format=torch.channels_last)

    def _onnx_session(self):
        import onnxruntime as ort
        path = onnx_cache_dir() / f"{self.cache_key}.onnx"
        if not path.is_file():
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.onnx")
            dummy = torch.zeros(1, 3, self.size, self.size)
            torch.onnx.export(self.model.float().cpu(), dummy, str(tmp), input_names=["pixel_values"],
                              output_names=["logits"], dynamic_axes={"pixel_values": {0: "batch"}, "logits": {0: "batch"}},
                              opset_version=17, dynamo=False)
            tmp.replace(path)
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = torch.get_num_threads()
        # idle pool threads sleep instead of spinning: a spinning pool holds a core the next model (or
        # the other request) needs; on 2 cores, one request with both models in ONNX at 2 threads took
        # 155 ms p50 spinning and 85 ms not (in process, quiet machine, 2026-12-03)
        opts.add_session_config_entry("session.intra_op.allow_spinning", ORT_SPINNING)
        return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.session is not None:
            return torch.from_numpy(self.session.run(None, {"pixel_values": x.numpy().astype(np.float32)})[0])
        x = x.to(self.device)
        if self.device.type == "cpu":
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.precision == "bf16"):
            return self.model(x).float().cpu()
