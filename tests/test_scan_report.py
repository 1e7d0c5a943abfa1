"""The one-page HTML report (tumorlens.scan_report), read back with the standard library's html.parser.

- real analyses by the shipped models (models/): one real BRISC 2025 test slice, and a small NIfTI
  volume stacked from real test slices; each number the page shows is checked against eval.json and the
  ScanResult, formatted here the way the page should, the SHA-256 against hashlib, the embedded picture
  decoded as a PNG of the slice's size holding exactly `overlay_outline`'s pixels;
- hostile text (a file name, a DICOM series description, a NIfTI description holding markup) comes out
  escaped; nothing on the page points outside it (no http(s) sources, no scripts, no stylesheets);
- the "Uncertain" verdict and a volume without voxel size, with stand-in models (no shared data);
- in Debian's chromium, when Playwright is there: one A4 page in print, and no request made."""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import shutil
from datetime import datetime, timedelta, timezone
from html.parser import HTMLParser
from itertools import groupby
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
from PIL import Image

from test_medical_io import gray, real_slice, write_dicom, write_nifti
from test_scan_analysis import TUMOR, phantom, stand_in_pipeline
from tumorlens.inference import Analysis, Pipeline, Segmentation
from tumorlens.medical_io import Scan, read_scan
from tumorlens.model_record import RESEARCH_USE
from tumorlens.paths import MODELS_DIR
from tumorlens.registry import BRISC_CLASSIFIER, BRISC_SEGMENTER, LGG_SEGMENTER
from tumorlens.scan_analysis import LARGEST, ScanResult, analyze_scan
from tumorlens.scan_verdict import describe_area, report
from tumorlens.scan_report import ModelSummary, header_description, model_summary, render_report, write_report
from tumorlens.visualize import overlay_outline

