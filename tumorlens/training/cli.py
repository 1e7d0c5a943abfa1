"""Argument parsing and the run recipe shared by train/train_segmenter.py and train/train_classifier.py."""

from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

import datasets
import numpy as np

from ..data import TUMOR_CLASSES, brisc2025, figshare, lgg
from ..packs import build_pack, cached, patient_ids, stratified_holdout
from .loop import TrainConfig, Trainer, default_threads


def add_common_args(p: argparse.ArgumentParser, *, defaults: dict) -> None:
    p.add_argument("--dataset", choices=DATASETS, default="brisc2025",
                   help="brisc2025: official train; lgg: the recorded patient-wise split; "
                        "figshare: train on the author's folds other than --fold")
    p.add_argument("--fold", type=int, choices=range(1, figshare.N_FOLDS + 1),
                   help="Figshare cross-validation fold held out for testing")
    p.add_argument("--data-root", help="dataset root (default $TUMORLENS_DATA/<dataset> or ../shared/data/<dataset>)")
    p.add_argument("--run-dir", type=Path, default=Path(defaults["run_dir"]),
                   help="checkpoints, logs and the best model; re-running with the same dir resumes")
    p.add_argument("--out", type=Path, default=None,
                   help=f"Hub-layout folder for the finished model (default {defaults['out']} for BRISC, "
                        "the dataset's name in place of brisc2025 otherwise)")
    p.add_argument("--epochs", type=int, default=defaults["epochs"])
    p.add_argument("--batch-size", type=int, default=defaults["batch_size"])
    p.add_argument("--lr", type=float, default=defaults["lr"])
    p.add_argument("--encoder-lr-mult", type=float, default=0.3, help="encoder lr = lr x this")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--patience", type=int, default=8, help="early stop after this many epochs without a better val score")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                   help="auto: bf16 on CUDA and on CPUs with AVX-512 bf16/AMX, fp32 elsewhere")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of train held out for validation")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (smoke runs)")
    p.add_argument("--limit", type=int, default=None, help="use only this many training images (smoke runs)")
    p.add_argument("--checkpoint-minutes", type=float, default=10.0)
    p.add_argument("--random-init", action="store_true", help="do not start from ImageNet weights")
    p.add_argument("--init-from", help="fine-tune from a published model (local folder or Hub repo id)")
    p.add_argument("--exclude-duplicates-of", choices=[d for d in DATASETS if d != "brisc2025"],
                   help="BRISC only: leave out every train image the audit finds in this dataset, so the model "
                        "can be scored on it or start its cross-validation folds")
    p.add_argument("--extra-train", choices=("figshare",),
                   help="BRISC only: add this dataset's images to the training split, less every image the audit "
                        "finds among the BRISC validation or test images (validation stays BRISC only)")
    p.add_argument("--no-finalize", action="store_true", help="stop after training; skip export/eval/card")
    p.add_argument("--skip-eval", action="store_true", help="export without scoring on the test set")
    p.add_argument("--fp16", action=argparse.BooleanOptionalAction, default=True,
                   help="store the exported weights in fp16 (half the size)")
    p.add_argument("--push-to-hub", metavar="REPO", help="upload the finished folder to this Hub repo")
    p.add_argument("--private", action="store_true")


def resolve_out(args, default: str) -> None:
    """--out defaults to the BRISC model folder, renamed for another dataset."""
    if args.out is None:
        # cross-validation fold models are measurements, not releases: they stay in the run dir
        args.out = Path(args.run_dir) / "model" if args.dataset == "figshare" else Path(default.replace("brisc2025", args.dataset))


def train_config(args) -> TrainConfig:
    return TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, encoder_lr_mult=args.encoder_lr_mult,
                       weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs, precision=args.precision,
                       seed=args.seed, patience=args.patience, max_steps=args.max_steps,
                       checkpoint_minutes=args.checkpoint_minutes, num_threads=args.threads or default_threads(),
                       device=args.device)


def subset(pack: dict, idx: np.ndarray) -> dict:
    return {k: v[idx] for k, v in pack.items()}


