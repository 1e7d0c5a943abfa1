"""Assemble a deployable Hugging Face Space folder, and resolve the Space's settings at start-up.

`build_space(out)` writes out/: app.py (space/app.py), README.md (space/README.md with its YAML
header's `models:` / `datasets:` set to what this Space uses), requirements.txt
(space/requirements.txt), the tumorlens/ package, and tumorlens_space.json naming the models
(Hub repo ids) and the examples dataset; the other segmenters under models/ here (the LGG one),
by the names their records give them, go in under `segmenters`, for the app's model menu.
Weights are referenced, not copied, unless `include_weights=True` (then the model folders go to
out/models/). The committed example slices (space/examples: CC BY 4.0, each listed with its source and
licence in its README.md) go to out/examples/, where the app finds them. No other dataset file is ever
copied: the finished folder is checked and refused if it holds any other image, scan or data file, or
more than MAX_EXAMPLES examples.

Upload it with `hf upload USER/SPACE OUT . --repo-type=space`."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

from .errors import DataError
from .examples import EXAMPLES_DATASET_ENV, EXAMPLES_README, committed_examples
from .registry import DEFAULT_MODELS, DEFAULT_SEGMENTER, available_segmenters, default_model, hub_repo, segmenter_name

PACKAGE_DIR = Path(__file__).resolve().parent
REPO_ROOT = PACKAGE_DIR.parent
SPACE_DIR = REPO_ROOT / "space"
SPACE_CONFIG_NAME = "tumorlens_space.json"
# The published models (Hub repo ids) a Space loads when nothing else is named.
DEFAULT_HUB_MODELS = {kind: hub_repo(folder) for kind, (_, folder) in DEFAULT_MODELS.items()}
CONFIG_KEYS = {"segmenter": "seg_model", "classifier": "cls_model"}
MAX_EXAMPLES = 8      # committed example slices a Space may carry (CC BY 4.0 sets only)
BUNDLE_EXAMPLES = "examples"  # out/examples: tumorlens.examples.EXAMPLES_FOLDERS looks there in a Space
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".onnx")
# Never in a bundle: images, scans, arrays, tables, archives (the datasets stay where they are).
DATA_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".webp", ".dcm", ".dicom",
                 ".nii", ".nii.gz", ".gz", ".mat", ".h5", ".hdf5", ".npy", ".npz", ".parquet", ".arrow",
                 ".csv", ".zip", ".tar", ".tgz") + WEIGHT_SUFFIXES


# -- at start-up ---------------------------------------------------------------------------
def read_space_config(app_dir: str | Path) -> dict:
    path = Path(app_dir) / SPACE_CONFIG_NAME
    return json.loads(path.read_text()) if path.is_file() else {}


def space_settings(app_dir: str | Path) -> dict:
    """seg_model, cls_model, examples_dataset for the app in `app_dir`: the environment
    ($TUMORLENS_SEG_MODEL, $TUMORLENS_CLS_MODEL, $TUMORLENS_EXAMPLES_DATASET) first, then the
    bundle's tumorlens_space.json (relative folders resolved against app_dir), then the folders
    shipped under models/. And `segmenters`: name -> folder, repo id or name of every
    segmenter for the model menu: seg_model under its own name (brisc2025 unless it names
    another), and the others of the bundle, else those shipped under models/."""
    app_dir = Path(app_dir).resolve()
    cfg = read_space_config(app_dir)

    def local(value):
        return str(app_dir / value) if value and (app_dir / value).is_dir() else value

    out = {}
    for kind, key in CONFIG_KEYS.items():
        out[key] = local(os.environ.get(DEFAULT_MODELS[kind][0]) or cfg.get(key)) or default_model(kind)
    out["examples_dataset"] = os.environ.get(EXAMPLES_DATASET_ENV) or cfg.get("examples_dataset")
    extra = cfg["segmenters"] if "segmenters" in cfg else (available_segmenters() if not cfg else {})
    default = segmenter_name(out["seg_model"]) or DEFAULT_SEGMENTER
    out["segmenters"] = {name: local(ref) for name, ref in extra.items() if name != default}
    if out["seg_model"]:
        out["segmenters"][default] = out["seg_model"]
    return out


# -- the bundle ----------------------------------------------------------------------------
def _is_data_file(path: Path) -> bool:
    return path.name.lower().endswith(DATA_SUFFIXES)


def _check_repo_id(value: str, what: str) -> str:
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(value)
    except HFValidationError as exc:
        raise ValueError(f"{what} {value!r} is not a Hub repo id ({exc})") from exc
    if "/" not in value:
        raise ValueError(f"{what} {value!r} is not a Hub repo id: use owner/name")
    return value


def _model_ref(kind: str, value: str | None, out: Path, include_weights: bool, *,
               shipped: str | None = None, published: str | None = None) -> tuple[str, str | None]:
    """(reference written to the config, Hub repo id for the README or None). Without `value`: the
    `shipped` folder with include_weights, else the `published` repo id (default: kind's defaults)."""
    what = f"{kind} model"
    shipped = shipped or (default_model(kind) if kind in DEFAULT_MODELS else None)
    if include_weights:
        folder = Path(value).expanduser() if value else (Path(shipped) if shipped else None)
        if folder is None or not (folder / "config.json").is_file():
            raise DataError(folder, f"{what}: include_weights needs a local model folder with config.json")
        dest = out / "models" / folder.name
        dest.mkdir(parents=True)
        for f in sorted(folder.iterdir()):
            if f.is_file():
                shutil.copy2(f, dest / f.name)
        return f"models/{folder.name}", None
    value = value or published or DEFAULT_HUB_MODELS[kind]
    if Path(value).expanduser().is_dir():
        raise ValueError(f"{what} {value!r} is a local folder: a Space loads models by Hub repo id "
                         "(push it first), or pass include_weights=True to copy the weights into the Space")
    return _check_repo_id(value, what), value


def space_licence(default: str, folders: list[str]) -> str:
    """The Space's licence: `default` (the code's), unless it serves a model whose training data bind its
    weights to another licence (the LGG model: CC BY-NC-SA 4.0, from kaggle_3m), which then binds the Space."""
    from .data.registry import get_dataset
    from .model_record import read_record
    for folder in folders:
        trained_on = read_record(folder).trained_on
        licence = get_dataset(trained_on).model_licence if trained_on else None
        if licence and licence != default:
            return licence
    return default


def extra_segmenters_shipped() -> dict[str, None]:
    """The segmenters besides the default that are under models/ here (None: use
    each one's own reference, its Hub repo id or, with include_weights, its folder)."""
    return {name: None for name in available_segmenters() if name != DEFAULT_SEGMENTER}


def build_space(out: str | Path, *, seg_model: str | None = None, cls_model: str | None = None,
                segmenters: dict[str, str | None] | None = None,
                examples_dataset: str | None = None, include_weights: bool = False, overwrite: bool = False,
                space_dir: str | Path = SPACE_DIR, package_dir: str | Path = PACKAGE_DIR) -> Path:
    """Write a Space folder to `out` (see the module doc); returns `out`. `segmenters`: model
    name -> Hub repo id (a folder with include_weights; None: the one under models/) of the other
    segmenters for the model menu; default: those shipped under models/ (`extra_segmenters_shipped`)."""
    segmenters = extra_segmenters_shipped() if segmenters is None else dict(segmenters)
    shipped = available_segmenters()
    # a name without a reference needs a folder here (its Hub repo is the folder's name under HUB_OWNER)
    unknown = sorted(n for n, ref in segmenters.items() if ref is None and n not in shipped)
    unknown += [DEFAULT_SEGMENTER] if DEFAULT_SEGMENTER in segmenters else []
    if unknown:
        raise ValueError(f"segmenters: {unknown[0]!r} is not one of the other segmenters under models/ "
                         f"({', '.join(n for n in shipped if n != DEFAULT_SEGMENTER) or 'none'}); "
                         "name another with its Hub repo id")
    from huggingface_hub import SpaceCard

    out, space_dir, package_dir = Path(out).resolve(), Path(space_dir), Path(package_dir)
    for protected in (REPO_ROOT, space_dir.resolve(), package_dir.resolve()):
        if out == protected or out in protected.parents or (protected != REPO_ROOT and protected in out.parents):
            raise ValueError(f"refusing to build the Space into {out}: it would overwrite {protected}")
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise FileExistsError(f"{out} exists and is not empty (pass overwrite=True / --overwrite)")
        if not (out / SPACE_CONFIG_NAME).is_file():
            raise ValueError(f"refusing to overwrite {out}: it is not a Space folder built by this script")
        shutil.rmtree(out)
    if examples_dataset:
        _check_repo_id(examples_dataset, "examples dataset")
    out.mkdir(parents=True, exist_ok=True)
    try:
        seg_ref, seg_repo = _model_ref("segmenter", seg_model, out, include_weights)
        cls_ref, cls_repo = _model_ref("classifier", cls_model, out, include_weights)
        extra_refs = {}
        for name, value in segmenters.items():
            folder = shipped.get(name)
            extra_refs[name] = _model_ref(f"{name} segmenter", value, out, include_weights, shipped=folder,
                                          published=hub_repo(Path(folder).name) if folder else None)
        shutil.copy2(space_dir / "app.py", out / "app.py")
        shutil.copy2(space_dir / "requirements.txt", out / "requirements.txt")
        copy_examples(space_dir / "examples", out / BUNDLE_EXAMPLES)
        shutil.copytree(package_dir, out / "tumorlens",
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info", ".*"))
        card = SpaceCard.load(space_dir / "README.md")
        card.data.models = [r for r in (seg_repo, cls_repo, *(repo for _, repo in extra_refs.values())) if r] or None
        card.data.license = space_licence(card.data.license, [shipped[n] for n in extra_refs if n in shipped])
        card.data.datasets = [examples_dataset] if examples_dataset else None
        card.save(out / "README.md")
        config = {"seg_model": seg_ref, "cls_model": cls_ref, "examples_dataset": examples_dataset}
        if extra_refs:
            config["segmenters"] = {name: ref for name, (ref, _) in extra_refs.items()}
        (out / SPACE_CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n")
        check_space_folder(out, allow_weights=include_weights)
    except BaseException:
        shutil.rmtree(out, ignore_errors=True)
        raise
    return out


def copy_examples(source: Path, target: Path) -> list[str]:
    """Copy the example slices `source`'s README.md lists (with their source and licence) and the README
    itself to `target`; an unlisted file stays behind. Returns the copied slices' names."""
    listed = committed_examples(source) if (source / EXAMPLES_README).is_file() else []
    if not listed:
        return []
    target.mkdir(parents=True, exist_ok=True)
    shutil.copy2(source / EXAMPLES_README, target / EXAMPLES_README)
    for example in listed:
        shutil.copy2(example.path, target / Path(example.path).name)
    return [Path(e.path).name for e in listed]


def check_space_folder(folder: str | Path, *, allow_weights: bool = False) -> None:
    """Raise if `folder` holds a data file (or weights outside models/ when they are allowed); the
    example slices its examples/README.md lists are allowed, up to MAX_EXAMPLES."""
    folder = Path(folder)
    examples = folder / BUNDLE_EXAMPLES
    allowed = ({Path(BUNDLE_EXAMPLES) / Path(e.path).name for e in committed_examples(examples)}
               if (examples / EXAMPLES_README).is_file() else set())
    if len(allowed) > MAX_EXAMPLES:
        raise ValueError(f"the Space folder carries {len(allowed)} example slices; at most {MAX_EXAMPLES} may go")
    bad = []
    for path in folder.rglob("*"):
        if not path.is_file() or not _is_data_file(path):
            continue
        rel = path.relative_to(folder)
        if rel in allowed:
            continue
        if allow_weights and rel.parts[0] == "models" and path.name.lower().endswith(WEIGHT_SUFFIXES):
            continue
        bad.append(str(rel))
    if bad:
        raise ValueError(f"the Space folder must not hold data or weights files, found: {', '.join(sorted(bad)[:10])}")
