"""The exceptions TumorLens raises on bad data or bad input."""

from __future__ import annotations

import re
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


class HubError(TumorLensError):
    """The Hugging Face Hub cannot be used for a push: no token, offline mode, an unreachable endpoint, a
    rejected token or a failed upload. Its message is one line naming the endpoint; nothing local is changed."""


class BudgetError(DataError):
    """A file is readable but costs more than one request may (`medical_io.RequestBudget`): the
    reason says the limit, the file's size in those terms and what to do instead."""


_ABS_PATH = re.compile(r"(?<![\w.~-])(?:[A-Za-z]:)?[\\/](?:[^\s'\"<>|:\\/]+[\\/])+([^\s'\"<>|:\\/]*)")


def public_message(text: str, *paths: str | Path | None) -> str:
    """`text` as a stranger may see it: each of `paths` (and any other absolute path, such as a
    temporary upload folder) cut to its base name, so no server folder shows."""
    text = str(text)
    for path in paths:
        if not path:
            continue
        path = Path(path)
        for form in {str(path), str(path.resolve()) if path.is_absolute() else str(path)}:
            if len(form) > 1 and form != path.name:
                text = text.replace(form, path.name)
    return _ABS_PATH.sub(lambda m: m.group(1) or "(a folder)", text)
