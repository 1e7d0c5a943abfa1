"""The segmentation models the app's page offers, by name, each with its record and its pipeline (the
default one ready, the others loaded on first use), and what the reports say about each model's weights
and test scores. No Gradio here: `tumorlens.app` turns its errors into the page's."""

from __future__ import annotations

import logging
import threading
from dataclasses import replace
from typing import Callable, Sequence

from .errors import TumorLensError
from .inference import Pipeline, Segmenter
from .model_record import ModelRecord, read_record, renamed, unknown_record
from .registry import DEFAULT_SEGMENTER, UnknownModelError, available_segmenters, resolve_model

log = logging.getLogger("tumorlens.app")
CLASSIFIER_FALLBACK = ("tumor-type classifier", "Tumor-type classifier (location not given: no scores)")


class SegmenterBank:
    """The segmentation models the page offers, by name (the keys of `locations`, plus `default`).
    Each model's record (its folder's metadata.json, tumorlens.model_record) gives its menu label,
    how notes name it and whether the tumor-type classifier applies to its inputs. The default one's
    pipeline comes ready; the others load on first use and stay, so start-up stays fast. Each loads
    once under its own lock (the queue runs requests on several threads)."""

    def __init__(self, pipeline: Pipeline | None, locations: dict[str, str] | None = None, *,
                 default: str = DEFAULT_SEGMENTER,
                 load_segmenter: Callable[[str], Segmenter] = Segmenter.from_pretrained,
                 pipeline_locations: Sequence[str | None] | None = None, scope_gate=None):
        self.default, self.locations, self._load = default, dict(locations or {}), load_segmenter
        # the out-of-scope check (tumorlens.scope_gate.ScopeGate) every model's requests pass; None: none
        self.scope_gate = scope_gate
        # where `pipeline`'s (segmenter, classifier) were loaded from, for the reports; unknown: None
        self.pipeline_locations = tuple(pipeline_locations or (None, None))
        self._summaries: dict[str | None, object] = {}
        # without a ready pipeline the app has no model at all: offer nothing else either
        others = [n for n in self.locations if n != default] if pipeline is not None else []
        self.names = [default, *others]
        self.records = {name: self._read_record(name, pipeline) for name in self.names}
        self.classifier = pipeline.classifier if pipeline is not None else None
        self._pipelines: dict[str, Pipeline | None] = {default: self._fit(default, pipeline)}
        self._locks = {name: threading.Lock() for name in self.names}

    def _read_record(self, name: str, pipeline: Pipeline | None) -> ModelRecord:
        """The ready segmenter's own record for the default, else the one its location's folder or
        Hub repo states (a few small JSON files); a model that states nothing gets the fallback."""
        ready = pipeline.segmenter if pipeline is not None and name == self.default else None
        if getattr(ready, "record", None) is not None:
            return renamed(ready.record, name)
        location = self.locations.get(name) or available_segmenters().get(name)
        if location is not None:
            try:
                return renamed(read_record(resolve_model(location)), name)
            except (TumorLensError, ValueError, OSError) as exc:  # unreadable: the model may still load
                log.warning("the %s segmenter's record cannot be read (%s); its inputs count as unknown", name, exc)
        if name == self.default and pipeline is not None and pipeline.segmenter is None:
            # a classifier alone: it runs on what the user chose to give it
            return replace(unknown_record(name), tumor_types=pipeline.classifier is not None)
        return unknown_record(name)

    def _fit(self, name: str, pipeline: Pipeline | None) -> Pipeline | None:
        """`pipeline` without the classifier where the model's inputs are not what it was trained on."""
        if pipeline is None or pipeline.classifier is None or pipeline.segmenter is None or self.tumor_types(name):
            return pipeline
        return Pipeline(pipeline.segmenter, None)

    def record(self, name: str | None = None) -> ModelRecord:
        """The record of model `name` (None: the default)."""
        name = name or self.default
        if name not in self.records:
            raise UnknownModelError(f"unknown segmentation model {name!r}: choose one of {', '.join(self.names)}")
        return self.records[name]

    @property
    def choices(self) -> list[tuple[str, str]]:
        """(label, name) pairs for the model menu; a label an earlier model has (a copied folder) says
        which model it is."""
        pairs, seen = [], set()
        for name in self.names:
            title = self.records[name].title
            pairs.append((f"{title} ({name})" if title in seen else title, name))
            seen.add(title)
        return pairs

    def tumor_types(self, name: str | None) -> bool:
        return self.record(name).tumor_types

    def get(self, name: str | None = None) -> Pipeline | None:
        """The pipeline for `name` (None: the default), loading it on first use."""
        name = name or self.default
        if name not in self._locks:
            raise UnknownModelError(f"unknown segmentation model {name!r}: choose one of {', '.join(self.names)}")
        ready = self._pipelines.get(name)
        if ready is not None or name == self.default:
            return ready
        with self._locks[name]:
            if name not in self._pipelines:
                log.info("loading the %s segmenter from %s", name, self.locations[name])
                self._pipelines[name] = self._fit(name, Pipeline(self._load(self.locations[name]), self.classifier))
            return self._pipelines[name]

    def summaries(self, name: str | None = None) -> list:
        """The `scan_report.ModelSummary`s of the models behind `name`'s analyses (None: the default):
        its segmenter and, where it applies, the classifier; from their folders (metadata.json, eval.json,
        weights) when the bank knows where they are, else from the segmenter's record alone (no scores).
        Made once per model."""
        from .scan_report import ModelSummary
        name = name or self.default
        seg_location, cls_location = self.pipeline_locations
        seg_location = seg_location if name == self.default else self.locations.get(name)
        record, pipeline = self.record(name), self.get(name)
        out = []
        if pipeline is not None and pipeline.segmenter is not None:
            out.append(self._summary(seg_location, "segmenter",
                                     ModelSummary("segmentation", record.name, record.title, "unknown")))
        if pipeline is not None and pipeline.classifier is not None:
            out.append(self._summary(cls_location, "classifier",
                                     ModelSummary("classification", *CLASSIFIER_FALLBACK, "unknown")))
        return out

    def _summary(self, location: str | None, kind: str, fallback):
        from .scan_report import model_summary
        if location is None:
            return fallback
        if location not in self._summaries:
            try:
                self._summaries[location] = model_summary(resolve_model(location, kind))
            except (TumorLensError, OSError, ValueError) as exc:
                log.warning("the report cannot summarise the model at %s (%s)", location, exc)
                self._summaries[location] = fallback
        return self._summaries[location]


__all__ = ["SegmenterBank"]
