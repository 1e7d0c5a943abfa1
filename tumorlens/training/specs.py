"""What a training run is asked to do, as typed, frozen records: which data, how to release the result.
The model setups (`SegmentationSetup`, `ClassificationSetup`) live with their tasks and the schedule
(`TrainConfig`) with the loop; the command line only fills these in (tumorlens.training.cli)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class DataSpec:
    """Which data trains and validates a model. `root` is the dataset's own folder (None: its loader's
    default, see tumorlens.data); datasets added with `extra_train` are found beside it."""

    dataset: str = "brisc2025"
    root: Path | None = None
    fold: int | None = None                 # Figshare: the fold held out for testing
    val_fraction: float = 0.1
    seed: int = 42
    limit: int | None = None                # smoke runs: only this many training images, nothing cached
    exclude_duplicates_of: str | None = None
    extra_train: str | None = None


@dataclass(frozen=True)
class ReleaseSpec:
    """What happens to the best checkpoint: exported to `out` (fp16 if asked), tuned on validation,
    scored on test, given a card, pushed. `out` None: the run directory's `model/` folder."""

    out: Path | None = None
    replace: bool = False                   # an existing non-empty `out` is only replaced when asked
    finalize: bool = True                   # False: stop after training
    evaluate: bool = True                   # False: export without scoring on the test set
    fp16: bool = True
    push_to_hub: str | None = None
    private: bool = False


@dataclass(frozen=True)
class TrainResult:
    """Where the run left its model, and what it was made from."""

    run_dir: Path
    model: Path | None                      # None when training stopped early (resume) or no release was asked
    provenance: dict = field(default_factory=dict)
