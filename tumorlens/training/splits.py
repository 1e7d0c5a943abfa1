"""Training and validation packs for a `DataSpec`: which rows train, which validate, decoded once and
cached (tumorlens.packs). The scored test data never enters. What was left out or added is returned
as provenance for the model's training_info.json, never written into the caller's objects."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import datasets
import numpy as np

from ..data import TUMOR_CLASSES, brisc2025, figshare, lgg
from ..data.registry import dataset_names, get_dataset
from ..errors import ConfigError
from ..packs import build_pack, cached, stratified_holdout
from .specs import DataSpec

FIGSHARE_CLASSES = get_dataset("figshare").class_names  # Figshare has no healthy slices


@dataclass
class Packs:
    train: dict
    val: dict
    class_names: list[str] | None
    provenance: dict = field(default_factory=dict)  # what was left out or added, for training_info


def subset(pack: dict, idx: np.ndarray) -> dict:
    return {k: v[idx] for k, v in pack.items()}


def _split_packs(name: str, ds, tr: np.ndarray, va: np.ndarray, data: DataSpec, build) -> tuple[dict, dict]:
    """Train/validation packs from rows `tr`/`va` of `ds`, decoded by `build(rows, desc)`. With a limit,
    only a seeded handful of rows is decoded and nothing cached (smoke runs, tests); otherwise the
    whole split is built once, cached as `name`, and the split taken from it."""
    if data.limit:
        rng = np.random.default_rng(data.seed)
        tr = np.sort(rng.choice(tr, size=min(data.limit, len(tr)), replace=False))
        va = np.sort(rng.choice(va, size=min(max(8, data.limit // 4), len(va)), replace=False))
        rows = np.concatenate([tr, va])
        pack = build(ds.select(rows), f"{name} (limit {data.limit})")
        return subset(pack, np.arange(len(tr))), subset(pack, np.arange(len(tr), len(rows)))
    if data.root:  # another tree must not reuse the default data's cached pack
        name += "-" + hashlib.sha1(str(Path(data.root).expanduser().resolve()).encode()).hexdigest()[:8]
    pack = cached(name, lambda: build(ds, name))
    return subset(pack, tr), subset(pack, va)


def _packs(key: str, ds, tr: np.ndarray, va: np.ndarray, size: int, data: DataSpec) -> tuple[dict, dict]:
    """Letterboxed image (and mask) packs at `size` px."""
    return _split_packs(f"{key}-{size}px", ds, tr, va, data, lambda rows, desc: build_pack(rows, size, desc=desc))


def block_holdout(ids: np.ndarray, fraction: float, seed: int, block: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Hold out whole runs of consecutive slice ids. The prepared Figshare copy lost its patient
    ids, but a patient's slices sit next to each other, so blocks keep validation nearly patient-wise."""
    blocks = np.asarray(ids) // block
    uniq = np.unique(blocks)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(uniq, size=max(1, round(len(uniq) * fraction)), replace=False)
    val = np.isin(blocks, chosen)
    return np.flatnonzero(~val), np.flatnonzero(val)


def brisc_rows_kept(ds, data: DataSpec) -> tuple[np.ndarray, dict]:
    """(rows of BRISC train to use, provenance): all, or those the audit does not find in
    `data.exclude_duplicates_of`."""
    other = data.exclude_duplicates_of
    if not other:
        return np.arange(len(ds)), {}
    from ..audit import EXCLUSION_MIN_CORRELATION, MAX_HAMMING, brisc_train_overlap
    dropped = brisc_train_overlap(other, data.root)
    keep = np.flatnonzero(~np.isin(np.asarray(ds["file_name"]), sorted(dropped)))
    print(f"left out {len(ds) - len(keep)} BRISC train images that the audit finds in {other}", flush=True)
    return keep, {
        "excluded_duplicates_of": other, "n_excluded": int(len(ds) - len(keep)), "n_kept": int(len(keep)),
        "audit": f"tumorlens.audit.brisc_train_overlap: pHash Hamming <= {MAX_HAMMING} and thumbnail "
                 f"correlation >= {EXCLUSION_MIN_CORRELATION} against every {other} image"}


