"""Multi-process training: two CPU processes (torchrun, gloo) draw disjoint batches, keep one model
in step, and only the main process writes the log, the trainer state and the exported model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tumorlens.training.loop import _step_seed, epoch_order, process_batch, process_seed

HERE = Path(__file__).resolve().parent
SCRIPT = HERE / "_multiprocess_train.py"


TIMINGS = ("time", "train_seconds", "val_seconds")  # each process's own clock


def _untimed(x):
    if isinstance(x, dict):
        return {k: _untimed(v) for k, v in x.items() if k not in TIMINGS}
    return [_untimed(v) for v in x] if isinstance(x, list) else x


def _same(a, b) -> bool:
    """Records equal but for timings, compared as JSON text (NaN metrics, where no slice is healthy, equal themselves)."""
    return json.dumps(_untimed(a), sort_keys=True) == json.dumps(_untimed(b), sort_keys=True)


def test_process_batches_cut_each_epoch_into_disjoint_equal_shares():
    order = epoch_order(20, seed=3, epoch=1)
    steps, bs, world = 20 // (3 * 2), 3, 2
    shares = [[i for s in range(steps) for i in process_batch(order, s, bs, r, world)] for r in range(world)]
    assert [len(x) for x in shares] == [steps * bs] * world
    assert not set(shares[0]) & set(shares[1])
    assert set(shares[0]) | set(shares[1]) <= set(range(20))
    # one process: the step's block of the permutation, as before sharding
    assert all(np.array_equal(process_batch(order, s, bs), order[s * bs:(s + 1) * bs]) for s in range(steps))
    # augmentation: the single-process seed on the main process, another one on each other process
    assert process_seed(3, 1, 2) == process_seed(3, 1, 2, rank=0) == _step_seed(3, 1, 2)
    assert len({process_seed(3, 1, 2, rank=r) for r in range(4)}) == 4


@pytest.fixture(scope="module")
def two_process_run(data_home, tmp_path_factory):
    out = tmp_path_factory.mktemp("multiprocess")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": os.pathsep.join([str(HERE.parent), os.environ.get("PYTHONPATH", "")])}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           str(SCRIPT), str(data_home), str(out)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-6000:]
    ranks = [json.loads((out / f"seen_rank{r}.json").read_text()) for r in (0, 1)]
    return out, ranks, done.stdout


@pytest.mark.slow  # trains in two processes
def test_two_processes_draw_disjoint_shares_of_each_epoch(two_process_run):
    out, ranks, _ = two_process_run
    assert [r["rank"] for r in ranks] == [0, 1] and all(r["world"] == 2 for r in ranks)
    assert all(r["backend"] == "gloo" and r["distributed_type"].endswith("MULTI_CPU") for r in ranks)
    assert [r["is_main_process"] for r in ranks] == [True, False]
    n_train, batch = 8, 2
    for key in ("seen", "split_seen"):  # the uninterrupted run and the paused + resumed one
        for epoch in (0, 1):
            shares = [[f for b in r[key] if b["epoch"] == epoch for f in b["files"]] for r in ranks]
            steps = [[b["step"] for b in r[key] if b["epoch"] == epoch] for r in ranks]
            assert steps == [[0, 1], [0, 1]], (key, epoch, steps)  # the same steps in both processes
            assert all(len(s) == len(set(s)) == 2 * batch for s in shares), shares
            assert not set(shares[0]) & set(shares[1]), (key, epoch, shares)
            assert len(set(shares[0]) | set(shares[1])) == n_train  # together: the whole epoch
    # the resumed run drew what the uninterrupted one drew, process by process
    assert all(r["split_seen"] == r["seen"] for r in ranks)
    assert all(r["steps_per_epoch"] == n_train // (batch * 2) for r in ranks)


@pytest.mark.slow  # trains in two processes
def test_the_processes_train_one_model_and_resume_exactly(two_process_run):
    _, ranks, _ = two_process_run
    assert ranks[0]["param_digest"] == ranks[1]["param_digest"]  # gradients averaged: weights in step
    assert all(r["resume_equal"] and r["split_digest"] == r["digest"] for r in ranks)
    for r in ranks:  # every process keeps the same trainer state (losses averaged, metrics broadcast)
        assert _same(r["state"], ranks[0]["state"]) and _same(r["split_state"]["history"], r["state"]["history"])
        assert r["state"]["global_step"] == 4 and r["state"]["done"] and r["state"]["num_processes"] == 2


@pytest.mark.slow  # trains in two processes
@pytest.mark.parametrize("run", ["whole", "split"])
def test_only_the_main_process_writes(two_process_run, run):
    from tumorlens.models import load_segmenter
    out, ranks, stdout = two_process_run
    run_dir = out / run
    assert sorted(p.name for p in run_dir.iterdir()) == ["best", "log.jsonl", "state"]
    model, pre = load_segmenter(run_dir / "best")  # one exported model, and it loads
    assert pre.input_size == 64
    info = json.loads((run_dir / "best" / "training_info.json").read_text())
    state = json.loads((run_dir / "state" / "trainer_state.json").read_text())
    assert _same(state, ranks[0]["state" if run == "whole" else "split_state"])
    assert info["best_epoch"] == state["best_epoch"] and _same(info["history"], state["history"][:state["best_epoch"]])
    if state["best_epoch"] == state["epoch"]:  # exported at the end: the main process's final weights
        from _multiprocess_train import digest
        assert digest(model.state_dict()) == ranks[0]["digest"]
    # the checkpoint: one model, optimizer and scheduler, and each process's RNG state
    assert {p.name for p in (run_dir / "state").iterdir()} == {
        "model.safetensors", "optimizer.bin", "scheduler.bin", "random_states_0.pkl", "random_states_1.pkl",
        "trainer_state.json"}
    events = [json.loads(line)["event"] for line in (run_dir / "log.jsonl").read_text().splitlines()]
    expected = (["start", "epoch", "epoch", "finished"] if run == "whole"
                else ["start", "epoch", "paused", "start", "epoch", "finished"])
    assert events == expected  # each record once: the other process logs nothing
    assert stdout.count('"event": "start"') == 3  # and prints nothing (3 fits in all)


@pytest.mark.slow  # trains in two processes
def test_a_checkpoint_resumes_only_with_its_process_count(two_process_run, data_home):
    from tumorlens.training.loop import TrainConfig, Trainer
    from tumorlens.training.tasks import SegmentationSetup, SegmentationTask
    from _multiprocess_train import CONFIG, SIZE, real_slices
    out, _, _ = two_process_run
    train, val = real_slices(data_home)
    task = SegmentationTask(train, val, SegmentationSetup(imagenet_init=False, input_size=SIZE, crop=48, val_batch=4))
    trainer = Trainer(task, TrainConfig(**CONFIG), out / "whole")
    with pytest.raises(ValueError, match="written by 2 training process"):
        trainer.fit()
