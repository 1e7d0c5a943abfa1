"""One Accelerate training loop for every TumorLens model.

A `Task` supplies the model, its parameter groups, a batch builder, a loss and a validation
score; `fit` does the rest: precision picked per machine, channels_last on CPU, warm-up +
cosine schedule, a progress bar, validation every epoch, best-checkpoint export, early
stopping, and `save_state` checkpoints that resume exactly (batch order and augmentation
are drawn from generators seeded by (seed, epoch, step), so a resumed run draws what an
uninterrupted one would have drawn).

Several processes (`torchrun --nproc_per_node N`, `accelerate launch` with a multi-GPU or
MULTI_CPU config) train one model data-parallel: each epoch's permutation is cut into
disjoint per-process batches (`process_batch`), `cfg.batch_size` is per process, an epoch is
`num_train // (batch_size * N)` steps everywhere, and the prepared (DDP) model averages the
gradients in `accelerator.backward`. The main process alone validates (its metrics are
broadcast, so every process takes the same early-stopping decisions), exports best/, writes
trainer_state.json and log.jsonl and shows the progress bar; `save_state` stores every
process's RNG state. A checkpoint resumes only with the process count it was written with."""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState
from accelerate.utils import broadcast, broadcast_object_list, set_seed
from tqdm.auto import tqdm

from ..hardware import hardware_summary, pick_precision

STATE_DIR = "state"
TRAINER_STATE = "trainer_state.json"


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 30
    batch_size: int = 16
    lr: float = 1e-3
    encoder_lr_mult: float = 0.3
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    precision: str = "auto"
    seed: int = 42
    patience: int = 8
    max_steps: int | None = None          # stop after this many optimizer steps (smoke runs, tests)
    checkpoint_minutes: float = 10.0      # also save_state this often inside an epoch
    num_threads: int | None = None
    device: str | None = None             # None: CUDA if present, else CPU
    channels_last: bool = True
    extra: dict = field(default_factory=dict)


class Task(Protocol):
    name: str

    def build_model(self) -> torch.nn.Module: ...
    def param_groups(self, model: torch.nn.Module, lr: float, encoder_lr_mult: float) -> list[dict]: ...
    def num_train(self) -> int: ...
    def make_batch(self, indices: np.ndarray, g: torch.Generator, device: torch.device) -> dict: ...
    def loss(self, model: torch.nn.Module, batch: dict) -> torch.Tensor: ...
    def validate(self, model: torch.nn.Module, device: torch.device, autocast) -> dict: ...
    def export(self, model: torch.nn.Module, folder: Path, metrics: dict, run_info: dict) -> None: ...


def _step_seed(seed: int, epoch: int, step: int) -> int:
    return (seed * 1_000_003 + epoch * 10_007 + step) % (2**31 - 1)


def epoch_order(n: int, seed: int, epoch: int) -> np.ndarray:
    return np.random.default_rng(_step_seed(seed, epoch, -1)).permutation(n)


def process_batch(order: np.ndarray, step: int, batch_size: int, rank: int = 0, world: int = 1) -> np.ndarray:
    """Process `rank`'s samples at `step`: block `step * world + rank` of the epoch's permutation, so
    the processes' batches are disjoint within an epoch (one process: the step's block, as before)."""
    start = (step * world + rank) * batch_size
    return order[start:start + batch_size]


def process_seed(seed: int, epoch: int, step: int, rank: int = 0) -> int:
    """The step's augmentation seed on process `rank`: rank 0 keeps the single-process seed, the others
    draw their own (each process augments its own batch differently, and reproducibly)."""
    base = _step_seed(seed, epoch, step)
    if rank == 0:
        return base
    return int(np.random.SeedSequence([base, rank]).generate_state(1)[0]) % (2**31 - 1)


def cosine_with_warmup(total_steps: int, warmup_steps: int):
    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / max(1, warmup_steps)
        progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return factor


def to_channels_last(batch: dict) -> dict:
    return {k: (v.contiguous(memory_format=torch.channels_last) if torch.is_tensor(v) and v.dim() == 4 else v)
            for k, v in batch.items()}


