"""The exceptions TumorLens raises on bad data or bad input."""

from __future__ import annotations

from pathlib import Path


class TumorLensError(Exception):
    """Base class for every error TumorLens raises on purpose."""


class DataError(TumorLensError, ValueError):
    """A dataset or an input file cannot be used; `path` names the file or folder at fault."""

    def __init__(self, path: str | Path | None, reason: str):
        self.path = None if path is None else str(path)
        self.reason = reason
        super().__init__(f"{reason}: {self.path}" if self.path else reason)


class ConfigError(TumorLensError, ValueError):
    """A setting (an argument or an environment variable) has a value TumorLens cannot use."""
