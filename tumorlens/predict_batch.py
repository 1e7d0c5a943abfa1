"""The engine behind `tumorlens predict`: inputs through the models in batches, and across processes.

- `plan(paths)`: one `Job` per input, in order, each with its output stem decided from the whole list
  (so names do not depend on how the inputs are split, nor on which inputs fail).
- `run_jobs(jobs, task, batch_size=16)`: each job's row (the columns it fills). Inputs are decoded ahead
  (`read_scan` in `DECODE_WORKERS` threads; at most `batch_size` inputs and about `PREFETCH_BYTES` ahead
  of the models) while the models run. Single slices (plain images, one-frame DICOM, 2-D NIfTI) go
  through the scope gate, the segmenter and the classifier `batch_size` at a time
  (`scan_analysis.analyze_slices`), and one writer thread writes their outputs while the next batch runs;
  volumes (NIfTI, series, multi-frame DICOM) go through `analyze_scan` whole, as ever. A batch whose model
  call fails is redone one input at a time, so each input gets its own error. `batch_size` 1: the
  one-at-a-time path (decode, analyze, write).
- `run_distributed(jobs, task, ...)`: under `torchrun` / `accelerate launch` (WORLD_SIZE > 1), each
  process takes its share of the jobs (contiguous, in order), pickles its rows to OUT/.predict-part-<rank>.pkl,
  and after all finish every process reads all parts back in rank order (so all agree on the rows and the
  exit status); the main process writes predictions.csv, then removes the parts.

Every row and output is what the one-at-a-time path gives: the same masks, probabilities up to float noise
(which can move a rounded CSV digit), the same refusals and per-row errors."""

from __future__ import annotations

import logging
import os
import pickle
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

from .errors import TumorLensError
from .inference import Pipeline
from .medical_io import CLI_BUDGET, Scan, read_scan
from .scan_analysis import LARGEST, ScanResult, analyze_scan, analyze_slices
from .scan_outputs import safe_stem, write_outputs
from .scope_gate import ScopeGate

log = logging.getLogger("tumorlens.predict")  # one logger for the command's lines, whichever module writes them

DEFAULT_BATCH = 16      # slices per model call: the models' throughput flattens out about here on a CPU
DECODE_WORKERS = 2      # threads reading inputs ahead of the models
PREFETCH_BYTES = 512 * 1024 ** 2  # decoded pixels held ahead of the models (volumes are large), besides those in flight
PART_NAME = ".predict-part-{rank}.pkl"
OUTPUT_COLUMNS = {"png": "mask_file", "nifti": "nifti_mask_file", "dicom-seg": "dicom_seg_file",
                  "secondary-capture": "secondary_capture_file", "report": "report_file"}
ROW_ERRORS = (TumorLensError, OSError, MemoryError)  # an input's own failure: its row says so, the rest go on


@dataclass(frozen=True)
class Job:
    index: int   # position in the input list (the row's place in predictions.csv)
    path: Path
    stem: str    # the start of its output names, unique in the run


@dataclass
class Task:
    """What every input of one run is analyzed with and where its outputs go."""

    out: Path
    pipeline: Pipeline
    threshold: float | None = None
    pixel_spacing_mm: float | None = None
    formats: Sequence[str] | None = None
    models: Sequence = ()
    scope_gate: ScopeGate | None = None
    cam: bool = False

    def spacing(self, scan: Scan) -> float | None:
        """The entered spacing serves files whose header gives none; a header's wins."""
        return None if scan.pixel_spacing_mm else self.pixel_spacing_mm


def unique_stem(path: Path, used: set[str]) -> str:
    """A safe stem for `path`'s outputs, not yet used in this run (compared without case)."""
    base = safe_stem(path.name)
    stem, k = base, 2
    while stem.lower() in used:
        stem, k = f"{base}_{k}", k + 1
    used.add(stem.lower())
    return stem


def plan(paths: Sequence[Path]) -> list[Job]:
    used: set[str] = set()
    return [Job(i, Path(p), unique_stem(Path(p), used)) for i, p in enumerate(paths)]


# -- one input's row ---------------------------------------------------------------------------------
def error_row(path: Path, exc: BaseException) -> dict:
    if isinstance(exc, MemoryError):
        log.error("%s: out of memory", path)
        return {"status": "error: not enough memory to read or analyze this file"}
    log.error("%s: %s", path, exc)
    return {"status": f"error: {exc}"}