DATASETS = ("brisc2025", "lgg", "figshare")
FIGSHARE_CLASSES = ("glioma", "meningioma", "pituitary")  # Figshare has no healthy slices


def _split_packs(name: str, ds, tr: np.ndarray, va: np.ndarray, args, build) -> tuple[dict, dict]:
    """Train/validation packs from rows `tr`/`va` of `ds`, decoded by `build(rows, desc)`. With --limit,
    only a seeded handful of rows is decoded and nothing cached (smoke runs, tests); otherwise the
    whole split is built once, cached as `name`, and the split taken from it."""
    if args.limit:
        rng = np.random.default_rng(args.seed)
        tr = np.sort(rng.choice(tr, size=min(args.limit, len(tr)), replace=False))
        va = np.sort(rng.choice(va, size=min(max(8, args.limit // 4), len(va)), replace=False))
        rows = np.concatenate([tr, va])
        pack = build(ds.select(rows), f"{name} (limit {args.limit})")
        return subset(pack, np.arange(len(tr))), subset(pack, np.arange(len(tr), len(rows)))
    if getattr(args, "data_root", None):  # another tree must not reuse the default data's cached pack
        name += "-" + hashlib.sha1(str(Path(args.data_root).expanduser().resolve()).encode()).hexdigest()[:8]
    pack = cached(name, lambda: build(ds, name))
    return subset(pack, tr), subset(pack, va)


def _packs(key: str, ds, tr: np.ndarray, va: np.ndarray, size: int, args) -> tuple[dict, dict]:
    """Letterboxed image (and mask) packs at `size` px."""
    return _split_packs(f"{key}-{size}px", ds, tr, va, args, lambda rows, desc: build_pack(rows, size, desc=desc))


def block_holdout(ids: np.ndarray, fraction: float, seed: int, block: int = 40) -> tuple[np.ndarray, np.ndarray]:
    """Hold out whole runs of consecutive slice ids. The prepared Figshare copy lost its patient
    ids, but a patient's slices sit next to each other, so blocks keep validation nearly patient-wise."""
    blocks = np.asarray(ids) // block
    uniq = np.unique(blocks)
    rng = np.random.default_rng(seed)
    chosen = rng.choice(uniq, size=max(1, round(len(uniq) * fraction)), replace=False)
    val = np.isin(blocks, chosen)
    return np.flatnonzero(~val), np.flatnonzero(val)


def brisc_rows_kept(ds, args) -> np.ndarray:
    """Rows of BRISC train to use: all, or (--exclude-duplicates-of D) those the audit does not find in
    dataset D. What was left out is recorded in args.training_data for the model's training_info."""
    other = getattr(args, "exclude_duplicates_of", None)
    if not other:
        return np.arange(len(ds))
    from ..audit import EXCLUSION_MIN_CORRELATION, MAX_HAMMING, brisc_train_overlap
    if args.dataset != "brisc2025":
        raise SystemExit("--exclude-duplicates-of applies to --dataset brisc2025")
    dropped = brisc_train_overlap(other, args.data_root)
    keep = np.flatnonzero(~np.isin(np.asarray(ds["file_name"]), sorted(dropped)))
    args.training_data = {
        "excluded_duplicates_of": other, "n_excluded": int(len(ds) - len(keep)), "n_kept": int(len(keep)),
        "audit": f"tumorlens.audit.brisc_train_overlap: pHash Hamming <= {MAX_HAMMING} and thumbnail "
                 f"correlation >= {EXCLUSION_MIN_CORRELATION} against every {other} image"}
    print(f"left out {len(ds) - len(keep)} BRISC train images that the audit finds in {other}", flush=True)
    return keep


def concat_packs(a: dict, b: dict) -> dict:
    """Rows of `b` after those of `a`, over the arrays both packs have."""
    return {k: np.concatenate([a[k], b[k]]) for k in a if k in b}


def extra_train_pack(other: str, brisc_val_names, size: int, args) -> dict:
    """Every `other` image (labels in TUMOR_CLASSES order) except those the audit finds among BRISC's
    validation (`brisc_val_names`) or test images, so neither score sees a copy of a training image.
    What was added and left out is recorded in args.training_data."""
    from ..audit import EXCLUSION_MIN_CORRELATION, MAX_HAMMING, duplicates_of_brisc
    if getattr(args, "exclude_duplicates_of", None) == other:
        raise SystemExit(f"--extra-train {other} cannot be combined with --exclude-duplicates-of {other}")
    brisc_root = Path(args.data_root).expanduser() if args.data_root else None
    parent = brisc_root.parent if brisc_root is not None else None  # the folder beside BRISC holds `other`
    dropped = duplicates_of_brisc(other, set(map(str, brisc_val_names)), brisc_root, splits=("test",))
    ds = figshare.load(parent / other if parent is not None else None)["train"]
    rows = np.flatnonzero(~np.isin(np.asarray(ds["file_name"]), sorted(dropped)))
    pack = _packs(f"{other}-all", ds, rows, np.arange(0), size, args)[0]  # the same cache as --dataset figshare
    args.training_data = {**getattr(args, "training_data", {}), "extra_train": other, "n_extra": int(len(pack["labels"])),
                          "n_extra_excluded": int(len(ds) - len(rows)),
                          "extra_audit": f"tumorlens.audit.duplicates_of_brisc: {other} images within pHash Hamming "
                                         f"<= {MAX_HAMMING} and thumbnail correlation >= {EXCLUSION_MIN_CORRELATION} of "
                                         f"any BRISC validation or test image left out"}
    print(f"added {len(pack['labels'])} {other} images to training; left out {len(ds) - len(rows)} that the audit finds "
          f"among BRISC validation/test", flush=True)
    return pack


def train_val_packs(task: str, size: int, args) -> tuple[dict, dict, list[str] | None]:
    """(train pack, validation pack, class names) for --dataset; the scored test data never enters.
    - brisc2025: official train, split by class into train/validation (seeded);
    - lgg: the recorded patient-wise train and validation splits;
    - figshare: the author's folds other than --fold; validation is held out in id blocks."""
    dataset = getattr(args, "dataset", "brisc2025")
    if getattr(args, "extra_train", None) and dataset != "brisc2025":
        raise SystemExit("--extra-train adds to BRISC training: it applies to --dataset brisc2025 only")
    if dataset == "brisc2025":
        if task == "segmentation":
            key = "brisc2025-seg+no_tumor-train"
            ds = brisc2025.load_segmentation(args.data_root, include_no_tumor=True)["train"]
        else:
            key = "brisc2025-cls-train"
            ds = brisc2025.load_classification(args.data_root)["train"]
        keep = brisc_rows_kept(ds, args)
        tr, va = stratified_holdout(np.asarray(ds["label"])[keep], args.val_fraction, args.seed)
        pack_tr, pack_va = _packs(key, ds, keep[tr], keep[va], size, args)
        if getattr(args, "extra_train", None):
            pack_tr = concat_packs(pack_tr, extra_train_pack(args.extra_train, pack_va["file_names"], size, args))
        return pack_tr, pack_va, list(TUMOR_CLASSES)
    if dataset == "lgg":
        if task != "segmentation":
            raise SystemExit("LGG has no tumor-type labels; train a segmenter on it")
        splits = lgg.load(args.data_root)
        ds = datasets.concatenate_datasets([splits["train"], splits["validation"]])
        n_train = len(splits["train"])
        return (*_packs("lgg-train+validation", ds, np.arange(n_train), np.arange(n_train, len(ds)), size, args), None)
    if dataset == "figshare":
        if args.fold is None:
            raise SystemExit("--dataset figshare needs --fold K (the fold held out for testing)")
        ds = figshare.load(args.data_root)["train"]
        folds = np.asarray(ds["fold"])
        train_rows = np.flatnonzero(folds != args.fold)
        tr, va = block_holdout(np.asarray(ds["id"])[train_rows], args.val_fraction, args.seed)
        pack_tr, pack_va = _packs("figshare-all", ds, train_rows[tr], train_rows[va], size, args)
        if task == "classification":
            remap = np.full(len(TUMOR_CLASSES), -1)
            remap[[TUMOR_CLASSES.index(c) for c in FIGSHARE_CLASSES]] = np.arange(len(FIGSHARE_CLASSES))
            for pack in (pack_tr, pack_va):
                pack["labels"] = remap[pack["labels"]]
        return pack_tr, pack_va, list(FIGSHARE_CLASSES)
    raise SystemExit(f"unknown dataset {dataset!r}")


def tumor_roi_packs(setup, args) -> tuple[dict, dict, list[str]]:
    """BRISC train/validation packs of tumor regions cut with the segmenter's masks, as inference
    cuts them. The whole train set is cached in dataset order per segmenter (weights, threshold,
    clean-up, TTA) and crop geometry; the seeded split is taken afterwards, as for every pack."""
    if getattr(args, "dataset", "brisc2025") != "brisc2025":
        raise SystemExit("--tumor-roi trains on BRISC 2025 only")
    import torch
    from ..inference import Segmenter, _model_key, default_model, resolve_model, segmenter_name
    from ..packs import build_tumor_roi_pack
    from ..preprocess import PreprocessConfig, Preprocessor
    from .tasks import arch_normalization
    seg_location = resolve_model(args.roi_segmenter) if args.roi_segmenter else default_model("segmenter")
    if seg_location is None:
        raise SystemExit("--tumor-roi needs a segmenter: none is shipped here, pass --roi-segmenter")
    setup.roi_segmenter = segmenter_name(seg_location) or str(seg_location)  # recorded in the model's config
    torch.set_num_threads(args.threads or default_threads())  # as training will: no oversubscribed cores
    seg = Segmenter.from_pretrained(seg_location)
    mean, std = arch_normalization(setup.arch)
    pre = Preprocessor(PreprocessConfig(input_size=setup.input_size, mean=mean, std=std, crop_to_tumor=True))
    ds = brisc2025.load_classification(args.data_root)["train"]
    tr, va = stratified_holdout(np.asarray(ds["label"]), args.val_fraction, args.seed)
    name = (f"brisc2025-cls-train-roi-{_model_key(seg_location, 'segmenter')}-t{seg.threshold}"
            f"-c{seg.min_component_fraction}-tta{int(seg.tta)}-m{pre.config.roi_margin}-s{pre.config.roi_min_side}"
            f"-{setup.input_size}px")
    train, val = _split_packs(name, ds, tr, va, args, lambda rows, desc: build_tumor_roi_pack(rows, pre, seg, desc=desc))
    return train, val, list(TUMOR_CLASSES)


def brisc_train_val(task: str, size: int, args) -> tuple[dict, dict]:
    args.dataset = "brisc2025"
    return train_val_packs(task, size, args)[:2]


def init_state_from(name_or_path: str | None, kind: str, label_names: list[str] | None = None) -> dict | None:
    """Weights of a published model to start from. A classifier whose classes differ (BRISC's 4 ->
    Figshare's 3) keeps the head rows of the classes the new task has, in the new order."""
    if not name_or_path:
        return None
    from ..models import load_classifier, load_segmenter
    if kind == "segmenter":
        return {k: v.float() for k, v in load_segmenter(name_or_path)[0].state_dict().items()}
    model, _, labels = load_classifier(name_or_path)
    state = {k: v.float() for k, v in model.state_dict().items()}
    if label_names is not None and list(labels) != list(label_names):
        missing = [n for n in label_names if n not in labels]
        if missing:
            raise SystemExit(f"--init-from {name_or_path}: it has no head for {missing} (its classes: {labels})")
        rows = [list(labels).index(n) for n in label_names]
        head = model.pretrained_cfg["classifier"]
        for key in (f"{head}.weight", f"{head}.bias"):
            state[key] = state[key][rows]
    return state


def run(task, args, kind: str) -> Path | None:
    cfg = train_config(args)
    data = {"dataset": args.dataset, "fold": args.fold, "n_train": task.num_train(), "n_val": len(next(iter(task.val.values()))),
            "init_from": args.init_from, **getattr(args, "training_data", {})}
    trainer = Trainer(task, cfg, args.run_dir, init_state=init_state_from(args.init_from, kind, getattr(task, "label_names", None)), data_info=data)
    (args.run_dir / "args.json").write_text(json.dumps({k: str(v) for k, v in vars(args).items()}, indent=1))
    state = trainer.fit()
    if args.no_finalize or not state.get("done"):
        return None
    return finalize(args.run_dir / "best", args.out, kind, args, val_pack=task.val)


def finalize(best: Path, out: Path, kind: str, args, val_pack: dict | None = None) -> Path:
    """Best checkpoint -> the shipped folder (fp16 if asked), scored on BRISC test, card rendered."""
    from ..evaluate import evaluate_model
    from ..hub import push_folder, write_card
    from ..models import load_classifier, load_segmenter, save_classifier, save_segmenter
    info = json.loads((best / "training_info.json").read_text())
    if out.exists():
        shutil.rmtree(out)
    if kind == "segmenter":
        model, pre = load_segmenter(best)
        save_segmenter(model, out, pre, fp16=args.fp16, training_info=info)
        tune_segmenter(out, args)
    else:
        model, pre, labels = load_classifier(best)
        save_classifier(model, out, labels, pre, fp16=args.fp16, training_info=info)
        if val_pack is not None:
            tune_classifier(out, val_pack, args)
    if not args.skip_eval:
        evaluate_model(out, kind, data_root=args.data_root, dataset=args.dataset, fold=args.fold,
                       seg_model=getattr(args, "roi_segmenter", None))
    if args.dataset == "figshare":  # a cross-validation fold: a measurement, not a release
        return out
    write_card(out, kind, repo_id=args.push_to_hub)  # the card's load lines name the repo it is pushed to
    if args.push_to_hub:
        push_folder(out, args.push_to_hub, private=args.private)
    return out


def tune_segmenter(folder: Path, args) -> dict:
    """Threshold and clean-up chosen on the validation split carved from train (never on test)."""
    from ..inference import INFERENCE_CONFIG_NAME, Segmenter, tune_postprocess
    seg = Segmenter.from_pretrained(folder, runtime="torch")
    _, val, _ = train_val_packs("segmentation", seg.pre.size, args)
    probs = seg.probabilities(list(val["images"]))
    tuned = tune_postprocess(probs, val["masks"], patients=patient_ids(val))  # LGG: per patient, as Buda et al. 2019
    where = {"brisc2025": "validation split carved from BRISC train",
             "lgg": "LGG patient-wise validation split",
             "figshare": f"validation id blocks carved from the Figshare folds other than fold {args.fold}"}
    tuned["chosen_on"] = f"{where[args.dataset]} ({len(probs)} slices, seed {args.seed})"
    (folder / INFERENCE_CONFIG_NAME).write_text(json.dumps(tuned, indent=1) + "\n")
    return tuned


def tune_classifier(folder: Path, val_pack: dict, args) -> dict:
    """hflip TTA on or off, chosen on the validation pack (images as the model sees them: letterboxed,
    tumor regions for a mask-guided model), never on test."""
    import torch
    from ..inference import INFERENCE_CONFIG_NAME, Classifier, choose_tta
    clf = Classifier.from_pretrained(folder, tta=False)
    x = clf.pre.normalize(torch.from_numpy(val_pack["images"]))
    plain = np.concatenate([clf.runner(x[i:i + 64]).numpy() for i in range(0, len(x), 64)])
    flipped = np.concatenate([clf.runner(x[i:i + 64].flip(3)).numpy() for i in range(0, len(x), 64)])
    tuned = choose_tta(plain, flipped, val_pack["labels"])
    where = {"brisc2025": "validation split carved from BRISC train",
             "figshare": f"validation id blocks carved from the Figshare folds other than fold {args.fold}"}
    tuned["chosen_on"] = f"{where[args.dataset]} ({len(plain)} images, seed {args.seed}, runtime {clf.runner.runtime})"
    (folder / INFERENCE_CONFIG_NAME).write_text(json.dumps(tuned, indent=1) + "\n")
    return tuned


__all__ = ["add_common_args", "brisc_train_val", "train_val_packs", "tumor_roi_packs", "resolve_out", "run", "finalize",
           "tune_segmenter", "tune_classifier", "DATASETS", "FIGSHARE_CLASSES"]
