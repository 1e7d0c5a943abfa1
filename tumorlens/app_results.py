"""The page's "Results" tab: each model's test scores, as its folder's eval.json states them (written by
`tumorlens evaluate`, never typed by hand), and a pager through a segmenter's scored test slices, worst
or best first, each drawn with the expert's reference and the model's mask over it.

`results_tab(bank, data_home)`, called inside an open `with gr.Tab("Results"):`, builds the tab for the
segmenters a `SegmenterBank` offers and its tumor-type classifier. The pager reads each slice and its
reference mask from the dataset location (as `tumorlens.evaluate` does: the dataset record's test rows,
by file name) and segments it with the page's own model, one slice per view. Without the data the tab
still shows the scores and says what the pager needs. Handlers answer with a message, never a traceback.
`SlicePager` holds the logic (no Gradio), so tests call it directly."""

from __future__ import annotations

import json
import logging
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

import datasets
import gradio as gr
import numpy as np

from .data.registry import get_dataset
from .errors import TumorLensError, public_message
from .metrics import dice
from .models import EVAL_NAME, fetch_file
from .preprocess import decode_image, decode_mask
from .registry import available_segmenters, default_model
from .segmenter_bank import SegmenterBank
from .visualize import comparison_overlay, plot_confusion_matrix

log = logging.getLogger("tumorlens.app")

WORST_FIRST, BEST_FIRST = "worst first", "best first"
SORT_ORDERS = (WORST_FIRST, BEST_FIRST)
CONFUSION_NAME = "confusion_matrix.png"  # beside eval.json (git-ignored: drawn again from eval.json if missing)
LEGEND = ("**Yellow**: the model and the reference agree · **red**: tumor in the reference the model missed · "
          "**green**: marked by the model only.")
NEEDS_DATA = ("The slice viewer needs the test data: it reads each slice and its reference mask from the "
              "dataset location.")
PREDICTIONS_KEPT = 32  # masks kept for going back a page without running the model again
GROUPS = {"by_label": "By class", "by_plane": "By imaging plane", "by_size": "By tumor size (reference area)"}


@dataclass(frozen=True)
class ModelScores:
    """A model's eval.json, where it came from, or why there is none."""

    name: str                   # the page's model name; "classifier" for the tumor-type classifier
    title: str
    location: str | None        # a folder or Hub repo id
    scores: dict | None = None  # eval.json
    problem: str | None = None  # why `scores` is None


def read_scores(name: str, title: str, location: str | None) -> ModelScores:
    """`location`'s eval.json (a folder, or the Hub cache first); a problem message where it has none."""
    if location is None:
        return ModelScores(name, title, None, problem="where this model was loaded from is not known")
    try:
        path = fetch_file(location, EVAL_NAME, required=False)
        if path is None:
            return ModelScores(name, title, location, problem=f"its folder has no {EVAL_NAME}")
        return ModelScores(name, title, location, json.loads(Path(path).read_text()))
    except (TumorLensError, OSError, ValueError) as exc:
        return ModelScores(name, title, location,
                           problem=f"its {EVAL_NAME} cannot be read ({exc.__class__.__name__})")


def _num(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def _table(header: list[str], rows: list[list]) -> list[str]:
    """A Markdown table's lines; floats with 3 decimals (strings as given)."""
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(map(_num, row)) + " |" for row in rows)]


def _source_line(scores: dict) -> str:
    partial = "" if scores.get("complete", True) else " **A partial run (--limit): not the full test set.**"
    command = scores.get("command", "tumorlens evaluate")
    return f"Scored on {scores.get('dataset', 'its test data')} by `{command}`.{partial}"