def guarded(path: Path, work: Callable[[], dict]) -> dict:
    """`work()`, or the error row of an input's own failure."""
    try:
        return work()
    except ROW_ERRORS as exc:
        return error_row(path, exc)


def log_notes(path: Path, scan: Scan) -> None:
    for note in scan.notes:  # e.g. the other series in the folder, and how to pick one
        log.info("%s: %s", path, note)


def analyze_whole(job: Job, scan: Scan, task: Task) -> ScanResult:
    """analyze_scan as predict has always called it: a single slice as an image; a volume whole."""
    volume = scan.is_volume and task.pipeline.segmenter is not None
    return analyze_scan(task.pipeline, scan, threshold=task.threshold, whole_volume=volume, spacing=task.spacing(scan),
                        slice_index=LARGEST if volume else None, scope_gate=task.scope_gate)


def finish_row(job: Job, scan: Scan, result: ScanResult, task: Task) -> dict:
    """The row of one analyzed input, its outputs written (none for a refused one)."""
    path, pipeline, out = job.path, task.pipeline, task.out
    scope = {} if result.scope is None else {"in_scope": result.scope.in_scope,
                                             "scope_score": round(result.scope.score, 4)}
    if result.refused:
        log.warning("%s: refused: %s", path, result.scope.message)
        return {"status": "refused", "slices": scan.n_slices, "nonfinite_pixels": scan.nonfinite, **scope}
    outputs = write_outputs(result, out, formats=task.formats, stem=job.stem, models=task.models, name=path.name)
    for fmt, why in outputs.skipped.items():
        log.warning("%s: no %s output: %s", path, fmt, why)
    row, seg, analysis = {"status": "ok", "slices": scan.n_slices, **scope}, result.segmentation, result.analysis
    row.update({column: outputs.name(fmt) for fmt, column in OUTPUT_COLUMNS.items()})
    row["skipped"] = "; ".join(f"{fmt}: {why}" for fmt, why in outputs.skipped.items())
    row["nonfinite_pixels"] = scan.nonfinite
    volume = scan.is_volume and pipeline.segmenter is not None
    if scan.is_volume:
        row["slice"] = result.index
    if volume:
        row.update(tumor_found=result.tumor_found, tumor_pixels=result.tumor_voxels,
                   tumor_percent=round(100 * result.tumor_voxels / (scan.n_slices * seg.mask.size), 4),
                   tumor_slices=result.tumor_slices)
        if result.volume_cm3 is not None:
            row["volume_cm3"] = round(result.volume_cm3, 4)
    elif seg is not None:
        row.update(tumor_found=result.tumor_found, tumor_pixels=seg.area_px,
                   tumor_percent=round(100 * seg.area_fraction, 4))
        if analysis.area_mm2 is not None:
            row["area_mm2"] = round(analysis.area_mm2, 2)
    if analysis.class_probabilities:
        row["predicted_class"] = analysis.predicted_class
        row.update({f"prob_{c}": round(p, 6) for c, p in analysis.class_probabilities.items()})
        if task.cam:
            row["cam_file"] = write_cam(pipeline, result, out / f"{job.stem}_cam.png").name
    return row


def write_cam(pipeline: Pipeline, result, path: Path) -> Path:
    """The Grad-CAM map of the tumor-type decision on the slice `result` classified, with its colour bar."""
    from PIL import Image

    from .explain import explain
    from .visualize import activation_image
    seg, classifier = result.segmentation, pipeline.classifier
    mask = pipeline.segmenter.classifier_mask(seg) if classifier.needs_masks and seg is not None else None
    activation = explain(classifier, result.analysis.image, mask)
    Image.fromarray(activation_image(result.analysis.image, activation.map, activation.label)).save(path)
    return path


def predict_one(job: Job, task: Task) -> dict:
    """One input the one-at-a-time way: read, analyze, write."""
    def work() -> dict:
        scan = read_scan(job.path, budget=CLI_BUDGET)
        log_notes(job.path, scan)
        return finish_row(job, scan, analyze_whole(job, scan, task), task)
    return guarded(job.path, work)


# -- many inputs -------------------------------------------------------------------------------------
def _decode(path: Path) -> Scan | BaseException:
    """read_scan in a worker thread: the scan, or the input's own failure (raised later, in order)."""
    try:
        return read_scan(path, budget=CLI_BUDGET)
    except ROW_ERRORS as exc:
        return exc


