"""The files of one upload, listed safely before any is read: a folder's files, a `.zip`'s members or
the several files of a multi-file upload, each a named `Member` whose bytes are read on demand.

`dicom_series` reads a DICOM series from these lists; nothing here knows DICOM beyond its file names
and preamble (`looks_dicom`).

- A folder: walked in name order, sub-folders too; macOS resource forks (`._*`) and DICOMDIR (an
  index, no image) are skipped; over `MAX_SERIES_FILES` files is refused. A file over the upload limit
  is refused when it looks like DICOM, else left out unread (counted).
- Several files (the app's multi-file upload): listed where they are, named by their base names; the
  same caps as a folder, plus `MAX_SERIES_BYTES` for all of them together. Nothing is copied.
- A zip: read in memory, member by member; nothing is extracted or written to disk. Before any member
  is inflated: member names that are absolute, climb out with `..` or are symbolic links are refused,
  as are encrypted members, more than `MAX_SERIES_FILES` members (the count the zip's end record
  declares is checked before zipfile builds its list), a member over the upload limit, a declared
  total over `MAX_SERIES_BYTES`, and a zip (or a member over `RATIO_MIN_BYTES`) that inflates over
  `MAX_ZIP_RATIO` times (a zip bomb). zipfile never inflates a member past its declared size."""

from __future__ import annotations

import os
import re
import struct
import zipfile
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, Sequence

from .errors import DataError
from .medical_io import DICOM_SUFFIXES, MAX_SLICES, MAX_UPLOAD_BYTES, _reason, check_upload_size

ZIP_SUFFIX = ".zip"
MAX_SERIES_FILES = 4 * MAX_SLICES         # files in a folder or an upload, members in a zip
MAX_SERIES_BYTES = 4 * MAX_UPLOAD_BYTES   # what a zip may unpack to (declared sizes), or several files hold
MAX_ZIP_RATIO = 100                       # inflated / compressed, for the whole zip and each member over:
RATIO_MIN_BYTES = 2 ** 20


@dataclass
class Member:
    """One file of an upload: its name (relative to the folder, the zip member name or the base name:
    what a message shows), its size and how to read its bytes."""

    name: str
    size: int
    read: Callable[[], bytes]


@dataclass
class Listing:
    """An upload's files, what it is called in messages, and how many files were left out unread."""

    members: list[Member]
    what: str                   # 'the folder' | 'the zip' | 'the files'
    skipped: int = 0


def is_zip_name(path: Path) -> bool:
    return path.name.lower().endswith(ZIP_SUFFIX)


def walk(folder: Path, limit: int | None) -> Iterator[Path]:
    """The files under `folder` in name order (resource forks and DICOMDIR left out); DataError past `limit`."""
    count = 0
    for root, dirs, files in os.walk(folder):
        dirs.sort()
        for name in sorted(files):
            if name.startswith("._") or name.upper() == "DICOMDIR":
                continue  # macOS resource forks; the media directory (it indexes, holds no image)
            count += 1
            if limit is not None and count > limit:
                raise DataError(folder, f"the folder holds over {limit:,} files; give the folder of one series")
            yield Path(root) / name


def looks_dicom(path: Path) -> bool:
    """A .dcm/.dicom name, or the DICM preamble."""
    if path.name.lower().endswith(DICOM_SUFFIXES):
        return True
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:132] == b"DICM"
    except OSError:
        return False


def _too_big(where: Path, name: str, size: int, max_bytes: int) -> DataError:
    return DataError(where, f"'{name}' is {size / 2**20:,.0f} MB, over the {max_bytes / 2**20:.0f} MB limit per file")


def folder_listing(folder: Path, max_bytes: int = MAX_UPLOAD_BYTES) -> Listing:
    members, skipped = [], 0
    for path in walk(folder, MAX_SERIES_FILES):
        try:
            size = path.stat().st_size
        except OSError:
            continue
        name = path.relative_to(folder).as_posix()
        if size > max_bytes:
            if looks_dicom(path):
                raise _too_big(folder, name, size, max_bytes)
            skipped += 1
            continue
        members.append(Member(name, size, path.read_bytes))
    return Listing(members, "the folder", skipped)


def files_listing(paths: Sequence[str | Path], max_bytes: int = MAX_UPLOAD_BYTES) -> Listing:
    """Several uploaded files as one listing, read where they are."""
    paths = [Path(p) for p in paths]
    if len(paths) > MAX_SERIES_FILES:
        raise DataError(None, f"{len(paths):,} files, over the {MAX_SERIES_FILES:,} file limit; give one series")
    members, total = [], 0
    for path in paths:
        if not path.is_file():
            raise DataError(path, f"'{path.name}' is not a file")
        size = path.stat().st_size
        if size > max_bytes:
            raise _too_big(path, path.name, size, max_bytes)
        total += size
        members.append(Member(path.name, size, path.read_bytes))
    if total > MAX_SERIES_BYTES:
        raise DataError(None, f"the files hold {total / 2**20:,.0f} MB, over the {MAX_SERIES_BYTES / 2**20:,.0f} MB "
                              "limit; give one series")
    return Listing(members, "the files")