def segmenter_markdown(result: ModelScores) -> str:
    """A segmenter's test scores: the headline, then Dice and IoU by each group eval.json has."""
    head = f"### {result.title}\n"
    if result.scores is None:
        return head + f"No test scores: {result.problem}."
    s = result.scores
    cols = {"tumor slices": s.get("n_tumor_slices"), "Dice mean": s.get("dice_mean"),
            "Dice median": s.get("dice_median"), "mIoU": s.get("miou")}
    if "dice_per_patient_mean" in s:
        cols.update({"patients": s.get("n_patients"), "Dice per patient (mean)": s["dice_per_patient_mean"]})
    healthy = s.get("healthy")
    if healthy:
        cols[f"healthy slices masked (≥ {healthy.get('min_mask_px')} px)"] = \
            f"{healthy.get('masked')} / {healthy.get('n')}"
    lines = [head, _source_line(s), "", *_table(list(cols), [list(cols.values())])]
    dedup = s.get("deduplicated") or {}
    if (dedup.get("dice") or {}).get("mean") is not None:
        lines += ["", f"Without the test slices the duplicate audit matched to training images: Dice mean "
                      f"{_num(dedup['dice']['mean'])} (n={dedup.get('n')})."]
    for key, heading in GROUPS.items():
        groups = {k: v for k, v in (s.get(key) or {}).items() if isinstance(v, dict) and "dice" in v}
        rule = (s.get(key) or {}).get("groups") or {}  # by_size: the area each group covers
        rows = [[f"{k} ({rule[k]})" if k in rule else k, g.get("n"), g["dice"].get("mean"), g["dice"].get("median"),
                 (g.get("iou") or {}).get("mean")] for k, g in groups.items()]
        if rows:
            header = ["group", "slices", "Dice mean", "Dice median", "IoU mean"]
            lines += ["", f"**{heading}**", "", *_table(header, rows)]
    return "\n".join(lines)


def classifier_markdown(result: ModelScores) -> str:
    """The classifier's test scores: accuracy, macro F1, the de-duplicated accuracy and per-class scores."""
    head = f"### {result.title}\n"
    if result.scores is None:
        return head + f"No test scores: {result.problem}."
    s = result.scores
    dedup = s.get("deduplicated") or {}
    lines = [head, _source_line(s), "",
             *_table(["images", "accuracy", "macro F1", "de-duplicated accuracy"],
                     [[s.get("n"), _num(s.get("accuracy"), 4), _num(s.get("macro_f1"), 4),
                       f"{_num(dedup.get('accuracy'), 4)} (n={dedup.get('n', 'n/a')})"]])]
    per_class = s.get("per_class") or {}
    if per_class:
        lines += ["", *_table(["class", "precision", "recall", "F1", "images"],
                              [[c, v.get("precision"), v.get("recall"), v.get("f1"), v.get("support")]
                               for c, v in per_class.items()])]
    return "\n".join(lines)


def confusion_image(result: ModelScores, out_dir: Path | None = None) -> str | None:
    """The classifier folder's confusion_matrix.png, else one drawn from eval.json into `out_dir` (default:
    a new temp folder)."""
    if result.scores is None or "confusion_matrix" not in result.scores:
        return None
    try:
        found = fetch_file(result.location, CONFUSION_NAME, required=False)
        if found is not None:
            return str(found)
        s = result.scores
        title = f"test: accuracy {s['accuracy'] * 100:.2f}%" if isinstance(s.get("accuracy"), float) else "test"
        out_dir = out_dir or Path(tempfile.mkdtemp(prefix="tumorlens-results-"))
        out_dir.mkdir(parents=True, exist_ok=True)
        return str(plot_confusion_matrix(s["confusion_matrix"], s["class_names"], title, out_dir / CONFUSION_NAME))
    except (TumorLensError, OSError, ValueError, KeyError) as exc:
        log.warning("results: no confusion matrix for %s (%s)", result.location, exc)
        return None


def scored_slices(scores: dict | None) -> list[dict]:
    """The per_image records the headline Dice counts: every slice, or the tumor slices where eval.json
    marks which have a tumor (LGG: an empty slice scores 1 when left empty and would crowd the best)."""
    rows = (scores or {}).get("per_image") or []
    return [r for r in rows if r.get("tumor", True) and isinstance(r.get("dice"), (int, float))]


def sort_slices(rows: list[dict], order: str) -> list[dict]:
    """`rows` by Dice, lowest first (`WORST_FIRST`) or highest first (`BEST_FIRST`); ties by file name."""
    if order not in SORT_ORDERS:
        raise ValueError(f"order must be one of {SORT_ORDERS}, not {order!r}")
    if order == WORST_FIRST:
        return sorted(rows, key=lambda r: (r["dice"], r["file_name"]))
    return sorted(rows, key=lambda r: (-r["dice"], r["file_name"]))