def _held_bytes(ahead) -> int:
    """Bytes of the scans already decoded ahead (those still being read count 0)."""
    held = 0
    for _, _, future in ahead:
        if future.done() and isinstance(future.result(), Scan):
            held += sum(s.nbytes for s in future.result().slices)
    return held


def run_jobs(jobs: Sequence[Job], task: Task, *, batch_size: int = DEFAULT_BATCH,
             progress: Callable[[int], None] | None = None) -> list[dict]:
    """Each job's row (the columns it fills), in the jobs' order; `progress(n)` as n more are done."""
    jobs = list(jobs)
    done = progress or (lambda n: None)
    if batch_size <= 1:
        rows = []
        for job in jobs:
            rows.append(predict_one(job, task))
            done(1)
        return rows
    rows: list[dict | Future | None] = [None] * len(jobs)
    # outputs are written in a thread while the next batch runs; Grad-CAM needs the classifier, so not with --cam
    writer = ThreadPoolExecutor(1, thread_name_prefix="predict-write") if not task.cam else None
    pending: list[tuple[int, Job, Scan]] = []
    writing: deque[list[Future]] = deque()  # the writer's batches not yet known done

    def flush() -> None:
        batch = analyze_batch([(job, scan) for _, job, scan in pending], task, batch_size, writer)
        for (k, _, _), row in zip(pending, batch):
            rows[k] = row
        writing.append([row for row in batch if isinstance(row, Future)])
        while len(writing) > 1:  # at most one batch waits to be written while the next one runs: bounded memory
            for future in writing.popleft():
                future.result()
        done(len(pending))
        pending.clear()

    try:
        with ThreadPoolExecutor(DECODE_WORKERS, thread_name_prefix="predict-read") as readers:
            ahead: deque[tuple[int, Job, Future]] = deque()
            queue = iter(enumerate(jobs))

            def top_up() -> None:  # at most batch_size inputs, and about PREFETCH_BYTES, decoded ahead of the models
                while len(ahead) < batch_size and _held_bytes(ahead) < PREFETCH_BYTES:
                    nxt = next(queue, None)
                    if nxt is None:
                        return
                    ahead.append((*nxt, readers.submit(_decode, nxt[1].path)))

            top_up()
            while ahead:
                k, job, future = ahead.popleft()
                top_up()
                scan = future.result()
                if isinstance(scan, BaseException):
                    rows[k] = error_row(job.path, scan)
                    done(1)
                    continue
                log_notes(job.path, scan)
                if scan.is_volume:  # whole, as ever
                    rows[k] = guarded(job.path, lambda: finish_row(job, scan, analyze_whole(job, scan, task), task))
                    done(1)
                    continue
                pending.append((k, job, scan))
                if len(pending) >= batch_size:
                    flush()
            if pending:
                flush()
    finally:
        if writer is not None:
            writer.shutdown(wait=True)
    return [row.result() if isinstance(row, Future) else row for row in rows]


def analyze_batch(items: list[tuple[Job, Scan]], task: Task, batch_size: int,
                  writer: ThreadPoolExecutor | None = None) -> list[dict | Future]:
    """The rows (or Futures of them from `writer`) of single-slice scans analyzed together, in order."""
    try:
        results = analyze_slices(task.pipeline, [scan for _, scan in items], threshold=task.threshold,
                                 spacing=[task.spacing(scan) for _, scan in items], scope_gate=task.scope_gate,
                                 batch_size=batch_size)
    except ROW_ERRORS as exc:  # the batch failed as a whole: one at a time, so each input gets its own answer
        log.info("a batch of %d inputs failed (%s); analyzing them one at a time", len(items), exc)
        return [guarded(job.path, lambda job=job, scan=scan: finish_row(job, scan, analyze_whole(job, scan, task), task))
                for job, scan in items]
    out = []
    for (job, scan), result in zip(items, results):
        if isinstance(result, BaseException):
            out.append(error_row(job.path, result))
            continue
        work = (lambda job=job, scan=scan, result=result: finish_row(job, scan, result, task))
        out.append(writer.submit(guarded, job.path, work) if writer else guarded(job.path, work))
    return out


# -- several processes (torchrun, accelerate launch) --------------------------------------------------
def world_size() -> int:
    """Processes in this launch: WORLD_SIZE as torchrun and accelerate launch set it (1 when unset)."""
    try:
        return max(1, int(os.environ.get("WORLD_SIZE", "1")))
    except ValueError:
        return 1


