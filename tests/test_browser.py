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


def test_example_gives_the_overlay_and_the_label(page):
    example = example_paths()[0]  # the glioma slice
    page.get_by_text("glioma", exact=True).first.click()
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