def concat_packs(a: dict, b: dict) -> dict:
    """Rows of `b` after those of `a`, over the arrays both packs have."""
    return {k: np.concatenate([a[k], b[k]]) for k in a if k in b}


def extra_train_pack(data: DataSpec, brisc_val_names, size: int) -> tuple[dict, dict]:
    """(pack, provenance): every `data.extra_train` image (labels in TUMOR_CLASSES order) except those the
    audit finds among BRISC's validation (`brisc_val_names`) or test images, so neither score sees a
    copy of a training image."""
    from ..audit import EXCLUSION_MIN_CORRELATION, MAX_HAMMING, duplicates_of_brisc
    other = data.extra_train
    brisc_root = Path(data.root).expanduser() if data.root else None
    parent = brisc_root.parent if brisc_root is not None else None  # the folder beside BRISC holds `other`
    dropped = duplicates_of_brisc(other, set(map(str, brisc_val_names)), brisc_root, splits=("test",))
    ds = get_dataset(other).load(parent / other if parent is not None else None)["train"]
    rows = np.flatnonzero(~np.isin(np.asarray(ds["file_name"]), sorted(dropped)))
    pack = _packs(f"{other}-all", ds, rows, np.arange(0), size, data)[0]  # default data: the --dataset figshare cache
    print(f"added {len(pack['labels'])} {other} images to training; left out {len(ds) - len(rows)} that the audit finds "
          f"among BRISC validation/test", flush=True)
    return pack, {"extra_train": other, "n_extra": int(len(pack["labels"])), "n_extra_excluded": int(len(ds) - len(rows)),
                  "extra_audit": f"tumorlens.audit.duplicates_of_brisc: {other} images within pHash Hamming "
                                 f"<= {MAX_HAMMING} and thumbnail correlation >= {EXCLUSION_MIN_CORRELATION} of "
                                 f"any BRISC validation or test image left out"}


def check_data_spec(data: DataSpec, task: str) -> None:
    """Combinations no dataset supports, refused before anything is decoded."""
    record = get_dataset(data.dataset)  # ConfigError for an unknown name
    targets = ", ".join(extra_train_targets())
    if data.extra_train and not record.extra_train_target:
        raise ConfigError(f"--extra-train adds to BRISC training: it applies to --dataset {targets} only")
    if data.extra_train and data.extra_train == data.exclude_duplicates_of:
        raise ConfigError(f"--extra-train {data.extra_train} cannot be combined with "
                          f"--exclude-duplicates-of {data.exclude_duplicates_of}")
    if data.exclude_duplicates_of and not record.extra_train_target:
        raise ConfigError(f"--exclude-duplicates-of applies to --dataset {targets}")
    if not record.supports(task):
        raise ConfigError(f"{record.title} has no {task} data; train a {' or '.join(record.tasks)} model on it"
                          + (" (it has no tumor-type labels)" if record.class_names is None else ""))
    if record.folds and data.fold is None:
        raise ConfigError(f"--dataset {record.name} needs --fold K (the fold held out for testing)")


def extra_train_targets() -> tuple[str, ...]:
    """Datasets whose training data others can be added to or excluded from (BRISC 2025)."""
    return tuple(n for n in dataset_names() if get_dataset(n).extra_train_target)


def other_datasets(task: str | None = None) -> tuple[str, ...]:
    """Every dataset but the targets (that supports `task`): the choices of --exclude-duplicates-of
    and (classification) --extra-train."""
    return tuple(n for n in dataset_names(task) if not get_dataset(n).extra_train_target)


def train_val_packs(task: str, size: int, data: DataSpec) -> Packs:
    """Train and validation packs for `data`; the scored test data never enters. Each dataset's record
    names its function (`DatasetRecord.train_packs`, validation carved as `DatasetRecord.validation`):
    brisc_packs, lgg_packs, figshare_packs below."""
    check_data_spec(data, task)
    return get_dataset(data.dataset).packs(task, size, data)


