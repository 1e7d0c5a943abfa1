"""Run by tests/test_multiprocess_training.py under `torchrun --nproc_per_node 2`: trains the segmenter
a few steps on real BRISC slices in every process and writes, per process, what it drew and where
its weights ended up (seen_rank<N>.json).

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/_multiprocess_train.py DATA_HOME OUT

Three runs: `whole` (2 epochs, uninterrupted), then `split` paused after 3 steps (checkpointing
every step) and resumed by a fresh Trainer, as a killed job would be."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np
import torch

from tumorlens.preprocess import PreprocessConfig, Preprocessor
from tumorlens.training.loop import TrainConfig, Trainer
from tumorlens.training.tasks import SegmentationSetup, SegmentationTask

SIZE, N_TRAIN, N_VAL = 64, 8, 4
CONFIG = dict(epochs=2, batch_size=2, lr=1e-3, precision="fp32", seed=7, num_threads=1, device="cpu")


def real_slices(data_home: Path) -> tuple[dict, dict]:
    """The first N_TRAIN + N_VAL BRISC training slices (with their masks), letterboxed to SIZE."""
    root = Path(data_home) / "brisc2025" / "segmentation_task" / "train"
    names = sorted(p.stem for p in (root / "images").iterdir())[:N_TRAIN + N_VAL]
    pre = Preprocessor(PreprocessConfig(input_size=SIZE))
    images = np.stack([pre.prepare(root / "images" / f"{n}.jpg")[0] for n in names])
    masks = np.stack([pre.prepare_mask(root / "masks" / f"{n}.png") for n in names]).astype(np.uint8)
    pack = lambda s: {"images": images[s], "masks": masks[s], "file_names": np.asarray(names)[s]}  # noqa: E731
    return pack(slice(0, N_TRAIN)), pack(slice(N_TRAIN, None))


def digest(state_dict: dict) -> str:
    h = hashlib.sha256()
    for k in sorted(state_dict):
        h.update(k.encode())
        h.update(state_dict[k].detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


class RecordingTask(SegmentationTask):
    """The segmentation task, noting the file names of every training batch it builds."""

    trainer: Trainer | None = None

    def __init__(self, train_pack: dict, *args, **kwargs):
        super().__init__(train_pack, *args, **kwargs)
        self.names = train_pack["file_names"]
        self.seen: list[dict] = []

    def make_batch(self, indices, g, device):
        s = self.trainer.state
        self.seen.append({"epoch": s["epoch"], "step": s["step_in_epoch"],
                          "files": [str(self.names[i]) for i in indices]})
        return super().make_batch(indices, g, device)


def trainer(train: dict, val: dict, run_dir: Path, **kw) -> Trainer:
    task = RecordingTask(train, val, SegmentationSetup(imagenet_init=False, input_size=SIZE, crop=48, val_batch=4))
    t = Trainer(task, TrainConfig(**CONFIG, **kw), run_dir)
    task.trainer = t
    return t


def main(data_home: str, out: str) -> None:
    out = Path(out)
    train, val = real_slices(Path(data_home))
    whole = trainer(train, val, out / "whole")
    whole.fit()
    first = trainer(train, val, out / "split", checkpoint_minutes=0.0)
    first.fit(stop_after=3)
    second = trainer(train, val, out / "split", checkpoint_minutes=0.0)
    second.fit()
    acc = whole.accelerator
    a = whole.accelerator.unwrap_model(whole.model).state_dict()
    b = second.accelerator.unwrap_model(second.model).state_dict()
    record = {
        "rank": acc.process_index, "world": acc.num_processes, "distributed_type": str(acc.distributed_type),
        "backend": torch.distributed.get_backend() if torch.distributed.is_initialized() else None,
        "is_main_process": acc.is_main_process, "steps_per_epoch": whole.steps_per_epoch,
        "state": whole.state, "seen": whole.task.seen,
        "split_seen": first.task.seen + second.task.seen, "split_state": second.state,
        # the parameters stay in step (DDP averages the gradients); BatchNorm running statistics are
        # each process's own until the next forward broadcasts the main process's
        "param_digest": digest(dict(whole.accelerator.unwrap_model(whole.model).named_parameters())),
        "digest": digest(a), "split_digest": digest(b),
        "resume_equal": a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a),
    }
    (out / f"seen_rank{acc.process_index}.json").write_text(json.dumps(record, indent=1, default=str))


if __name__ == "__main__":
    main(*sys.argv[1:3])
