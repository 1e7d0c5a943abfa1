"""Dataset cards for `build --push-to-hub`: licence, source, citation (from the dataset's record), layout."""

from __future__ import annotations

import datasets
from huggingface_hub import DatasetCard, DatasetCardData

from .registry import get_dataset


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
    content = f"""---
{card_data.to_yaml()}
---
# {info.title}{f' ({task})' if task else ''}

Re-packaged by `python -m tumorlens.data build {name}` from the original release layout, images as released.

- Source: {info.source}
- Licence: {info.licence} (as released by the authors)
- Columns: {columns}

| split | rows |
|---|---|
{splits}

{info.notes}

Research use only; not for clinical decisions.
"""
    return DatasetCard(content)