class SlicePager:
    """Each offered segmenter's scores and a page view of its scored test slices, sorted by Dice."""

    def __init__(self, bank: SegmenterBank, data_home: str | Path | None = None):
        self.bank, self.data_home = bank, data_home
        self.segmenters = {name: read_scores(name, bank.record(name).title, self._location(name))
                           for name in bank.names}
        self.classifier = self._classifier_scores()
        self._files: dict[tuple, dict[str, tuple]] = {}
        self._predictions: dict[tuple, np.ndarray] = {}  # the last few slices' masks, oldest first
        self._lock = threading.Lock()

    def _location(self, name: str) -> str | None:
        if name == self.bank.default:
            return (self.bank.pipeline_locations[0] or self.bank.locations.get(name)
                    or available_segmenters().get(name))
        return self.bank.locations.get(name)

    def _classifier_scores(self) -> ModelScores | None:
        location = self.bank.pipeline_locations[1]
        if location is None and self.bank.classifier is not None:
            location = default_model("classifier")
        if location is None:
            return None
        from .model_record import read_record
        try:
            title = read_record(location).title
        except (TumorLensError, OSError, ValueError):
            title = "Tumor-type classifier"
        return read_scores("classifier", title, location)

    @property
    def pageable(self) -> list[str]:
        """The segmenters whose eval.json lists per-slice scores."""
        return [name for name, r in self.segmenters.items() if scored_slices(r.scores)]

    def slices(self, name: str, order: str) -> list[dict]:
        return sort_slices(scored_slices(self.segmenters[name].scores), order)

    def data_root(self, name: str) -> Path:
        """The folder of the dataset `name`'s eval.json was scored on (it may be missing)."""
        record = get_dataset(self.segmenters[name].scores["dataset_id"])
        return record.find_root(record.root_in(self.data_home))

    def data_problem(self, name: str) -> str | None:
        """Why the pager cannot show `name`'s slices here (the dataset location is missing), or None."""
        scores = self.segmenters[name].scores or {}
        try:
            record = get_dataset(scores.get("dataset_id", ""))
        except TumorLensError:
            return f"its eval.json names no dataset TumorLens knows ({scores.get('dataset_id')!r})"
        try:
            found = self.data_root(name).is_dir()
        except TumorLensError:  # an explicit root that is not there
            found = False
        if not found:
            return f"{record.title} test data not found (set $TUMORLENS_DATA or ${record.root_env})"
        return None

    def test_files(self, name: str) -> dict[str, tuple]:
        """file_name -> (image, reference mask) of the test rows `name` was scored on, read once per dataset."""
        scores = self.segmenters[name].scores
        record, fold, root = get_dataset(scores["dataset_id"]), scores.get("fold"), self.data_root(name)
        key = (record.name, fold, str(root))
        with self._lock:
            if key not in self._files:
                rows = record.test_rows(root, "segmentation", fold)
                raw = rows.cast_column("image", datasets.Image(decode=False)).cast_column(
                    "mask", datasets.Image(decode=False))
                self._files[key] = {n: (i["bytes"] or i["path"], m["bytes"] or m["path"])
                                    for n, i, m in zip(raw["file_name"], raw["image"], raw["mask"])}
            return self._files[key]

    def page(self, name: str, order: str, rank) -> tuple[np.ndarray | None, str, int]:
        """(the slice at `rank` (1 = first in `order`) drawn with reference and prediction, its caption,
        the rank shown: `rank` brought into range). Every failure is a caption saying why."""
        if name not in self.segmenters:
            return None, f"No scores for a model named {name!r}.", 1
        rows = self.slices(name, order)
        if not rows:
            return None, f"The {self.segmenters[name].title} eval.json lists no per-slice scores.", 1
        try:
            rank = int(min(max(1, int(rank or 1)), len(rows)))
        except (TypeError, ValueError, OverflowError):  # an empty or odd number box: the first slice
            rank = 1
        row = rows[rank - 1]
        where = f"**{rank} of {len(rows)}** ({order}) · `{row['file_name']}`"
        problem = self.data_problem(name)
        if problem:
            return None, f"{where}\n\n{NEEDS_DATA} {problem}.", rank
        try:
            files = self.test_files(name)
            if row["file_name"] not in files:
                return None, f"{where}\n\nThis slice is not in the dataset location's test split.", rank
            image, reference = files[row["file_name"]]
            rgb, truth = decode_image(image), decode_mask(reference).astype(bool)
            pipeline = self.bank.get(name)
            if pipeline is None or pipeline.segmenter is None:
                return None, f"{where}\n\nNo {self.segmenters[name].title} model is loaded.", rank
            key = (name, row["file_name"], id(pipeline.segmenter))
            predicted = self._predictions.get(key)
            if predicted is None:
                predicted = pipeline.segmenter.segment(rgb).mask
                with self._lock:
                    self._predictions[key] = predicted
                    while len(self._predictions) > PREDICTIONS_KEPT:
                        self._predictions.pop(next(iter(self._predictions)))
            overlay = comparison_overlay(rgb, truth, predicted)
        except Exception as exc:  # noqa: BLE001 - any failure is a message on the page, never a traceback
            log.warning("results: cannot show %s (%s: %s)", row["file_name"], exc.__class__.__name__, exc)
            reason = public_message(str(exc), str(self.data_home or ""))
            return None, f"{where}\n\nCannot show this slice ({exc.__class__.__name__}: {reason}).", rank
        facts = " · ".join(str(row[k]) for k in ("label", "plane", "patient_id") if row.get(k))
        caption = (f"{where}{' · ' + facts if facts else ''}  \nDice {row['dice']:.3f} in eval.json; "
                   f"{dice(predicted, truth):.3f} for the mask shown (reference {int(truth.sum())} px, "
                   f"model {int(predicted.sum())} px)\n\n{LEGEND}")
        return overlay, caption, rank


