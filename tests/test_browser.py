"""The app in a real browser: Debian's chromium driven by Playwright (the Python client only).

Needs `apt-get install -y chromium` and `pip install playwright==1.65.2`; never `playwright install`
(the browser comes from Debian). Skipped, saying which is missing, when either is absent."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from PIL import Image

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
try:
    from playwright.sync_api import expect, sync_playwright
except ImportError:
    pytest.skip("playwright is not installed: pip install playwright==1.65.2 (no `playwright install`; "
                "the browser is Debian's chromium)", allow_module_level=True)
if not CHROMIUM.is_file():
    pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium", allow_module_level=True)

from test_app import free_port, tiny_model_dirs  # noqa: E402
from test_medical_io import BAD_INPUTS, nifti_display_slices, write_nifti  # noqa: E402
from tumorlens.app import build_demo, launch_options  # noqa: E402
from tumorlens.data import TUMOR_CLASSES  # noqa: E402
from tumorlens.examples import example_paths  # noqa: E402
from tumorlens.inference import Pipeline  # noqa: E402

TIMEOUT_MS = 120_000  # generous: the tests share a small CPU
CLASS_RE = re.compile("|".join(TUMOR_CLASSES))


@pytest.fixture(scope="module")
def url(tmp_path_factory, data_home):
    seg, cls = tiny_model_dirs(tmp_path_factory)
    examples = example_paths()
    assert len(examples) == 4
    demo = build_demo(Pipeline.from_pretrained(seg, cls, runtime="torch"), examples)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_options())
    yield f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        yield b
        b.close()


@pytest.fixture
def page(browser, url):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    page.goto(url)
    page.wait_for_selector("#analyze")
    yield page
    context.close()


def thumbnails(page):
    """The example gallery's thumbnails, in the order of the examples."""
    return page.locator("#examples button.thumbnail-item")


def test_example_gives_the_overlay_and_the_label(page):
    example = example_paths()[0]  # the glioma slice
    expect(thumbnails(page)).to_have_count(4)
    thumbnails(page).first.click()
    expect(page.locator("#scan")).to_contain_text(Path(example).stem)
    expect(page.locator("#scan-info")).to_contain_text("Image, 512x512 px")
    page.click("#analyze")
    overlay = page.locator("#overlay img")
    expect(overlay).to_be_visible()
    expect(page.locator("#label")).to_contain_text(CLASS_RE)
    expect(page.locator("#verdict")).to_contain_text(re.compile("tumor found", re.I))
    expect(page.locator("#size textarea")).to_have_value(re.compile(r"px \(\d+\.\d\d% of the image\)"))
    page.wait_for_function("() => document.querySelector('#overlay img').naturalWidth > 0")
    size = page.evaluate("() => [document.querySelector('#overlay img').naturalWidth,"
                         " document.querySelector('#overlay img').naturalHeight]")
    assert tuple(size) == Image.open(example).size
    assert page.locator("#mask img").is_visible() and page.locator("#heatmap img").is_visible()
    expect(page.get_by_text("Research use only.").first).to_be_visible()


def test_nifti_upload_shows_the_slider_and_gives_the_volume(page, tmp_path):
    path = write_nifti(tmp_path / "vol.nii.gz", nifti_display_slices(3, (96, 80)), zooms=(0.9, 0.8, 2.5))
    page.locator("#scan input[type=file]").set_input_files(str(path))
    expect(page.locator("#scan-info")).to_contain_text("NIfTI, 96x80 px, 3 slices")
    expect(page.locator("#slice")).to_be_visible()
    expect(page.locator("#slice input[type=number]")).to_have_value("1")  # the middle slice
    expect(page.locator("#spacing input")).to_have_value("0.8")  # filled in from the header
    page.locator("#whole-volume input[type=checkbox]").check()
    page.click("#analyze")
    expect(page.locator("#size textarea")).to_have_value(re.compile(r"Volume: [\d,]+ voxels on \d of 3 slices"))
    expect(page.locator("#size textarea")).to_have_value(re.compile(r"cm³"))
    expect(page.locator("#overlay img")).to_be_visible()
    # move the slider to the first slice and analyze that slice alone
    number = page.locator("#slice input[type=number]")
    number.fill("0")
    number.blur()
    page.locator("#whole-volume input[type=checkbox]").uncheck()
    page.click("#analyze")
    expect(page.locator("#size textarea")).to_have_value(re.compile(r"^Slice 0: [\d,]+ px .* mm²", re.S))


def test_bad_upload_shows_a_clear_error(page, tmp_path):
    build, _ = BAD_INPUTS["not_an_image"]
    page.locator("#scan input[type=file]").set_input_files(str(build(tmp_path)))
    expect(page.get_by_text(re.compile("Cannot read this image: not a readable image")).first).to_be_visible()


