"""The out-of-scope image sets: what the demo must refuse, built only from files that packages ship and
from synthetic images, never from dataset copies. Two disjoint sets, each named by what it holds:

HELD-OUT TEST SET, `out_of_scope_images()`: the benchmark's refusal rate is measured on it and nothing
is ever fitted or chosen on it.
- scikit-image's bundled sample images (photos, microscopy, a retina photo, text, a CT-like phantom)
  and the first dozen of its face crops;
- matplotlib's sample data (a portrait, logos, elevation maps rendered as images);
- pydicom's test files that are not MR (CT, ultrasound, nuclear medicine, dose grids, secondary captures);
- synthetic images: noise, gradients, checkerboards, stripes, shapes, solid colours, text pages.

TRAINING-NEGATIVE POOL, `training_negatives()`: negatives a refusal model may be fitted on (the scope
gate, tumorlens.scope_gate). None of its files is in the test set, its generators are others than the
test set's (or the same kind with other parameters and seeds), and `near_duplicates` checks that no
pool image repeats a test image.
- scikit-image's other face crops (lfw_subset[12:]) and its disparity map;
- the images other installed packages ship: gradio's media and test images, networkx's and sympy's
  plotting baselines, the playwright and matplotlib icons;
- figures matplotlib draws here (line, bar, scatter and pie charts, colour-mapped fields, histograms);
- other synthetic generators: grey levels and colours other than the test's, gradients at other
  angles, multi-scale and coloured noise, rotated grids and stripes, polygons and grey shapes on black,
  random-ellipse phantoms, text set in TrueType fonts, forms and tables;
- augmented crops (crop, flip, greyscale, inversion) of the pool's own package images.

Each function returns (name, RGB uint8) pairs; a source whose package is missing is skipped and named
in the log, so a set says what it holds."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

log = logging.getLogger("tumorlens.bench.out_of_scope")

SKIMAGE_FACES = 12  # lfw_subset holds 200 small face crops; a dozen is plenty of faces


def _rgb(array: np.ndarray) -> np.ndarray:
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
                out.append((f"skimage/{path.name}", _rgb(np.asarray(im.convert("RGB")))))
    faces = folder / "lfw_subset.npy"
    if faces.is_file():
        for i, face in enumerate(np.load(faces)[:SKIMAGE_FACES]):
            out.append((f"skimage/lfw_subset[{i}]", _rgb(face)))
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
                out.append((f"matplotlib/{name}", _rgb(np.asarray(im.convert("RGB")))))
    for name, key in (("topobathy.npz", "topo"), ("jacksboro_fault_dem.npz", "elevation")):
        if (folder / name).is_file():
            with np.load(folder / name) as data:
                out.append((f"matplotlib/{name}", _rgb(data[key])))
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
            out.append((f"pydicom/{Path(path).name}", _rgb(pixels)))
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
        "blurred_noise": _blur(rng.random((size, size)), 8),
        "gradient_horizontal": x,
        "gradient_vertical": y,
        "gradient_radial": np.hypot(x - 0.5, y - 0.5),
        "checkerboard_16": ((np.floor(x * 16) + np.floor(y * 16)) % 2),
        "checkerboard_4": ((np.floor(x * 4) + np.floor(y * 4)) % 2),
        "stripes": (np.sin(x * 40) > 0).astype(float),
        "rings": (np.sin(np.hypot(x - 0.5, y - 0.5) * 80) > 0).astype(float),
    }
    out = [(f"synthetic/{name}", _rgb(v)) for name, v in grey.items()]
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
        out.append((f"synthetic/text_page_{i}", _rgb(np.asarray(im))))
    return out


def _blur(a: np.ndarray, sigma: float) -> np.ndarray:
    from scipy import ndimage
    return ndimage.gaussian_filter(a, sigma)


def out_of_scope_images() -> list[tuple[str, np.ndarray]]:
    return skimage_images() + matplotlib_images() + pydicom_images() + synthetic_images()


# --- the training-negative pool (disjoint from everything above) -----------------------------------

TRAIN_FACES = slice(SKIMAGE_FACES, None)  # the face crops the test set does not hold
_SITE_IMAGES = (  # (package, files relative to it): images packages ship that the test set does not read
    ("gradio", ("media_assets/images/cheetah.jpg", "media_assets/images/cheetah1.jpg", "test_data/cheetah2.jpg",
                "media_assets/images/groot.jpeg", "media_assets/images/lion.jpg", "media_assets/images/tower.jpg",
                "media_assets/images/hf-logo_transpng.png", "media_assets/images/logo.png",
                "media_assets/images/screenshot.gif")),
    ("networkx", ("drawing/tests/baseline/test_display_complex.png", "drawing/tests/baseline/test_display_house_with_colors.png",
                  "drawing/tests/baseline/test_display_labels_and_colors.png",
                  "drawing/tests/baseline/test_display_shortest_path.png")),
    ("sympy", ("plotting/tests/test_region_and.png", "plotting/tests/test_region_or.png",
               "plotting/tests/test_region_xor.png", "plotting/tests/test_region_not.png")),
    ("matplotlib", ("mpl-data/images/matplotlib_large.png",)),
    ("playwright", ("driver/package/lib/server/chromium/appIcon.png",)),
)


def package_negatives() -> list[tuple[str, np.ndarray]]:
    """Images packages ship that the test set does not read: other face crops, gradio's media, plotting
    baselines, icons."""
    import importlib.util

    from PIL import Image
    out = []
    try:
        import skimage
        folder = Path(skimage.__file__).parent / "data"
        if (folder / "lfw_subset.npy").is_file():
            faces = np.load(folder / "lfw_subset.npy")
            for i in range(len(faces))[TRAIN_FACES]:
                out.append((f"train/skimage/lfw_subset[{i}]", _rgb(faces[i])))
        if (folder / "motorcycle_disp.npz").is_file():
            with np.load(folder / "motorcycle_disp.npz") as data:
                out.append(("train/skimage/motorcycle_disp.npz", _rgb(data["arr_0"])))
    except ImportError:
        log.warning("scikit-image is not installed: its other face crops are left out of the pool")
    for package, files in _SITE_IMAGES:
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            log.warning("%s is not installed: its images are left out of the pool", package)
            continue
        root = Path(list(spec.submodule_search_locations)[0])
        for rel in files:
            if not (root / rel).is_file():
                continue
            with Image.open(root / rel) as im:
                frames = getattr(im, "n_frames", 1)
                for k in sorted({0, frames // 2, frames - 1}):
                    im.seek(k)
                    rgba = im.convert("RGBA")
                    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))  # transparent logos on white
                    suffix = f"[{k}]" if frames > 1 else ""
                    out.append((f"train/{package}/{Path(rel).name}{suffix}",
                                _rgb(np.asarray(Image.alpha_composite(white, rgba).convert("RGB")))))
    return out


def figure_negatives(seed: int = 101, n: int = 24) -> list[tuple[str, np.ndarray]]:
    """Charts and colour-mapped fields drawn with matplotlib's Agg backend (seeded)."""
    try:
        import matplotlib  # noqa: F401 - presence check before the submodules
        from matplotlib.figure import Figure
        from matplotlib.backends.backend_agg import FigureCanvasAgg
    except ImportError:
        log.warning("matplotlib is not installed: drawn figures are left out of the pool")
        return []
    rng = np.random.default_rng(seed)
    cmaps = ("viridis", "gray", "bone", "hot", "jet", "magma", "coolwarm", "Greys", "plasma", "cubehelix")
    kinds = ("line", "bar", "scatter", "pie", "field", "hist")
    out = []
    for i in range(n):
        kind = kinds[i % len(kinds)]
        w, h = (float(v) for v in rng.uniform(2.5, 6, 2))
        fig = Figure(figsize=(w, h), dpi=int(rng.integers(50, 90)))
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        if kind == "line":
            for _ in range(int(rng.integers(1, 5))):
                ax.plot(np.cumsum(rng.normal(size=200)))
            ax.set_title("".join(chr(int(c)) for c in rng.integers(97, 123, 10)))
        elif kind == "bar":
            bars = int(rng.integers(3, 12))
            ax.bar(range(bars), rng.random(bars), color=rng.random(3))
        elif kind == "scatter":
            ax.scatter(rng.normal(size=300), rng.normal(size=300), c=rng.random(300), cmap=cmaps[i % len(cmaps)], s=8)
        elif kind == "pie":
            ax.pie(rng.random(int(rng.integers(2, 7))))
        elif kind == "field":
            field = _blur(rng.normal(size=(128, 128)), float(rng.uniform(2, 10)))
            ax.imshow(field, cmap=cmaps[int(rng.integers(len(cmaps)))])
            if rng.random() > 0.5:
                ax.set_axis_off()
        else:
            ax.hist(rng.gamma(2, size=500), bins=int(rng.integers(10, 40)))
        fig.canvas.draw()
        out.append((f"train/figure/{kind}_{i}", np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()))
    return out


