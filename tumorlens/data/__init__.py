"""Dataset loaders, one module per dataset, each reading the original release layout into a
`datasets.DatasetDict` with `Image` features."""

from . import brisc2025, figshare, lgg
from ._common import DATA_ENV, TUMOR_CLASSES, TUMOR_CLASS_LABEL, data_home, resolve_root

LOADERS = {
    "brisc2025": brisc2025.load,
    "figshare": figshare.load,
    "lgg": lgg.load,
}

__all__ = ["brisc2025", "figshare", "lgg", "LOADERS", "DATA_ENV", "TUMOR_CLASSES", "TUMOR_CLASS_LABEL",
           "data_home", "resolve_root"]