class Trainer:
    def __init__(self, task: Task, cfg: TrainConfig, run_dir: str | Path, *, init_state: dict | None = None,
                 data_info: dict | None = None):
        self.task, self.cfg, self.run_dir = task, cfg, Path(run_dir)
        self.data_info = data_info or {}  # what it trains on, recorded with the model
        self.run_dir.mkdir(parents=True, exist_ok=True)
        if cfg.num_threads:
            torch.set_num_threads(cfg.num_threads)
        device = cfg.device or ("cuda" if torch.cuda.is_available() else "cpu")
        self.precision = pick_precision(cfg.precision, device)
        # Accelerate keeps one process-wide state; a second trainer in the same process (tests,
        # notebooks) may pick another precision, so start from a clean state each time.
        AcceleratorState._reset_state(reset_partial_state=True)
        # The scheduler steps once per optimizer step: its length is counted in per-process steps
        # (Accelerate would otherwise step it num_processes times per step).
        self.accelerator = Accelerator(cpu=device == "cpu", mixed_precision="bf16" if self.precision == "bf16" else "no",
                                       step_scheduler_with_optimizer=False)
        self.device = self.accelerator.device
        self.rank, self.world = self.accelerator.process_index, self.accelerator.num_processes
        if self.world > 1 and task.num_train() < cfg.batch_size * self.world:
            raise ValueError(f"{task.num_train()} training samples cannot fill a batch of {cfg.batch_size} on each of "
                             f"{self.world} processes")
        set_seed(cfg.seed)
        model = task.build_model()
        if init_state is not None:
            model.load_state_dict(init_state)
        self.use_channels_last = cfg.channels_last and self.device.type == "cpu"
        if self.use_channels_last:
            model = model.to(memory_format=torch.channels_last)
        opt = torch.optim.AdamW(task.param_groups(model, cfg.lr, cfg.encoder_lr_mult), weight_decay=cfg.weight_decay)
        self.steps_per_epoch = max(1, task.num_train() // (cfg.batch_size * self.world))
        total = cfg.epochs * self.steps_per_epoch
        if cfg.max_steps:
            total = min(total, cfg.max_steps)
        self.total_steps = total
        warmup = min(int(cfg.warmup_epochs * self.steps_per_epoch), max(1, total // 5))
        sched = torch.optim.lr_scheduler.LambdaLR(opt, cosine_with_warmup(total, warmup))
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(model, opt, sched)
        self.state = {"epoch": 0, "step_in_epoch": 0, "global_step": 0, "best_score": -math.inf,
                      "best_epoch": None, "bad_epochs": 0, "history": [], "train_seconds": 0.0,
                      "done": False, "num_processes": self.world}
        self.hardware = hardware_summary(self.device)
        self.hardware["precision"] = self.precision
        self.hardware["channels_last"] = self.use_channels_last
        self._last_ckpt = time.time()

    # -- checkpoints ---------------------------------------------------------------------
    def save_checkpoint(self) -> None:
        """Every process calls this: each saves its RNG state, the main one the model, optimizer,
        scheduler and trainer_state.json; all leave once the checkpoint is complete."""
        acc = self.accelerator
        state_dir = self.run_dir / STATE_DIR
        acc.save_state(str(state_dir))
        if acc.is_main_process:
            (state_dir / TRAINER_STATE).write_text(json.dumps(self.state, indent=1))
        acc.wait_for_everyone()
        self._last_ckpt = time.time()

    def try_resume(self) -> bool:
        state_dir = self.run_dir / STATE_DIR
        if not (state_dir / TRAINER_STATE).is_file():
            return False
        state = json.loads((state_dir / TRAINER_STATE).read_text())
        saved_world = state.get("num_processes", 1)
        if saved_world != self.world:  # the batch split and the saved RNG states are per process
            raise ValueError(f"{state_dir} was written by {saved_world} training process(es); resume it with "
                             f"{saved_world}, not {self.world}")
        self.accelerator.load_state(str(state_dir))
        self.state = state
        return True

    def _checkpoint_due(self) -> bool:
        due = time.time() - self._last_ckpt > self.cfg.checkpoint_minutes * 60
        if self.world > 1:  # the main process's clock decides, so that all save together
            due = bool(broadcast(torch.tensor([int(due)], device=self.device)).item())
        return due

    def _validate(self) -> dict:
        """The validation metrics, computed on the main process and sent to the others: per-patient
        Dice and the healthy-slice rate need every prediction in one place, and one process's pass
        over the validation pack is simpler than gathering sharded predictions."""
        acc = self.accelerator
        metrics = None
        if acc.is_main_process:
            metrics = self.task.validate(acc.unwrap_model(self.model), self.device, acc.autocast)
        if self.world > 1:
            metrics = broadcast_object_list([metrics])[0]
        return metrics

    def _export(self, metrics: dict) -> None:
        acc = self.accelerator
        if acc.is_main_process:
            self.task.export(acc.unwrap_model(self.model), self.run_dir / "best", metrics, self.run_info())
        acc.wait_for_everyone()

    def log(self, record: dict) -> None:
        if not self.accelerator.is_main_process:
            return
        record = {"time": time.strftime("%Y-%m-%dT%H:%M:%S"), **record}
        with open(self.run_dir / "log.jsonl", "a") as f:
            f.write(json.dumps(record) + "\n")
        tqdm.write(json.dumps(record))

    def run_info(self) -> dict:
        return {"task": self.task.name, "train_config": asdict(self.cfg), "hardware": self.hardware, "data": self.data_info,
                "epochs_done": self.state["epoch"], "global_step": self.state["global_step"],
                "train_seconds": round(self.state["train_seconds"], 1), "best_epoch": self.state["best_epoch"],
                "history": self.state["history"]}  # the learning curve: train loss and validation scores per epoch

    # -- the loop ------------------------------------------------------------------------
    def fit(self, stop_after: int | None = None) -> dict:
        """Train to the end (or early stop). `stop_after` pauses at that global step, as a killed
        session would, leaving a checkpoint to resume from."""
        cfg, task, acc = self.cfg, self.task, self.accelerator
        resumed = self.try_resume()
        self.log({"event": "start", "resumed": resumed, "hardware": self.hardware,
                  "steps_per_epoch": self.steps_per_epoch, "total_steps": self.total_steps, **self._pos()})
        n = task.num_train()
        paused = False
        while not self.state["done"] and self.state["epoch"] < cfg.epochs and not paused:
            epoch = self.state["epoch"]
            order = epoch_order(n, cfg.seed, epoch)
            self.model.train()
            bar = tqdm(total=self.steps_per_epoch, initial=self.state["step_in_epoch"],
                       desc=f"{task.name} epoch {epoch + 1}/{cfg.epochs}", unit="step", dynamic_ncols=True,
                       disable=not acc.is_main_process)
            running = []
            while self.state["step_in_epoch"] < self.steps_per_epoch:
                step = self.state["step_in_epoch"]
                t0 = time.time()
                seed = process_seed(cfg.seed, epoch, step, self.rank)
                torch.manual_seed(seed)
                g = torch.Generator().manual_seed(seed)
                idx = process_batch(order, step, cfg.batch_size, self.rank, self.world)
                batch = task.make_batch(idx, g, self.device)
                if self.use_channels_last:
                    batch = to_channels_last(batch)
                loss = task.loss(self.model, batch)
                acc.backward(loss)
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.state["step_in_epoch"] += 1
                self.state["global_step"] += 1
                self.state["train_seconds"] += time.time() - t0
                # the loss averaged over the processes, so that every process keeps the same state
                running.append((acc.reduce(loss.detach(), "mean") if self.world > 1 else loss).item())
                # the epoch's loss so far, kept in the checkpoint: a resumed epoch averages all its steps
                self.state["epoch_loss_sum"] = self.state.get("epoch_loss_sum", 0.0) + running[-1]
                self.state["epoch_loss_steps"] = self.state.get("epoch_loss_steps", 0) + 1
                bar.update(1)
                bar.set_postfix(loss=f"{np.mean(running[-20:]):.4f}", lr=f"{self.scheduler.get_last_lr()[0]:.2e}")
                if cfg.max_steps and self.state["global_step"] >= cfg.max_steps:
                    self.state["done"] = True
                    break
                if stop_after and self.state["global_step"] >= stop_after:
                    paused = True
                    break
                if self._checkpoint_due():
                    self.save_checkpoint()
            bar.close()
            if self.state["step_in_epoch"] >= self.steps_per_epoch:
                steps = self.state.pop("epoch_loss_steps", 0)
                total = self.state.pop("epoch_loss_sum", 0.0)
                self._end_epoch(total / steps if steps else float("nan"))
            self.save_checkpoint()
        if paused:
            self.log({"event": "paused", **self._pos()})
            return self.state
        if self.state["best_epoch"] is None:  # stopped inside the first epoch: export what we have
            metrics = self._validate()
            self.state["best_score"] = metrics["score"]
            self._export(metrics)
        if not self.state["done"]:
            self.state["done"] = True
        self.save_checkpoint()
        self.log({"event": "finished", **self._pos(), "best_score": self.state["best_score"],
                  "best_epoch": self.state["best_epoch"]})
        return self.state

    def _pos(self) -> dict:
        return {k: self.state[k] for k in ("epoch", "step_in_epoch", "global_step")}

    def _end_epoch(self, train_loss: float) -> None:
        t0 = time.time()
        metrics = self._validate()
        score = metrics["score"]
        self.state["epoch"] += 1
        self.state["step_in_epoch"] = 0
        improved = score > self.state["best_score"]
        record = {"event": "epoch", "epoch": self.state["epoch"], "train_loss": round(train_loss, 5),
                  **{k: (round(v, 5) if isinstance(v, float) else v) for k, v in metrics.items()},
                  "improved": improved, "val_seconds": round(time.time() - t0, 1)}
        self.state["history"].append(record)
        self.log(record)
        if improved:
            self.state["best_score"], self.state["best_epoch"], self.state["bad_epochs"] = score, self.state["epoch"], 0
            self._export(metrics)
        else:
            self.state["bad_epochs"] += 1
            if self.state["bad_epochs"] >= self.cfg.patience:
                self.log({"event": "early_stop", "epoch": self.state["epoch"]})
                self.state["done"] = True


def write_json(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")