def _unsafe(info: zipfile.ZipInfo) -> str | None:
    name = info.filename
    if name.startswith(("/", "\\")) or re.match(r"[A-Za-z]:", name):
        return "an absolute path"
    if ".." in re.split(r"[\\/]", name):
        return "a path out of the zip's folder ('..')"
    if (info.external_attr >> 16) & 0o170000 == 0o120000:
        return "a symbolic link"
    if info.flag_bits & 0x1:
        return "encrypted"
    return None


def _declared_entries(fp) -> int | None:
    """The member count the zip's end record declares (zip64 too), read before zipfile builds its list."""
    fp.seek(0, os.SEEK_END)
    size = fp.tell()
    fp.seek(max(0, size - (65536 + 22)))
    tail = fp.read()
    at = tail.rfind(b"PK\x05\x06")
    if at < 0 or len(tail) - at < 22:
        return None
    entries = struct.unpack("<H", tail[at + 10:at + 12])[0]
    if entries == 0xFFFF and at >= 20 and tail[at - 20:at - 16] == b"PK\x06\x07":  # zip64: its own record
        offset = struct.unpack("<Q", tail[at - 12:at - 4])[0]
        fp.seek(offset)
        record = fp.read(56)
        if record[:4] == b"PK\x06\x06" and len(record) >= 40:
            entries = struct.unpack("<Q", record[32:40])[0]
    return entries


def _zip_listing(path: Path, zf: zipfile.ZipFile, max_bytes: int) -> Listing:
    infos = zf.infolist()
    if len(infos) > MAX_SERIES_FILES:
        raise DataError(path, f"the zip holds {len(infos):,} members, over the {MAX_SERIES_FILES:,} limit")
    members, total, packed = [], 0, 0
    for info in infos:
        why = _unsafe(info)
        if why:
            raise DataError(path, f"the zip holds an unsafe member '{info.filename}' ({why}); nothing was extracted")
        if info.is_dir():
            continue
        if info.file_size > max_bytes:
            raise DataError(path, f"zip member '{info.filename}' unpacks to {info.file_size / 2**20:,.0f} MB, over "
                                  f"the {max_bytes / 2**20:.0f} MB limit per file")
        ratio = info.file_size / max(1, info.compress_size)
        if info.file_size >= RATIO_MIN_BYTES and ratio > MAX_ZIP_RATIO:
            raise DataError(path, f"zip member '{info.filename}' inflates {ratio:,.0f} times (over {MAX_ZIP_RATIO}): "
                                  "refused as a zip bomb")
        total, packed = total + info.file_size, packed + info.compress_size
        name = info.filename
        if name.startswith("__MACOSX/") or name.rsplit("/", 1)[-1].startswith("._"):
            continue
        members.append(Member(name, info.file_size, lambda info=info: zf.read(info)))
    if total > MAX_SERIES_BYTES:
        raise DataError(path, f"the zip unpacks to {total / 2**20:,.0f} MB, over the {MAX_SERIES_BYTES / 2**20:,.0f} MB "
                              "limit; zip one series")
    if total >= RATIO_MIN_BYTES and total / max(1, packed) > MAX_ZIP_RATIO:
        raise DataError(path, f"the zip inflates {total / max(1, packed):,.0f} times (over {MAX_ZIP_RATIO}): "
                              "refused as a zip bomb")
    return Listing(members, "the zip")


@contextmanager
def open_listing(path: Path, max_bytes: int = MAX_UPLOAD_BYTES) -> Iterator[Listing]:
    """A folder's or a zip's listing, its members readable inside the `with` block (a zip stays open)."""
    if path.is_dir():
        yield folder_listing(path, max_bytes)
        return
    if not path.is_file():
        raise DataError(path, "file or folder not found")
    if not is_zip_name(path):
        raise DataError(path, "a series (#<SeriesInstanceUID>) can be picked from a folder or a .zip, not one file")
    check_upload_size(path, max_bytes)
    with open(path, "rb") as fp:
        entries = _declared_entries(fp)
        if entries is None or not zipfile.is_zipfile(fp):
            raise DataError(path, "not a readable zip file")
        if entries > MAX_SERIES_FILES:
            raise DataError(path, f"the zip holds {entries:,} members, over the {MAX_SERIES_FILES:,} limit")
        try:
            with zipfile.ZipFile(fp) as zf:
                yield _zip_listing(path, zf, max_bytes)
        except (zipfile.BadZipFile, zipfile.LargeZipFile) as exc:
            raise DataError(path, f"not a readable zip file ({_reason(exc, path)})") from exc


__all__ = ["Member", "Listing", "open_listing", "files_listing", "folder_listing", "walk", "looks_dicom",
           "is_zip_name", "ZIP_SUFFIX", "MAX_SERIES_FILES", "MAX_SERIES_BYTES", "MAX_ZIP_RATIO", "RATIO_MIN_BYTES"]