# -- the downloads, with the shipped models (no training) -------------------------------------------
@pytest.fixture(scope="module")
def shipped_url(data_home):
    from tumorlens.paths import MODELS_DIR
    from tumorlens.registry import BRISC_CLASSIFIER, BRISC_SEGMENTER
    seg, cls = MODELS_DIR / BRISC_SEGMENTER, MODELS_DIR / BRISC_CLASSIFIER
    demo = build_demo(Pipeline.from_pretrained(str(seg), str(cls), runtime="torch"), segmenters={},
                      model_locations=(str(seg), str(cls)))
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_options())
    yield f"http://127.0.0.1:{port}/"
    demo.close()


@pytest.fixture
def shipped_page(browser, shipped_url):
    context = browser.new_context(viewport={"width": 1400, "height": 1000}, accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    page.goto(shipped_url)
    page.wait_for_selector("#analyze")
    yield page
    context.close()


def download(page, fmt: str, folder: Path) -> Path:
    """Click the page's download button of `fmt`; the file the browser saved."""
    button = page.locator(f"#download-{fmt}")
    expect(button).to_be_visible()
    with page.expect_download() as info:
        button.click()
    target = folder / info.value.suggested_filename
    info.value.save_as(target)
    return target


def report_numbers(path: Path) -> dict[str, str]:
    from test_scan_report import Page
    page = Page(path.read_text(encoding="utf-8"))
    return {name: page.field(name) for name in page.fields}


def test_each_export_downloads_from_the_page(shipped_page, tmp_path):
    """An image gives its PNG mask and report; a DICOM series uploaded as several files, analysed whole,
    gives every export, each checked with the library that reads its format."""
    import io
    import zipfile

    import highdicom as hd
    import nibabel as nib
    import numpy as np
    import pydicom
    from pydicom.uid import generate_uid
    from test_dicom_series import dicom_bytes
    from test_medical_io import gray, real_slice
    from tumorlens.medical_io import read_scan
    page = shipped_page

    # one real slice: its PNG mask at its own size, the report with the page's numbers
    image = real_slice("glioma", 0)
    page.locator("#scan input[type=file]").set_input_files(str(image))
    expect(page.locator("#scan-info")).to_contain_text("Image, 512x512 px")
    page.click("#analyze")
    expect(page.locator("#download-report")).to_be_visible()
    size = page.locator("#size textarea").input_value()
    mask = Image.open(download(page, "png", tmp_path))
    assert mask.format == "PNG" and mask.size == Image.open(image).size
    px = int((np.asarray(mask) == 255).sum())
    assert size.startswith(f"{px:,} px") and px > 0
    fields = report_numbers(download(page, "report", tmp_path))
    assert fields["area"] == size.splitlines()[0] and fields["source_name"] == image.name
    for fmt in ("nifti", "dicom-seg", "secondary-capture"):
        expect(page.locator(f"#download-{fmt}")).to_be_hidden()
    expect(page.locator("#downloads-note")).to_contain_text("Mask (NIfTI): a plain image has no voxel geometry")

    # a series of three real slices, uploaded as its files
    series_dir = tmp_path / "series"
    series_dir.mkdir()
    study, series, frame = generate_uid(), generate_uid(), generate_uid()
    for k, (cls, i) in enumerate((("glioma", 1), ("glioma", 2), ("glioma", 3))):
        pixels = gray(real_slice(cls, i), (160, 160)).astype(np.int16)
        (series_dir / f"IM{(k * 2) % 3}").write_bytes(dicom_bytes(
            pixels, iop=(1, 0, 0, 0, 1, 0), ipp=(-80.0, -80.0, 4.0 * k), spacing=(1.0, 1.0), study=study,
            series=series, frame=frame, instance=3 - k))
    files = sorted(series_dir.iterdir())
    scan = read_scan(series_dir)
    # added to the image still in the box: refused, saying why, and the image's downloads go
    page.locator("#scan input[type=file]").set_input_files([str(p) for p in files])
    expect(page.get_by_text(re.compile(f"4 files came together.*'{image.name}' is a scan of its own")).first) \
        .to_be_visible()
    expect(page.locator("#download-png")).to_be_hidden()
    page.locator("#scan button[aria-label='Clear']").click()
    page.locator("#scan input[type=file]").set_input_files([str(p) for p in files])
    expect(page.locator("#scan-info")).to_contain_text("DICOM, 160x160 px, 3 slices")
    page.locator("#whole-volume input[type=checkbox]").check()
    page.click("#analyze")
    expect(page.locator("#size textarea")).to_have_value(re.compile(r"Volume: [\d,]+ voxels on \d of 3 slices"))
    expect(page.locator("#download-secondary-capture")).to_be_visible()
    size = page.locator("#size textarea").input_value()

    with zipfile.ZipFile(download(page, "png", tmp_path)) as zf:
        masks = [np.asarray(Image.open(io.BytesIO(zf.read(n)))) == 255 for n in sorted(zf.namelist())]
    assert len(masks) == 3 and all(m.shape == (160, 160) for m in masks)
    voxels = sum(int(m.sum()) for m in masks)
    assert f"Volume: {voxels:,} voxels" in size and voxels > 0
    nifti = nib.load(str(download(page, "nifti", tmp_path)))
    np.testing.assert_allclose(nifti.affine, scan.affine, atol=1e-4)
    assert nifti.shape == (160, 160, 3) and int(np.asarray(nifti.dataobj).sum()) == voxels
    seg_path = download(page, "dicom-seg", tmp_path)
    seg = hd.seg.segread(seg_path)
    sources = [ds.SOPInstanceUID for ds in scan.datasets]
    assert {uid for _, _, uid in seg.get_source_image_uids()} == set(sources)
    frames = seg.get_pixels_by_source_instance(sources, segment_numbers=[1])[..., 0].astype(bool)
    assert all(np.array_equal(frames[k], masks[k]) for k in range(3))
    with zipfile.ZipFile(download(page, "secondary-capture", tmp_path)) as zf:
        captures = [pydicom.dcmread(io.BytesIO(zf.read(n))) for n in sorted(zf.namelist())]
    assert [c.SourceImageSequence[0].ReferencedSOPInstanceUID for c in captures] == sources
    assert all(c.StudyInstanceUID == study and c.pixel_array.shape == (160, 160, 3) for c in captures)
    fields = report_numbers(download(page, "report", tmp_path))
    volume = re.search(r"\(([\d,.]+) cm³", size).group(1)
    assert fields["volume"].startswith(f"{volume} cm³") and fields["source_name"].startswith("3 files")


# -- the public page as a stranger meets it: thumbnails, a refused photo, the Results tab -------------
@pytest.fixture(scope="module")
def gated_url(data_home):
    from tumorlens.examples import other_committed_examples
    from tumorlens.paths import MODELS_DIR
    from tumorlens.registry import BRISC_CLASSIFIER, BRISC_SEGMENTER
    from tumorlens.scope_gate import load_gate
    seg, cls = str(MODELS_DIR / BRISC_SEGMENTER), str(MODELS_DIR / BRISC_CLASSIFIER)
    demo = build_demo(Pipeline.from_pretrained(seg, cls, runtime="torch"), example_paths() + other_committed_examples(),
                      segmenters={}, model_locations=(seg, cls), scope_gate=load_gate(cls), data_home=data_home)
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, **launch_options())
    yield f"http://127.0.0.1:{port}/"
    demo.close()


