"""The training-negative pool: what a refusal model may be fitted on, built like the held-out
out-of-scope test set (tumorlens.bench.out_of_scope) from package files and synthetic images, and
disjoint from it.

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

from .out_of_scope import SKIMAGE_FACES, as_rgb, blur, out_of_scope_images

log = logging.getLogger("tumorlens.bench.scope_negatives")

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
                out.append((f"train/skimage/lfw_subset[{i}]", as_rgb(faces[i])))
        if (folder / "motorcycle_disp.npz").is_file():
            with np.load(folder / "motorcycle_disp.npz") as data:
                out.append(("train/skimage/motorcycle_disp.npz", as_rgb(data["arr_0"])))
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
                                as_rgb(np.asarray(Image.alpha_composite(white, rgba).convert("RGB")))))
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
            field = blur(rng.normal(size=(128, 128)), float(rng.uniform(2, 10)))
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
        out.append((f"train/synthetic/gradient_{i}", as_rgb(g)))
    for i, sigma in enumerate((1, 2, 4, 16, 32)):  # noise at other scales, multi-scale, coloured
        h, w = size()
        field = sum(blur(rng.normal(size=(h, w)), s) * s for s in (sigma, sigma * 4))
        out.append((f"train/synthetic/noise_{i}", as_rgb(field)))
        colour = np.stack([blur(rng.normal(size=(h, w)), sigma) for _ in range(3)], -1)
        out.append((f"train/synthetic/colour_noise_{i}", _rgb_channels(colour)))
        out.append((f"train/synthetic/sparse_noise_{i}", as_rgb(np.log1p(rng.exponential(size=(h, w)) ** 3))))
    for i in range(8):  # rotated grids, stripes, dots
        h, w = size()
        y, x = np.mgrid[0:h, 0:w] / max(h, w)
        f, a = rng.uniform(5, 60), rng.uniform(0, np.pi)
        u, v = x * np.cos(a) + y * np.sin(a), -x * np.sin(a) + y * np.cos(a)
        pattern = (np.sin(u * f) > 0) ^ (np.sin(v * f) > 0) if i % 3 == 0 else (
            np.sin(u * f) > rng.uniform(-0.5, 0.5) if i % 3 == 1 else (np.sin(u * f) * np.sin(v * f)) > 0.6)
        out.append((f"train/synthetic/pattern_{i}", as_rgb(pattern.astype(float))))
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
        out.append((f"train/synthetic/ellipse_phantom_{i}", as_rgb(np.clip(img, 0, 1))))
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
        out.append((f"train/synthetic/truetype_text_{i}", as_rgb(np.asarray(im))))
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