def _state():
    """accelerate's PartialState; on a machine without CUDA asked for with cpu=True, else a torchrun
    launch on CPUs would be one process of one (accelerate treats WORLD_SIZE as MULTI_CPU only then)."""
    import torch
    from accelerate import PartialState
    return PartialState(cpu=not torch.cuda.is_available())


def is_main_process() -> bool:
    return world_size() <= 1 or _state().is_main_process


def load_pipeline(seg: str | None, clf: str | None, *, runtime: str = "auto") -> Pipeline:
    """The models, as `Pipeline.from_pretrained(seg, clf, runtime=runtime)` in one process. Under a launch
    of several: this process's GPU where accelerate gives it one, else torch threads cores // processes;
    and on a CPU with runtime 'auto', each model's runtime and precision are the ones a one-process run
    picks (measured at all cores, tumorlens.runtime_choice), so every process computes what one process
    would and the CSV is the same. The main process loads first (one measurement, one ONNX export)."""
    world = world_size()
    if world <= 1:
        return Pipeline.from_pretrained(seg, clf, runtime=runtime)
    import torch

    from .hardware import default_threads
    from .inference import Classifier, Segmenter
    state = _state()
    device = str(state.device) if state.device.type == "cuda" else "cpu"
    cores = default_threads()
    picks = {"seg": {}, "clf": {}}
    if device == "cpu" and runtime == "auto":
        torch.set_num_threads(cores)  # what a one-process run measures with
        with state.main_process_first():
            probe = Pipeline.from_pretrained(seg, clf, runtime="auto")
        for key, model in (("seg", probe.segmenter), ("clf", probe.classifier)):
            if model is not None:
                picks[key] = {"runtime": model.runner.runtime, "precision": model.runner.precision}
        del probe
    torch.set_num_threads(max(1, cores // world))
    with state.main_process_first():
        pipeline = Pipeline(
            Segmenter.from_pretrained(seg, device=device, **({"runtime": runtime} | picks["seg"])) if seg else None,
            Classifier.from_pretrained(clf, device=device, **({"runtime": runtime} | picks["clf"])) if clf else None)
    runs = [f"{name} {m.runner.runtime}/{m.runner.precision}"
            for name, m in (("segmenter", pipeline.segmenter), ("classifier", pipeline.classifier)) if m is not None]
    log.info("process %d of %d: %s, torch threads %d; %s", state.process_index + 1, world, device,
             torch.get_num_threads(), ", ".join(runs))
    return pipeline


def run_distributed(jobs: Sequence[Job], task: Task, *, batch_size: int = DEFAULT_BATCH,
                    desc: str = "predicting") -> tuple[list[dict], bool]:
    """(every job's row, in order, on every process; whether this is the main process): this process
    runs its contiguous share of `jobs`, the rows meet through part files in `task.out`."""
    from tqdm.auto import tqdm
    state = _state()
    if state.num_processes != world_size():
        raise RuntimeError(f"WORLD_SIZE is {world_size()} but accelerate sees {state.num_processes} processes")
    with state.split_between_processes(list(jobs)) as mine:
        first = state.process_index * (len(jobs) // state.num_processes) + min(state.process_index,
                                                                                len(jobs) % state.num_processes)
        log.info("process %d of %d: inputs %d-%d of %d", state.process_index + 1, state.num_processes, first + 1,
                 first + len(mine), len(jobs))
        with tqdm(total=len(mine), desc=desc, unit="file", disable=not state.is_main_process) as bar:
            rows = run_jobs(mine, task, batch_size=batch_size, progress=bar.update)
    part = task.out / PART_NAME.format(rank=state.process_index)
    tmp = part.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        pickle.dump(rows, f)
    tmp.replace(part)
    state.wait_for_everyone()
    merged = []
    for rank in range(state.num_processes):  # ranks hold consecutive shares: rank order is input order
        with open(task.out / PART_NAME.format(rank=rank), "rb") as f:
            merged += pickle.load(f)
    state.wait_for_everyone()  # every process has read every part
    if state.is_main_process:
        for rank in range(state.num_processes):
            (task.out / PART_NAME.format(rank=rank)).unlink(missing_ok=True)
    if len(merged) != len(jobs):
        raise RuntimeError(f"the processes returned {len(merged)} rows for {len(jobs)} inputs")
    return merged, state.is_main_process