def results_tab(bank: SegmenterBank, data_home: str | Path | None = None) -> SlicePager:
    """Build the Results tab's contents; call inside an open `with gr.Tab("Results"):`. `data_home`: the
    folder holding the datasets (None: $TUMORLENS_DATA, else ../shared/data). Returns the pager."""
    pager = SlicePager(bank, data_home)
    gr.Markdown("## Test results\nEvery number below is read from the model folder's `eval.json`, written by "
                "`tumorlens evaluate` on its dataset's held-out test split (the de-duplicated scores also leave "
                "out the test slices the duplicate audit matched to training images). *Research use only.*")
    for result in pager.segmenters.values():
        gr.Markdown(segmenter_markdown(result))
    if pager.classifier is not None:
        gr.Markdown(classifier_markdown(pager.classifier))
        chart = confusion_image(pager.classifier)
        if chart:
            gr.Image(chart, label="Confusion matrix (test)", type="filepath", interactive=False, buttons=[],
                     elem_id="results-confusion", height=420)
    _pager_controls(pager)
    return pager


def _pager_controls(pager: SlicePager) -> None:
    names = pager.pageable
    gr.Markdown("## Test slices, one at a time\nEach scored test slice with the expert's reference and the "
                "model's mask, sorted by its Dice. " + LEGEND)
    if not names:
        gr.Markdown("No model here lists per-slice scores in its eval.json.")
        return
    missing = {n: pager.data_problem(n) for n in names}
    if all(missing.values()):
        gr.Markdown(f"{NEEDS_DATA} " + "; ".join(f"{pager.segmenters[n].title}: {p}" for n, p in missing.items()) + ".",
                    elem_id="results-needs-data")
        return
    with gr.Row():
        model = gr.Dropdown([(pager.segmenters[n].title, n) for n in names], value=names[0], label="Model",
                            visible=len(names) > 1, elem_id="results-model")
        order = gr.Radio(list(SORT_ORDERS), value=WORST_FIRST, label="Order", elem_id="results-order")
        rank = gr.Number(1, precision=0, minimum=1, label="Slice (1 = first in this order)", elem_id="results-rank")
    with gr.Row():
        previous = gr.Button("Previous", elem_id="results-previous")
        show = gr.Button("Show", variant="primary", elem_id="results-show")
        following = gr.Button("Next", elem_id="results-next")
    caption = gr.Markdown("Press Show (or Previous / Next) to draw a slice.", elem_id="results-caption")
    image = gr.Image(label="Reference and prediction", type="numpy", format="png", interactive=False,
                     elem_id="results-slice")

    def view(name, how, at, step=0):
        try:
            at = int(at or 1) + step
        except (TypeError, ValueError, OverflowError):
            at = 1
        return pager.page(name, how, at)

    options = {"outputs": [image, caption, rank], "api_visibility": "private", "concurrency_limit": 1,
               "concurrency_id": "results"}
    show.click(view, inputs=[model, order, rank], **options)
    rank.submit(view, inputs=[model, order, rank], **options)
    previous.click(lambda n, h, a: view(n, h, a, -1), inputs=[model, order, rank], **options)
    following.click(lambda n, h, a: view(n, h, a, +1), inputs=[model, order, rank], **options)
    for control in (model, order):  # a new order or model starts again at its first slice
        control.change(lambda n, h: view(n, h, 1), inputs=[model, order], **options)


__all__ = ["BEST_FIRST", "LEGEND", "ModelScores", "SORT_ORDERS", "SlicePager", "WORST_FIRST", "classifier_markdown",
           "confusion_image", "read_scores", "results_tab", "scored_slices", "segmenter_markdown", "sort_slices"]