def test_thumbnail_refused_photo_and_results_pager(browser, gated_url, tmp_path):
    """Shipped models with their scope gate: a thumbnail loads a committed example that is analyzed, a
    photograph is refused without a tumor type, and the Results tab pages through scored test slices."""
    from skimage import data as samples
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(TIMEOUT_MS)
    expect.set_options(timeout=TIMEOUT_MS)
    try:
        page.goto(gated_url)
        page.wait_for_selector("#analyze")
        examples = example_paths()
        expect(thumbnails(page)).to_have_count(7)  # 4 BRISC 2025 + 3 Figshare, all committed
        thumbnails(page).nth(1).click()  # the meningioma slice
        expect(page.locator("#scan")).to_contain_text(Path(examples[1]).stem)
        page.click("#analyze")
        expect(page.locator("#verdict")).to_contain_text(re.compile("tumor found", re.I))
        expect(page.locator("#label")).to_contain_text(CLASS_RE)

        photo = tmp_path / "astronaut.png"
        Image.fromarray(samples.astronaut()).save(photo)
        page.locator("#scan button[aria-label='Clear']").click()
        page.locator("#scan input[type=file]").set_input_files(str(photo))
        expect(page.locator("#scan-info")).to_contain_text("Image, 512x512 px")
        page.click("#analyze")
        expect(page.locator("#verdict")).to_contain_text("does not look like a brain MRI slice")
        expect(page.locator("#verdict")).not_to_contain_text(re.compile("tumor found", re.I))
        expect(page.locator("#label")).not_to_contain_text(CLASS_RE)

        page.get_by_role("tab", name="Results").click()
        expect(page.get_by_text("Test results").first).to_be_visible()
        page.click("#results-show")
        caption = page.locator("#results-caption")
        expect(caption).to_contain_text(re.compile(r"1 of \d+.*worst first"))
        expect(page.locator("#results-slice img")).to_be_visible()
        page.click("#results-next")
        expect(caption).to_contain_text(re.compile(r"2 of \d+.*worst first"))
        expect(caption).to_contain_text(re.compile(r"Dice \d\.\d{3} in eval.json"))
        page.get_by_label("best first").check()
        expect(caption).to_contain_text(re.compile(r"1 of \d+.*best first"))
    finally:
        context.close()
