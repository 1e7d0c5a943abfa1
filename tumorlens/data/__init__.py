"""Dataset loaders, one module per dataset, each reading the original release layout into a
`datasets.DatasetDict` with `Image` features; one `DatasetRecord` per dataset (tumorlens.data.registry)."""

from . import brisc2025, figshare, lgg, registry
from ._common import DATA_ENV, TUMOR_CLASSES, TUMOR_CLASS_LABEL, data_home, resolve_root
from .registry import DatasetRecord, dataset_names, get_dataset, register

LOADERS = {r.name: r.loader for r in registry.records()}  # a snapshot; registry.get_dataset(name).loader is live

__all__ = ["brisc2025", "figshare", "lgg", "registry", "LOADERS", "DatasetRecord", "dataset_names", "get_dataset",
           "register", "DATA_ENV", "TUMOR_CLASSES", "TUMOR_CLASS_LABEL", "data_home", "resolve_root"]
