"""The out-of-scope test set: what the demo must refuse, built only from files that packages ship and
from synthetic images, never from dataset copies.

HELD-OUT TEST SET, `out_of_scope_images()`: the benchmark's refusal rate is measured on it and nothing
is ever fitted or chosen on it.
- scikit-image's bundled sample images (photos, microscopy, a retina photo, text, a CT-like phantom)
  and the first dozen of its face crops;
- matplotlib's sample data (a portrait, logos, elevation maps rendered as images);
- pydicom's test files that are not MR (CT, ultrasound, nuclear medicine, dose grids, secondary captures);
- synthetic images: noise, gradients, checkerboards, stripes, shapes, solid colours, text pages.

The training-negative pool a refusal model may be fitted on is tumorlens.bench.scope_negatives.

Each function returns (name, RGB uint8) pairs; a source whose package is missing is skipped and named
in the log, so a set says what it holds."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger("tumorlens.bench.out_of_scope")

SKIMAGE_FACES = 12  # lfw_subset holds 200 small face crops; a dozen is plenty of faces


def as_rgb(array: np.ndarray) -> np.ndarray:
    """Any 2-D or 3-D array -> RGB uint8, min-max windowed over its finite values."""
    from ..preprocess import window_to_uint8
    a = np.asarray(array)
    if a.ndim == 3 and a.shape[-1] == 4:
        a = a[..., :3]
    if a.dtype != np.uint8:
        a = window_to_uint8(a.astype(np.float64))
    if a.ndim == 2:
        a = np.repeat(a[..., None], 3, axis=2)
    return np.ascontiguousarray(a)


def skimage_images() -> list[tuple[str, np.ndarray]]:
    try:
        import skimage
        from PIL import Image
    except ImportError:
        log.warning("scikit-image is not installed: its sample images are left out")
        return []
    folder = Path(skimage.__file__).parent / "data"
    out = []
    for path in sorted(folder.glob("*")):
        if path.suffix.lower() in (".png", ".jpg", ".jpeg"):
            with Image.open(path) as im:
                out.append((f"skimage/{path.name}", as_rgb(np.asarray(im.convert("RGB")))))
    faces = folder / "lfw_subset.npy"
    if faces.is_file():
        for i, face in enumerate(np.load(faces)[:SKIMAGE_FACES]):
            out.append((f"skimage/lfw_subset[{i}]", as_rgb(face)))
    return out


def matplotlib_images() -> list[tuple[str, np.ndarray]]:
    try:
        import matplotlib
        from PIL import Image
    except ImportError:
        log.warning("matplotlib is not installed: its sample data are left out")
        return []
    folder = Path(matplotlib.get_data_path()) / "sample_data"
    out = []
    for name in ("grace_hopper.jpg", "logo2.png", "Minduka_Present_Blue_Pack.png"):
        if (folder / name).is_file():
            with Image.open(folder / name) as im:
                out.append((f"matplotlib/{name}", as_rgb(np.asarray(im.convert("RGB")))))
    for name, key in (("topobathy.npz", "topo"), ("jacksboro_fault_dem.npz", "elevation")):
        if (folder / name).is_file():
            with np.load(folder / name) as data:
                out.append((f"matplotlib/{name}", as_rgb(data[key])))
    return out


def dicom_test_files() -> list[Path]:
    """The DICOM files inside the pydicom wheel (its get_testdata_files also tries to download more)."""
    import pydicom.data
    return sorted((Path(pydicom.data.__file__).parent / "test_files").glob("*.dcm"))


def pydicom_images() -> list[tuple[str, np.ndarray]]:
    """pydicom's test files of every modality but MR (an MR file may well be a head slice)."""
    try:
        import pydicom
    except ImportError:
        log.warning("pydicom is not installed: its test files are left out")
        return []
    out = []
    for path in dicom_test_files():
        try:
            ds = pydicom.dcmread(path)
            if getattr(ds, "Modality", None) == "MR" or "PixelData" not in ds:
                continue
            pixels = ds.pixel_array
        except Exception:  # noqa: BLE001 - compressed files whose codec is not installed are simply left out
            continue
        if pixels.ndim == 4 or (pixels.ndim == 3 and pixels.shape[-1] not in (3, 4)):
            pixels = pixels[len(pixels) // 2]  # a multi-frame file: its middle frame
        if min(pixels.shape[:2]) >= 16:
            out.append((f"pydicom/{Path(path).name}", as_rgb(pixels)))
    return out


def synthetic_images(size: int = 256, seed: int = 0) -> list[tuple[str, np.ndarray]]:
    """Noise, gradients, patterns, shapes, solid colours and text pages."""
    from PIL import Image, ImageDraw
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size] / (size - 1)
    grey = {
        "uniform_noise": rng.random((size, size)),
        "gaussian_noise": rng.normal(0.5, 0.2, (size, size)),
        "salt_pepper": (rng.random((size, size)) > 0.5).astype(float),
        "blurred_noise": blur(rng.random((size, size)), 8),
        "gradient_horizontal": x,
        "gradient_vertical": y,
        "gradient_radial": np.hypot(x - 0.5, y - 0.5),
        "checkerboard_16": ((np.floor(x * 16) + np.floor(y * 16)) % 2),
        "checkerboard_4": ((np.floor(x * 4) + np.floor(y * 4)) % 2),
        "stripes": (np.sin(x * 40) > 0).astype(float),
        "rings": (np.sin(np.hypot(x - 0.5, y - 0.5) * 80) > 0).astype(float),
    }
    out = [(f"synthetic/{name}", as_rgb(v)) for name, v in grey.items()]
    for name, level in (("black", 0), ("white", 255), ("mid_grey", 128)):  # not windowed: a constant would be all 0
        out.append((f"synthetic/{name}", np.full((size, size, 3), level, np.uint8)))
    for name, colour in (("red", (220, 30, 30)), ("green", (30, 200, 60)), ("blue", (30, 60, 220)),
                         ("skin", (224, 172, 140))):
        out.append((f"synthetic/solid_{name}", np.full((size, size, 3), colour, np.uint8)))
    out.append(("synthetic/colour_noise", rng.integers(0, 256, (size, size, 3), dtype=np.uint8)))
    for i in range(4):  # random filled shapes on a plain background
        im = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(im)
        for _ in range(6):
            box = sorted(rng.integers(0, size, 2)), sorted(rng.integers(0, size, 2))
            shape = (box[0][0], box[1][0], box[0][1] + 1, box[1][1] + 1)
            fill = tuple(int(v) for v in rng.integers(0, 256, 3))
            (draw.ellipse if rng.random() > 0.5 else draw.rectangle)(shape, fill=fill)
        out.append((f"synthetic/shapes_{i}", np.asarray(im)))
    for i, (paper, ink) in enumerate(((255, 0), (245, 30), (0, 255))):  # text pages, one inverted
        im = Image.new("L", (size, size), paper)
        draw = ImageDraw.Draw(im)
        for line in range(12):
            words = " ".join("".join(chr(int(c)) for c in rng.integers(97, 123, rng.integers(2, 8))) for _ in range(5))
            draw.text((8, 8 + line * 20), words, fill=ink)
        out.append((f"synthetic/text_page_{i}", as_rgb(np.asarray(im))))
    return out


def blur(a: np.ndarray, sigma: float) -> np.ndarray:
    from scipy import ndimage
    return ndimage.gaussian_filter(a, sigma)


def out_of_scope_images() -> list[tuple[str, np.ndarray]]:
    return skimage_images() + matplotlib_images() + pydicom_images() + synthetic_images()
