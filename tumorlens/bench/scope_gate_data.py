"""The data the out-of-scope gate is fitted and measured on (tumorlens.bench.scope_gate): each
dataset's training, validation and test files exactly as training and evaluation carve them, decoded
as an upload would be; the framing augmentation; MR files from other packages."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np

from ..scope_gate import GATE_STAGES, StageFeatures, extract_features

log = logging.getLogger("tumorlens.bench.scope_gate")


@dataclass(frozen=True)
class Source:
    """One dataset the gate accepts: how its training and validation are carved, and its test rows."""
    name: str
    task: str
    fold: int | None = None

    def spec(self):
        from ..training.specs import DataSpec
        return DataSpec(dataset=self.name, fold=self.fold)

    def describe(self) -> dict[str, str]:
        from ..data.registry import get_dataset
        record = get_dataset(self.name)
        fold = f" --fold {self.fold}" if self.fold is not None else ""
        return {"dataset": record.title,
                "train": f"the training part of train_val_packs({self.task!r}, ..., DataSpec(dataset={self.name!r}{fold}))",
                "validation": record.validation_source(self.fold),
                "test": record.describe_test(self.fold, task=self.task)}


SOURCES = (Source("brisc2025", "classification"), Source("figshare", "classification", 1), Source("lgg", "segmentation"))


def _paths(ds) -> dict[str, str]:
    import datasets
    raw = ds.cast_column("image", datasets.Image(decode=False))
    return {name: im["path"] for name, im in zip(raw["file_name"], raw["image"])}


def split_files(source: Source, data_home: Path | None = None) -> dict[str, list[str]]:
    """{"train", "val", "test"} -> image paths, exactly the rows training and evaluation use (the
    train/validation file names come from `train_val_packs`; decoding happens here, from the files)."""
    from ..data.registry import get_dataset
    from ..training.splits import train_val_packs
    record = get_dataset(source.name)
    root = record.root_in(data_home)
    spec = replace(source.spec(), root=root) if root is not None else source.spec()
    packs = train_val_packs(source.task, 256, spec)
    names = {"train": list(packs.train["file_names"]), "val": list(packs.val["file_names"])}
    del packs
    lookup = {}
    for _, ds in record.groups(record.load(root)):
        lookup.update(_paths(ds))
    test = record.test_rows(root, source.task, source.fold)
    return {**{k: [lookup[n] for n in v] for k, v in names.items()}, "test": list(_paths(test).values())}


def limited(files: dict[str, list[str]], limit: int | None) -> dict[str, list[str]]:
    """The first `limit` files of each split (every file without a limit): smoke runs."""
    return files if not limit else {k: v[:limit] for k, v in files.items()}


def decode(path: str) -> np.ndarray:
    from ..decode import decode_image
    return decode_image(path)


class _Progress:
    def __init__(self, label: str, total: int):
        self.label, self.total, self.t0, self.last = label, total, time.time(), 0.0

    def __call__(self, done: int) -> None:
        if time.time() - self.last > 20 or done == self.total:
            self.last = time.time()
            rate = (time.time() - self.t0) / max(done, 1) * 1000
            print(f"  {self.label}: {done}/{self.total} ({rate:.0f} ms/img)", flush=True)


def features_of_files(extractor: StageFeatures, paths: list[str], label: str, size: int,
                      augment_rng: np.random.Generator | None = None) -> dict[str, np.ndarray]:
    """Features of the decoded files; with `augment_rng`, of one `augment_view` of each instead."""
    out: dict[str, list] = {}
    step = 256  # decode a chunk at a time: memory stays small
    prog = _Progress(label, len(paths))
    for i in range(0, len(paths), step):
        images = [decode(p) for p in paths[i:i + step]]
        if augment_rng is not None:
            images = [augment_view(img, augment_rng) for img in images]
        feats = extract_features(extractor, images, size=size)
        for k, v in feats.items():
            out.setdefault(k, []).append(v)
        prog(min(i + step, len(paths)))
    return {k: np.concatenate(v) for k, v in out.items()}


def concat_features(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([a[k], b[k]]) for k in a}


def take_rows(feats: dict[str, np.ndarray], idx) -> dict[str, np.ndarray]:
    return {k: v[idx] for k, v in feats.items()}


def backbone_features(classifier: str, stages: int = GATE_STAGES) -> StageFeatures:
    import torch
    from ..models import load_classifier
    torch.set_num_threads(1)
    net, pre, _ = load_classifier(classifier)
    return StageFeatures(net, pre.mean, pre.std, stages)


# -- augmentation ------------------------------------------------------------------------------------------
AUGMENT = ("one extra view of every sampled training slice, seeded, framing only (no intensity change): a crop "
           "to 60-100 % of each side (tighter or non-square framing), black padding of 10-50 % on one axis (a "
           "non-square slice), or a rotation of up to 15 degrees, each a quarter of the time (a quarter: none); "
           "a mirror half the time")


def augment_view(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The framing an upload of the same kind of slice may have (see AUGMENT)."""
    from PIL import Image
    a = rgb
    h, w = a.shape[:2]
    kind = int(rng.integers(4))
    if kind == 0:
        ch, cw = max(16, int(h * rng.uniform(0.6, 1.0))), max(16, int(w * rng.uniform(0.6, 1.0)))
        top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        a = a[top:top + ch, left:left + cw]
    elif kind == 1:
        pad = int(max(h, w) * rng.uniform(0.1, 0.5))
        half = (pad // 2, pad - pad // 2)
        a = np.pad(a, (half, (0, 0), (0, 0)) if rng.random() < 0.5 else ((0, 0), half, (0, 0)))
    elif kind == 2:
        a = np.asarray(Image.fromarray(np.ascontiguousarray(a)).rotate(float(rng.uniform(-15, 15)), resample=Image.BILINEAR))
    if rng.random() < 0.5:
        a = a[:, ::-1]
    return np.ascontiguousarray(a)


def other_mr_images() -> list[tuple[str, np.ndarray]]:
    """MR slices that are not from the three datasets, read the way the app reads uploads (load_scan):
    pydicom's MR_small.dcm, matplotlib's s1045.ima (a 256x256 16-bit brain slice), nibabel's
    anatomical.nii (its middle slice along each axis) and example4d.nii.gz (an fMRI volume)."""
    import gzip
    import tempfile

    from ..decode import window_to_uint8
    from ..scan_analysis import load_scan
    out = []
    try:
        import pydicom.data
        path = Path(pydicom.data.__file__).parent / "test_files" / "MR_small.dcm"
        scan = load_scan(path)
        out.append(("pydicom/MR_small.dcm", scan.rgb(scan.n_slices // 2)))
    except Exception as exc:  # noqa: BLE001 - a missing optional file is named, not fatal
        log.warning("pydicom's MR_small.dcm: %s", exc)
    try:
        import matplotlib
        raw = gzip.open(Path(matplotlib.get_data_path()) / "sample_data" / "s1045.ima.gz").read()
        arr = np.frombuffer(raw, np.uint16).reshape(256, 256)
        out.append(("matplotlib/s1045.ima", np.repeat(window_to_uint8(arr.astype(np.float64))[..., None], 3, 2)))
    except Exception as exc:  # noqa: BLE001
        log.warning("matplotlib's s1045.ima: %s", exc)
    try:
        import nibabel
        folder = Path(nibabel.__file__).parent / "tests" / "data"
        scan = load_scan(folder / "anatomical.nii")
        out.append(("nibabel/anatomical.nii[as the app reads it, middle slice]", scan.rgb(scan.n_slices // 2)))
        vol = np.asarray(nibabel.load(folder / "anatomical.nii").dataobj, np.float64)
        for axis in range(3):  # and the middle slice along each voxel axis, windowed here
            sl = np.take(vol, vol.shape[axis] // 2, axis=axis)
            out.append((f"nibabel/anatomical.nii[axis {axis}]", np.repeat(window_to_uint8(sl)[..., None], 3, 2)))
        with tempfile.TemporaryDirectory() as tmp:  # the app's reader on a 3-D copy of the fMRI's first volume
            four = nibabel.load(folder / "example4d.nii.gz")
            first = nibabel.Nifti1Image(np.asarray(four.dataobj)[..., 0], four.affine)
            nibabel.save(first, Path(tmp) / "example4d_t0.nii.gz")
            scan = load_scan(Path(tmp) / "example4d_t0.nii.gz")
            out.append(("nibabel/example4d.nii.gz[t0, middle slice]", scan.rgb(scan.n_slices // 2)))
    except Exception as exc:  # noqa: BLE001
        log.warning("nibabel's MR files: %s", exc)
    return out
