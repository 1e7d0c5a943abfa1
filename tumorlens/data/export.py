"""Writing a built DatasetDict to Parquet with the image and mask bytes inside the file.

The loaders return `Image` columns that hold file paths; `Dataset.to_parquet` writes those as they
are, so the Parquet file is unreadable once the source folder moves. `save_to_disk` and
`push_to_hub` embed the files themselves; this does the same for Parquet, with the library's
`embed_table_storage` (as `push_to_hub` uses it).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import datasets
from datasets.table import embed_table_storage

from ..errors import DataError

EMBED_BATCH_ROWS = 100  # rows read into memory at a time; images are up to ~0.5 MB each


def embed_files(ds: datasets.Dataset, cache_file: Path) -> datasets.Dataset:
    """`ds` with every Image read into its `bytes` (its `path` cut to the file name), written to
    `cache_file` (memory-mapped, so a large split does not have to fit in memory)."""
    fmt = ds.format
    try:
        embedded = ds.with_format("arrow").map(
            embed_table_storage, batched=True, batch_size=EMBED_BATCH_ROWS, writer_batch_size=EMBED_BATCH_ROWS,
            cache_file_name=str(cache_file), load_from_cache_file=False, desc="embedding image files")
    except OSError as exc:  # a file that vanished or cannot be read since the loader listed it
        raise DataError(exc.filename or cache_file, f"cannot embed image file ({exc.__class__.__name__})") from exc
    return embedded.with_format(**fmt)


def write_parquet(ds: datasets.Dataset, path: Path) -> int:
    """Write `ds` to one Parquet file at `path`, images embedded; returns the bytes written."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # the embedded copy lives beside the output (same disk, room known to be there) until written
    with tempfile.TemporaryDirectory(dir=path.parent, prefix=".embed-") as tmp:
        embedded = embed_files(ds, Path(tmp) / "embedded.arrow")
        embedded.to_parquet(str(path))
        del embedded  # drop the memory map before the folder goes
    return path.stat().st_size


__all__ = ["embed_files", "write_parquet"]
