"""Dataset cards for `build --push-to-hub`: licence, source, citation, layout."""

from __future__ import annotations

import datasets
from huggingface_hub import DatasetCard, DatasetCardData

SOURCES = {
    "brisc2025": {
        "pretty": "BRISC 2025", "license": "cc-by-4.0",
        "source": "Fateh et al., BRISC: Annotated Dataset for Brain Tumor Segmentation and Classification, arXiv 2506.14318",
        "notes": "About 50 byte-identical pairs exist in classification_task, 7 across train and test; BRISC reuses "
                 "slices of earlier public collections (Figshare among them). Audit before comparing scores.",
    },
    "figshare": {
        "pretty": "Figshare brain tumor dataset (Cheng)", "license": "cc-by-4.0",
        "source": "Cheng et al., 2017, doi 10.6084/m9.figshare.1512427",
        "notes": "Report 5-fold cross-validation over the `fold` column: the author's patient-wise folds.",
    },
    "lgg": {
        "pretty": "LGG MRI Segmentation (kaggle_3m)", "license": "cc-by-nc-sa-4.0",
        "source": "Buda et al., 2019, Computers in Biology and Medicine; TCGA-LGG via TCIA",
        "notes": "Splits are patient-wise (seeded, recorded in tumorlens/data/splits/lgg_kaggle_3m.json). "
                 "Channels: pre-contrast, FLAIR, post-contrast.",
    },
}


def dataset_card(name: str, dsd: datasets.DatasetDict, task: str | None = None) -> DatasetCard:
    info = SOURCES[name]
    card_data = DatasetCardData(
        license=info["license"],
        task_categories=["image-segmentation", "image-classification"],
        tags=["medical", "mri", "brain-tumor", "tumorlens"],
        pretty_name=info["pretty"],
    )
    splits = "\n".join(f"| {split} | {len(ds)} |" for split, ds in dsd.items())
    columns = ", ".join(f"`{c}`" for c in next(iter(dsd.values())).column_names)
    content = f"""---
{card_data.to_yaml()}
---
# {info['pretty']}{f' ({task})' if task else ''}

Re-packaged by `python -m tumorlens.data build {name}` from the original release layout, images as released.

- Source: {info['source']}
- Licence: {info['license']} (as released by the authors)
- Columns: {columns}

| split | rows |
|---|---|
{splits}

{info['notes']}

Research use only; not for clinical decisions.
"""
    return DatasetCard(content)