def brisc_packs(task: str, size: int, data: DataSpec) -> Packs:
    """BRISC 2025: official train, split by class into train/validation (seeded); audit exclusions and
    extra training data applied."""
    if task == "segmentation":
        key = "brisc2025-seg+no_tumor-train"
        ds = brisc2025.load_segmentation(data.root, include_no_tumor=True)["train"]
    else:
        key = "brisc2025-cls-train"
        ds = brisc2025.load_classification(data.root)["train"]
    keep, provenance = brisc_rows_kept(ds, data)
    tr, va = stratified_holdout(np.asarray(ds["label"])[keep], data.val_fraction, data.seed)
    pack_tr, pack_va = _packs(key, ds, keep[tr], keep[va], size, data)
    if data.extra_train:
        extra, extra_provenance = extra_train_pack(data, pack_va["file_names"], size)
        pack_tr, provenance = concat_packs(pack_tr, extra), {**provenance, **extra_provenance}
    return Packs(pack_tr, pack_va, list(TUMOR_CLASSES), provenance)


def lgg_packs(task: str, size: int, data: DataSpec) -> Packs:
    """LGG: the recorded patient-wise train and validation splits."""
    splits = lgg.load(data.root)
    ds = datasets.concatenate_datasets([splits["train"], splits["validation"]])
    n_train = len(splits["train"])
    return Packs(*_packs("lgg-train+validation", ds, np.arange(n_train), np.arange(n_train, len(ds)), size, data), None)


def figshare_packs(task: str, size: int, data: DataSpec) -> Packs:
    """Figshare: the author's folds other than `data.fold`; validation held out in id blocks."""
    ds = figshare.load(data.root)["train"]
    folds = np.asarray(ds["fold"])
    train_rows = np.flatnonzero(folds != data.fold)
    tr, va = block_holdout(np.asarray(ds["id"])[train_rows], data.val_fraction, data.seed)
    pack_tr, pack_va = _packs("figshare-all", ds, train_rows[tr], train_rows[va], size, data)
    if task == "classification":
        remap = np.full(len(TUMOR_CLASSES), -1)
        remap[[TUMOR_CLASSES.index(c) for c in FIGSHARE_CLASSES]] = np.arange(len(FIGSHARE_CLASSES))
        for pack in (pack_tr, pack_va):
            pack["labels"] = remap[pack["labels"]]
    return Packs(pack_tr, pack_va, list(FIGSHARE_CLASSES))


def validation_source(data: DataSpec) -> str:
    """Where a model's inference settings were chosen, in words for its inference_config.json."""
    return get_dataset(data.dataset).validation_source(data.fold)


def tumor_roi_packs(data: DataSpec, pre, segmenter, segmenter_key: str) -> tuple[dict, dict]:
    """BRISC train/validation packs of tumor regions cut with `segmenter`'s masks, as inference cuts
    them. The whole train set is cached in dataset order per segmenter (weights, threshold, clean-up,
    TTA) and crop geometry; the seeded split is taken afterwards, as for every pack."""
    from ..packs import build_tumor_roi_pack
    if not get_dataset(data.dataset).extra_train_target:
        raise ConfigError("--tumor-roi trains on BRISC 2025 only")
    ds = brisc2025.load_classification(data.root)["train"]
    tr, va = stratified_holdout(np.asarray(ds["label"]), data.val_fraction, data.seed)
    name = (f"brisc2025-cls-train-roi-{segmenter_key}-t{segmenter.threshold}"
            f"-c{segmenter.min_component_fraction}-tta{int(segmenter.tta)}-m{pre.config.roi_margin}"
            f"-s{pre.config.roi_min_side}-{pre.size}px")
    return _split_packs(name, ds, tr, va, data, lambda rows, desc: build_tumor_roi_pack(rows, pre, segmenter, desc=desc))
