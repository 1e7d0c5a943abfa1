"""Dataset cards for `build --push-to-hub`: licence, source, citation (from the dataset's record), layout."""

from __future__ import annotations

import datasets
from huggingface_hub import DatasetCard, DatasetCardData
from huggingface_hub.errors import RemoteEntryNotFoundError

from .registry import get_dataset

# the views `tumorlens publish` pushes as configs of one Hub dataset repo (the first is the default)
PUBLISHED_VIEWS = {"brisc2025": ("classification", "segmentation")}


def dataset_card(name: str, dsd: datasets.DatasetDict, task: str | None = None) -> DatasetCard:
    info = get_dataset(name)
    card_data = DatasetCardData(
        license=info.licence,
        task_categories=["image-segmentation", "image-classification"],
        tags=["medical", "mri", "brain-tumor", "tumorlens"],
        pretty_name=info.title,
    )
    splits = "\n".join(f"| {split} | {len(ds)} |" for split, ds in dsd.items())
    columns = ", ".join(f"`{c}`" for c in next(iter(dsd.values())).column_names)
    views = PUBLISHED_VIEWS.get(name)
    configs = (f"- Configs: {', '.join(f'`{v}`' for v in views)} (the first is the default); load one with "
               f"`datasets.load_dataset(repo_id, \"{views[-1]}\")`. The rows below are the "
               f"`{task or views[0]}` config's.\n") if views else ""
    content = f"""---
{card_data.to_yaml()}
---
# {info.title}{f' ({task})' if task else ''}

Re-packaged by `python -m tumorlens.data build {name}` from the original release layout, images as released.

- Source: {info.source}
- Licence: {info.licence} (as released by the authors)
- Columns: {columns}
{configs}
| split | rows |
|---|---|
{splits}

{info.notes}

Research use only; not for clinical decisions.
"""
    return DatasetCard(content)


def merge_card(existing: DatasetCard, card: DatasetCard) -> DatasetCard:
    """`existing` (the Hub's README) with `card`'s metadata and text laid over it. Keys `card` does
    not set stay as they are: `configs:` and `dataset_info:` (written by `push_to_hub`, which the Hub
    reads the splits and features from) and anything the owner added; list keys (tags, ...) are unioned."""
    merged = DatasetCard(existing.content)  # a copy: `existing` is left untouched
    for key, value in card.data.to_dict().items():
        old = merged.data.get(key)
        if isinstance(value, list) and isinstance(old, list):
            value = old + [v for v in value if v not in old]
        merged.data[key] = value
    merged.text = card.text
    return merged


def push_dataset_card(card: DatasetCard, repo_id: str, *, token: str | None = None) -> DatasetCard:
    """Push `card` to `repo_id` merged into the README already there (see merge_card), never over it."""
    try:
        merged = merge_card(DatasetCard.load(repo_id, repo_type="dataset", token=token), card)
    except RemoteEntryNotFoundError:  # no README yet (only when the dataset was not pushed first)
        merged = card
    merged.push_to_hub(repo_id, token=token, repo_type="dataset")
    return merged