SEGMENTER, CLASSIFIER = MODELS_DIR / BRISC_SEGMENTER, MODELS_DIR / BRISC_CLASSIFIER
WHEN = datetime(2026, 3, 4, 5, 6, 7, tzinfo=timezone(timedelta(hours=2)))  # shown as 03:06:07 UTC
WHEN_UTC = "2026-03-04T03:06:07+00:00"
HOSTILE = '<script>alert("x")</script> & "T1" <img src=x onerror=alert(1)>'
VOID = {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"}


# -- reading the page back -----------------------------------------------------------------
class Page(HTMLParser):
    """Every tag with its attributes, the text of each `data-field` element, the title, all text."""

    def __init__(self, text: str):
        super().__init__(convert_charrefs=True)
        self.tags: list[tuple[str, dict]] = []
        self.fields: dict[str, str] = {}
        self.text: list[str] = []
        self._stack: list[str] = []
        self._open: list[tuple[str, int]] = []   # (field, depth of its element)
        self._title = ""
        self.feed(text)
        self.close()
        assert not self._open, f"unclosed fields {self._open}"

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        self.tags.append((tag, attrs))
        if tag in VOID:
            return
        self._stack.append(tag)
        if "data-field" in attrs:
            assert attrs["data-field"] not in self.fields, f"field {attrs['data-field']} twice"
            self.fields[attrs["data-field"]] = ""
            self._open.append((attrs["data-field"], len(self._stack)))

    def handle_endtag(self, tag):
        if tag in VOID:
            return
        assert self._stack and self._stack[-1] == tag, f"</{tag}> closes <{self._stack[-1:]}>"
        self._stack.pop()
        while self._open and self._open[-1][1] > len(self._stack):
            self._open.pop()

    def handle_data(self, data):
        if self._stack[-1:] == ["title"]:
            self._title += data
            return
        self.text.append(data)
        for name, _ in self._open:
            self.fields[name] += data

    @property
    def all_text(self) -> str:
        return " ".join("".join(self.text).split())

    def field(self, name: str) -> str:
        return " ".join(self.fields[name].split())

    def title(self) -> str:
        return " ".join(self._title.split())

    def images(self) -> list[dict]:
        return [attrs for tag, attrs in self.tags if tag == "img"]


def decode_png(src: str) -> Image.Image:
    prefix = "data:image/png;base64,"
    assert src.startswith(prefix), src[:40]
    data = base64.b64decode(src[len(prefix):], validate=True)
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    img = Image.open(io.BytesIO(data))
    assert img.format == "PNG"
    return img


def assert_self_contained(text: str, page: Page):
    """Nothing to fetch: no scripts, stylesheets, frames, objects; every src/href/srcset is a data: URI
    or a fragment; no http(s) or protocol-relative address anywhere in the markup or the CSS."""
    assert 'src="http' not in text and "src='http" not in text
    tags = {tag for tag, _ in page.tags}
    assert not tags & {"script", "link", "iframe", "object", "embed", "base", "frame", "audio", "video"}, tags
    for tag, attrs in page.tags:
        for key, value in attrs.items():
            assert not key.startswith("on"), (tag, key)
            if key in ("src", "href", "srcset", "poster", "action", "data"):
                assert (value or "").startswith(("data:", "#")), (tag, key, (value or "")[:60])
    markup = re.sub(r'data:image/png;base64,[A-Za-z0-9+/=]+', "", text)
    assert not re.search(r"https?:|//[a-z0-9]|url\(|@import", markup, flags=re.I), \
        re.search(r".{40}(?:https?:|//[a-z0-9]|url\(|@import).{40}", markup, flags=re.I | re.S)


def weights_version(folder: Path) -> str:
    return hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()[:12]


def assert_models_shown(page: Page):
    """Each model's title, name, weights version and eval.json headline scores, as eval.json has them."""
    for folder in (SEGMENTER, CLASSIFIER):
        ev = json.loads((folder / "eval.json").read_text())
        meta = json.loads((folder / "metadata.json").read_text())
        shown = page.field(f"model:{folder.name}")
        assert meta["title"] in shown and folder.name in shown and f"weights {weights_version(folder)}" in shown
        scores = page.field(f"scores:{folder.name}")
        assert ev["dataset"] in scores
        if ev["task"] == "segmentation":
            assert f"Mean Dice per tumor slice {ev['dice_mean']:.4f} (n={ev['n_tumor_slices']:,})" in scores
        else:
            assert f"Accuracy {ev['accuracy']:.4f} (n={ev['n']:,})" in scores
            assert f"Macro F1 {ev['macro_f1']:.4f} (n={ev['n']:,})" in scores


def assert_findings(page: Page, result: ScanResult):
    """What the ScanResult says, formatted as scan_analysis formats it."""
    seg, scan, analysis = result.segmentation, result.scan, result.analysis
    area = describe_area(seg.area_px, seg.area_fraction, result.pixel_spacing_mm,
                         of="the slice" if scan.is_volume else "the image")
    assert page.field("area") == area
    verdict = report(result)[0].splitlines()
    assert page.field("verdict") == verdict[0].removeprefix("### ")
    assert " ".join(verdict[1].split()) in page.all_text
    assert page.field("threshold").startswith(f"{seg.threshold:.2f} ")
    probs = analysis.class_probabilities
    assert probs and page.field("tumor_type") == analysis.predicted_class
    for name, p in probs.items():
        assert page.field(f"p:{name}") == f"{p:.1%}"
    # the picture: the analysed slice at its own size, with exactly visualize's outline drawn on it
    (img,) = page.images()
    picture = decode_png(img["src"])
    h, w = analysis.image.shape[:2]
    assert picture.size == (w, h) and (img["width"], img["height"]) == (str(w), str(h))
    pixels = np.asarray(picture.convert("RGB"))
    expected = overlay_outline(analysis.image, seg.mask)
    assert np.array_equal(pixels, expected)
    assert seg.area_px == 0 or (pixels != analysis.image).any()  # the outline is there when there is a tumor


# -- real analyses by the shipped models ---------------------------------------------------
@pytest.fixture(scope="module")
def shipped(data_home):
    for folder in (SEGMENTER, CLASSIFIER):
        assert (folder / "config.json").is_file(), f"{folder} is missing"
    pipeline = Pipeline.from_pretrained(str(SEGMENTER), str(CLASSIFIER), runtime="torch")
    return pipeline, [model_summary(SEGMENTER), model_summary(CLASSIFIER)]


@pytest.fixture(scope="module")
def slice_report(shipped, tmp_path_factory):
    """A real BRISC glioma test slice, copied under a hostile file name; its report, written."""
    pipeline, models = shipped
    path = tmp_path_factory.mktemp("slice") / "<script>alert(1)<script> glioma.jpg"
    shutil.copyfile(real_slice("glioma", 0), path)
    result = analyze_scan(pipeline, read_scan(path))
    out = write_report(result, path.parent / "report.html", models=models, created=WHEN)
    return path, result, out.read_text(encoding="utf-8")


@pytest.fixture(scope="module")
def volume_report(shipped, tmp_path_factory):
    """A NIfTI volume of six real test slices (five glioma, one healthy) with 0.5 x 0.5 x 6 mm voxels
    and a hostile description; analysed whole, the slice with the most tumor shown."""
    pipeline, models = shipped
    folder = tmp_path_factory.mktemp("volume")
    slices = [gray(real_slice("glioma", i), (512, 512)) for i in range(5)]
    slices.insert(2, gray(real_slice("no_tumor", 0), (512, 512)))
    path = write_nifti(folder / "stack.nii.gz", slices, zooms=(0.5, 0.5, 6.0))
    img = nib.load(path)
    img.header["descrip"] = HOSTILE[:79].encode()
    nib.save(img, path)
    result = analyze_scan(pipeline, read_scan(path), whole_volume=True, slice_index=LARGEST)
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    return path, result, render_report(result, source_sha256=sha, models=models, created=WHEN)


def test_report_of_a_real_slice(slice_report):
    path, result, text = slice_report
    page = Page(text)
    assert result.tumor_found, "the shipped segmenter should outline this glioma"
    assert page.field("sha256") == hashlib.sha256(path.read_bytes()).hexdigest()
    assert page.field("created") == WHEN_UTC
    assert page.field("research_use") == RESEARCH_USE
    assert page.field("kind") == result.scan.describe()
    assert page.field("spacing").startswith("unknown")
    assert "description" not in page.fields  # a JPEG has no header description
    assert_findings(page, result)
    assert_models_shown(page)
    # the hostile file name: shown as text, never as markup
    assert page.field("source_name") == path.name and path.name in page.title()
    assert "<script" not in text.lower() and "&lt;script&gt;" in text
    assert_self_contained(text, page)


def test_report_of_a_real_volume(volume_report):
    path, result, text = volume_report
    page = Page(text)
    scan, counts = result.scan, result.slice_tumor_px
    assert scan.is_volume and scan.n_slices == 6 and counts is not None and result.tumor_found
    assert result.index == int(np.argmax(counts))
    assert page.field("slice") == (f"{result.index} of 6 (numbered 0-5), the slice with the most tumor")
    assert page.field("caption").startswith(f"Slice {result.index} of 6 (numbered 0-5), 512 x 512 px")
    runs = [[i for i, _ in run] for on, run in groupby(enumerate(counts), key=lambda ic: ic[1] > 0) if on]
    listed = ", ".join(f"{r[0]}" if len(r) == 1 else f"{r[0]}-{r[-1]}" for r in runs)
    assert page.field("tumor_slices") == f"{result.tumor_slices} of 6: {listed}"
    assert result.volume_cm3 is not None and result.volume_cm3 > 0
    assert page.field("volume").startswith(f"{result.volume_cm3:,.3f} cm³ ({result.volume_mm3:,.1f} mm³: "
                                           f"{result.tumor_voxels:,} voxels of ")
    assert result.volume_cm3 == pytest.approx(sum(counts) * 0.5 * 0.5 * 6.0 / 1000)
    assert page.field("spacing") == "0.5 x 0.5 mm from the NIfTI header"
    assert page.field("sha256") == hashlib.sha256(path.read_bytes()).hexdigest()
    assert page.field("created") == WHEN_UTC and page.field("research_use") == RESEARCH_USE
    assert_findings(page, result)
    assert_models_shown(page)
    # the header's description, hostile, is text on the page
    assert page.field("description") == " ".join(HOSTILE[:79].split())
    assert "<script" not in text.lower() and "<img src=x" not in text
    assert len(page.images()) == 1
    assert_self_contained(text, page)


def test_the_report_prints_on_one_page_and_fetches_nothing(slice_report, volume_report):
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed")
    chromium = Path("/usr/bin/chromium")
    if not chromium.is_file():
        pytest.skip(f"{chromium} is missing: apt-get install -y chromium")
    args = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
            "--disable-component-update", "--no-first-run"]
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(chromium), args=args, headless=True)
        try:
            for _, _, text in (slice_report, volume_report):
                page = browser.new_page()
                requests, dialogs = [], []
                page.on("request", lambda r: requests.append(r.url[:80]))
                page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
                page.set_content(text, wait_until="load")
                assert page.evaluate("document.images.length") == 1
                assert page.evaluate("document.images[0].naturalWidth") == 512  # the data: PNG decoded
                pdf = page.pdf(format="A4", print_background=True)
                assert len(re.findall(rb"/Type\s*/Page(?!s)", pdf)) == 1
                assert [u for u in requests if not u.startswith("data:")] == [] and dialogs == []
                page.close()
        finally:
            browser.close()