def _font(size: int, index: int):
    from PIL import ImageFont
    try:
        import matplotlib
        fonts = sorted((Path(matplotlib.get_data_path()) / "fonts" / "ttf").glob("DejaVu*.ttf"))
        if fonts:
            return ImageFont.truetype(str(fonts[index % len(fonts)]), size)
    except ImportError:
        pass
    return ImageFont.load_default(size=size)


def synthetic_negatives(seed: int = 101) -> list[tuple[str, np.ndarray]]:
    """Synthetic images from generators (or parameters and seeds) the test set does not use."""
    from PIL import Image, ImageDraw
    rng = np.random.default_rng(seed)
    out: list[tuple[str, np.ndarray]] = []

    def size() -> tuple[int, int]:
        return int(rng.integers(160, 420)), int(rng.integers(160, 420))

    for level in (24, 64, 96, 160, 200, 232):  # grey levels the test's black, mid-grey and white are not
        out.append((f"train/synthetic/grey_{level}", np.full((*size(), 3), level, np.uint8)))
    for i in range(6):
        out.append((f"train/synthetic/colour_{i}", np.full((*size(), 3), rng.integers(0, 256, 3), np.uint8)))
    for i in range(8):  # linear gradients at other angles, radial ones off centre
        h, w = size()
        y, x = np.mgrid[0:h, 0:w] / max(h, w)
        angle = rng.uniform(0.2, 1.35) + (np.pi / 2) * int(rng.integers(4))
        g = x * np.cos(angle) + y * np.sin(angle)
        if i % 2:
            cy, cx = rng.uniform(0, 1, 2)
            g = np.hypot(x - cx, y - cy)
        out.append((f"train/synthetic/gradient_{i}", _rgb(g)))
    for i, sigma in enumerate((1, 2, 4, 16, 32)):  # noise at other scales, multi-scale, coloured
        h, w = size()
        field = sum(_blur(rng.normal(size=(h, w)), s) * s for s in (sigma, sigma * 4))
        out.append((f"train/synthetic/noise_{i}", _rgb(field)))
        colour = np.stack([_blur(rng.normal(size=(h, w)), sigma) for _ in range(3)], -1)
        out.append((f"train/synthetic/colour_noise_{i}", _rgb_channels(colour)))
        out.append((f"train/synthetic/sparse_noise_{i}", _rgb(np.log1p(rng.exponential(size=(h, w)) ** 3))))
    for i in range(8):  # rotated grids, stripes, dots
        h, w = size()
        y, x = np.mgrid[0:h, 0:w] / max(h, w)
        f, a = rng.uniform(5, 60), rng.uniform(0, np.pi)
        u, v = x * np.cos(a) + y * np.sin(a), -x * np.sin(a) + y * np.cos(a)
        pattern = (np.sin(u * f) > 0) ^ (np.sin(v * f) > 0) if i % 3 == 0 else (
            np.sin(u * f) > rng.uniform(-0.5, 0.5) if i % 3 == 1 else (np.sin(u * f) * np.sin(v * f)) > 0.6)
        out.append((f"train/synthetic/pattern_{i}", _rgb(pattern.astype(float))))
    for i in range(8):  # polygons and lines on colour, and grey shapes on black (a lone blob)
        h, w = size()
        on_black = i % 2 == 1
        im = Image.new("RGB", (w, h), (0, 0, 0) if on_black else tuple(int(v) for v in rng.integers(0, 256, 3)))
        draw = ImageDraw.Draw(im)
        for _ in range(int(rng.integers(1, 8))):
            points = [tuple(int(v) for v in rng.integers(0, [w, h])) for _ in range(int(rng.integers(3, 7)))]
            fill = (int(rng.integers(40, 256)),) * 3 if on_black else tuple(int(v) for v in rng.integers(0, 256, 3))
            if on_black and rng.random() > 0.4:
                cx, cy = rng.integers(w // 4, 3 * w // 4), rng.integers(h // 4, 3 * h // 4)
                rx, ry = rng.integers(10, w // 3), rng.integers(10, h // 3)
                draw.ellipse((int(cx - rx), int(cy - ry), int(cx + rx), int(cy + ry)), fill=fill)
            elif rng.random() > 0.5:
                draw.polygon(points, fill=fill)
            else:
                draw.line(points, fill=fill, width=int(rng.integers(1, 12)))
        out.append((f"train/synthetic/{'blobs_on_black' if on_black else 'polygons'}_{i}", np.asarray(im)))
    for i in range(8):  # random-ellipse phantoms: a bright rim around grey ellipses, on black
        n = int(rng.integers(192, 400))
        yy, xx = np.mgrid[0:n, 0:n] / n * 2 - 1
        img = np.zeros((n, n))
        a, b = rng.uniform(0.6, 0.9), rng.uniform(0.7, 0.95)
        outer = (xx / a) ** 2 + (yy / b) ** 2
        img[outer <= 1] = rng.uniform(0.6, 1.0)
        img[outer <= rng.uniform(0.75, 0.9)] = rng.uniform(0.1, 0.4)
        for _ in range(int(rng.integers(2, 8))):
            cx, cy = rng.uniform(-0.4, 0.4), rng.uniform(-0.5, 0.5)
            ra, rb, t = rng.uniform(0.03, 0.25), rng.uniform(0.03, 0.3), rng.uniform(0, np.pi)
            u, v = (xx - cx) * np.cos(t) + (yy - cy) * np.sin(t), -(xx - cx) * np.sin(t) + (yy - cy) * np.cos(t)
            img[(u / ra) ** 2 + (v / rb) ** 2 <= 1] += rng.uniform(-0.1, 0.3)
        out.append((f"train/synthetic/ellipse_phantom_{i}", _rgb(np.clip(img, 0, 1))))
    for i in range(8):  # text set in TrueType fonts: pages, forms, tables
        h, w = size()
        paper, ink = ((250, 10), (20, 235), (230, 60), (255, 90))[i % 4]
        im = Image.new("L", (w, h), paper)
        draw = ImageDraw.Draw(im)
        font = _font(int(rng.integers(9, 22)), i)
        step = font.size + 4
        for line in range(h // step):
            words = " ".join("".join(chr(int(c)) for c in rng.integers(65, 123, rng.integers(2, 9))) for _ in range(8))
            draw.text((6, 4 + line * step), words, fill=ink, font=font)
            if i % 3 == 2:
                draw.line((0, line * step, w, line * step), fill=ink)
        out.append((f"train/synthetic/truetype_text_{i}", _rgb(np.asarray(im))))
    return out


def _rgb_channels(a: np.ndarray) -> np.ndarray:
    """H x W x 3 float -> uint8, each channel min-max windowed on its own."""
    lo, hi = a.min(axis=(0, 1)), a.max(axis=(0, 1))
    return np.ascontiguousarray(((a - lo) / np.maximum(hi - lo, 1e-9) * 255).round().astype(np.uint8))


def augmented_negatives(images: list[tuple[str, np.ndarray]], seed: int = 101, per_image: int = 1
                        ) -> list[tuple[str, np.ndarray]]:
    """Crops (half to nine tenths of a side), flips, greyscale and inverted copies of `images` (seeded).
    Only ever applied to pool images, never to the test set."""
    rng = np.random.default_rng(seed)
    out = []
    for name, rgb in images:
        for k in range(per_image):
            h, w = rgb.shape[:2]
            ch, cw = max(16, int(h * rng.uniform(0.5, 0.9))), max(16, int(w * rng.uniform(0.5, 0.9)))
            top, left = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
            a = rgb[top:top + ch, left:left + cw]
            if rng.random() > 0.5:
                a = a[:, ::-1]
            mode = int(rng.integers(3))
            if mode == 1:
                a = np.repeat(a.mean(axis=2, keepdims=True), 3, axis=2).round().astype(np.uint8)
            elif mode == 2:
                a = 255 - a
            out.append((f"{name}~aug{k}", np.ascontiguousarray(a)))
    return out


def training_negatives(seed: int = 101) -> list[tuple[str, np.ndarray]]:
    """The training-negative pool (see the module's docstring): never the test set's files, and any
    candidate that `near_duplicates` finds in the test set (a nearly black face crop looks like the
    test's black square) is left out and named in the log."""
    packaged = package_negatives()
    pool = packaged + figure_negatives(seed) + synthetic_negatives(seed) + augmented_negatives(packaged, seed)
    clash = {name for name, _ in near_duplicates(pool, out_of_scope_images())}
    if clash:
        log.info("left %d pool images out as near-duplicates of test images: %s", len(clash), ", ".join(sorted(clash)))
    return [(name, rgb) for name, rgb in pool if name not in clash]


def _thumb(rgb: np.ndarray, side: int = 32) -> np.ndarray:
    from ..preprocess import letterbox_image
    return letterbox_image(rgb, side)[0].astype(np.float32)


def near_duplicates(pool: list[tuple[str, np.ndarray]], test: list[tuple[str, np.ndarray]],
                    max_mean_abs_diff: float = 6.0, min_correlation: float = 0.97) -> list[tuple[str, str]]:
    """(pool name, test name) pairs whose 32 px letterboxed thumbnails are nearly the same: mean absolute
    difference under `max_mean_abs_diff` grey levels, or correlation above `min_correlation` with the
    same mean to within 10 levels (a copy at another contrast or size)."""
    t_test = np.stack([_thumb(a) for _, a in test]).reshape(len(test), -1)
    pairs = []
    for name, rgb in pool:
        t = _thumb(rgb).reshape(-1)
        mad = np.abs(t_test - t).mean(axis=1)
        tc, xc = t - t.mean(), t_test - t_test.mean(axis=1, keepdims=True)
        denom = np.linalg.norm(tc) * np.linalg.norm(xc, axis=1)
        corr = np.where(denom > 0, xc @ tc / np.maximum(denom, 1e-9), 0.0)
        close_mean = np.abs(t_test.mean(axis=1) - t.mean()) < 10
        for j in np.flatnonzero((mad < max_mean_abs_diff) | ((corr > min_correlation) & close_mean)):
            pairs.append((name, test[j][0]))
    return pairs