# -- without the shared data: stand-in models ----------------------------------------------
def test_hostile_dicom_description_and_file_name_are_escaped(tmp_path):
    pixels = phantom().astype(np.uint16) * 10
    path = write_dicom(tmp_path / "<script>alert(1)<script>.dcm", pixels, spacing=(0.6, 0.7))
    ds = pydicom.dcmread(path)
    ds.SeriesDescription = HOSTILE[:64]
    ds.save_as(path)
    result = analyze_scan(stand_in_pipeline(), read_scan(path))
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    out = write_report(result, tmp_path / "r.html", created=WHEN)  # hashes the file itself
    text = out.read_text(encoding="utf-8")
    page = Page(text)
    assert page.field("sha256") == sha and page.field("created") == WHEN_UTC
    assert page.field("description") == " ".join(HOSTILE[:64].split())
    assert page.field("source_name") == path.name
    assert "<script" not in text.lower() and "<img src=x" not in text
    assert not any(tag == "script" for tag, _ in page.tags)
    assert not any(k.startswith("on") for _, attrs in page.tags for k in attrs)
    assert_self_contained(text, page)
    # the DICOM header's spacing gives mm²
    seg = result.segmentation
    assert seg.area_px == int((phantom() == TUMOR).sum())
    assert page.field("area") == describe_area(seg.area_px, seg.area_fraction, (0.6, 0.7))
    assert "mm²" in page.field("area") and page.field("spacing") == "0.6 x 0.7 mm from the DICOM header"
    # no models given: no models table; a given source name overrides the file's, escaped too
    assert not any(k.startswith("model:") for k in page.fields)
    text = render_report(result, source_sha256=sha, created=WHEN, source_name="a</title><b>.dcm", description="")
    page = Page(text)
    assert page.field("source_name") == "a</title><b>.dcm" and "description" not in page.fields
    assert "</title><b>" not in text
    # a series read from a folder or a zip: the description comes from the slice headers the Scan keeps
    series = read_scan(path)
    series.source, series.datasets = str(tmp_path), [pydicom.dcmread(path, stop_before_pixels=True)]
    assert header_description(series) == " ".join(HOSTILE[:64].split())


def test_uncertain_verdict_and_a_volume_without_voxel_size():
    rgb = np.zeros((64, 80, 3), np.uint8)
    small = np.zeros((64, 80), bool)
    small[10:12, 10:13] = True
    seg = Segmentation(small.astype(np.float32), small, 0.5)
    healthy = {"glioma": 0.05, "meningioma": 0.03, "pituitary": 0.02, "no_tumor": 0.90}
    scan = Scan("image", [rgb[..., 0]], source=None)
    result = ScanResult(scan, 0, Analysis(rgb, seg, healthy))
    page = Page(render_report(result, source_sha256="ab" * 32, created=WHEN))
    assert page.field("verdict") == "Uncertain: small finding, the classifier disagrees"
    assert "says no tumor with probability 0.90" in page.all_text
    assert page.field("tumor_type") == "no_tumor" and page.field("p:no_tumor") == "90.0%"
    assert page.field("source_name") == "(no file name)"

    # a volume whose header gives no voxel size: voxels and slices, no cm³
    volume = Scan("nifti", [rgb[..., 0]] * 4, None, None, None, ["no usable voxel size in the NIfTI header"])
    result = ScanResult(volume, 1, Analysis(rgb, seg, {}), None, [0, 6, 2, 0])
    page = Page(render_report(result, source_sha256="cd" * 32, created=WHEN))
    assert page.field("slice") == "1 of 4 (numbered 0-3), the slice with the most tumor"
    assert page.field("tumor_slices") == "2 of 4: 1-2"
    assert page.field("volume") == "8 voxels; no voxel size in the header, so no cm³"
    assert page.field("area") == "6 px (0.12% of the slice)"
    assert page.field("verdict") == "Tumor found" and "tumor_type" not in page.fields
    assert "no usable voxel size in the NIfTI header" in page.all_text
    decode_png(page.images()[0]["src"])
    longer = Scan("nifti", [rgb[..., 0]] * 9)
    result = ScanResult(longer, 4, Analysis(rgb, seg, {}), None, [3, 6, 2, 0, 1, 1, 1, 0, 5])
    page = Page(render_report(result, source_sha256="cd" * 32, created=WHEN))
    assert page.field("tumor_slices") == "7 of 9: 0-2, 4-6, 8"
    assert page.field("slice") == "4 of 9 (numbered 0-8)"  # not the slice with the most tumor


def test_models_are_summarised_from_their_own_files(tmp_path):
    for folder in (SEGMENTER, CLASSIFIER, MODELS_DIR / LGG_SEGMENTER):
        summary = model_summary(folder)
        ev = json.loads((folder / "eval.json").read_text())
        meta = json.loads((folder / "metadata.json").read_text())
        assert (summary.name, summary.title, summary.task) == (folder.name, meta["title"], meta["task"])
        assert summary.version == weights_version(folder) and summary.test_set == ev["dataset"]
        scores = {label: (value, n) for label, value, n in summary.scores}
        if ev["task"] == "segmentation":
            assert scores["Mean Dice per tumor slice"] == (ev["dice_mean"], ev["n_tumor_slices"])
        else:
            assert scores == {"Accuracy": (ev["accuracy"], ev["n"]), "Macro F1": (ev["macro_f1"], ev["n"])}
    lgg = json.loads((MODELS_DIR / LGG_SEGMENTER / "eval.json").read_text())
    assert model_summary(MODELS_DIR / LGG_SEGMENTER).scores[1] == (
        "Mean Dice per patient", lgg["dice_per_patient_mean"], lgg["n_patients"])

    # a folder with no eval.json and no weights: said so, not invented
    bare = tmp_path / "my-model"
    bare.mkdir()
    shutil.copy(SEGMENTER / "metadata.json", bare)
    summary = model_summary(bare)
    assert summary.scores == () and summary.test_set is None and summary.version == "unknown"
    rgb = np.zeros((32, 32, 3), np.uint8)
    empty = Segmentation(np.zeros((32, 32), np.float32), np.zeros((32, 32), bool), 0.5)
    page = Page(render_report(ScanResult(Scan("image", [rgb[..., 0]]), 0, Analysis(rgb, empty)),
                              source_sha256="0" * 64, models=[summary], created=WHEN))
    assert page.field("scores:my-model") == "not scored (no eval.json)"
    assert "weights unknown" in page.field("model:my-model")
    assert page.field("verdict") == "No tumor found"


def test_bad_arguments_are_refused():
    rgb = np.zeros((16, 16, 3), np.uint8)
    result = ScanResult(Scan("image", [rgb[..., 0]]), 0, Analysis(rgb, None))
    with pytest.raises(ValueError, match="64 hex digits"):
        render_report(result, source_sha256="not-a-digest")
    with pytest.raises(ValueError, match="time zone"):
        render_report(result, source_sha256="0" * 64, created=datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="no file to hash"):
        write_report(result, "/nonexistent/r.html")
    # no segmenter: the plain image, the tumor type only; the current time when none is given
    page = Page(render_report(result, source_sha256="0" * 64))
    assert "No segmenter loaded" in page.all_text and "area" not in page.fields
    shown = datetime.fromisoformat(page.field("created"))
    assert shown.utcoffset() == timedelta(0) and abs(datetime.now(timezone.utc) - shown) < timedelta(minutes=5)
    assert np.array_equal(np.asarray(decode_png(page.images()[0]["src"]).convert("RGB")), rgb)
    assert isinstance(ModelSummary("segmentation", "x", "X", "unknown").role, str)
