"""Pictures of a prediction (tumor outline over the MRI, the mask, a confidence heatmap, the flip
disagreement, a class-activation map; every map with its colour bar), of a prediction against the
expert's reference (`comparison_overlay`) and of a classifier's scores (its confusion matrix)."""

from __future__ import annotations

import functools

import numpy as np
from matplotlib import colormaps
from scipy import ndimage

OUTLINE_RGB = (255, 32, 32)


def outline(mask: np.ndarray, thickness: int | None = None) -> np.ndarray:
    """The mask's boundary pixels, about 0.4% of the image side thick."""
    mask = np.asarray(mask, bool)
    if thickness is None:
        thickness = max(1, round(max(mask.shape) / 256))
    return mask & ~ndimage.binary_erosion(mask, iterations=thickness, border_value=0)


def overlay_outline(rgb: np.ndarray, mask: np.ndarray, color=OUTLINE_RGB) -> np.ndarray:
    out = rgb.copy()
    out[outline(mask)] = color
    return out


def mask_image(mask: np.ndarray) -> np.ndarray:
    return (np.asarray(mask, bool) * 255).astype(np.uint8)


@functools.lru_cache(maxsize=16)
def _colour_table(cmap: str) -> np.ndarray:
    """The colormap's N colours as 0-255 floats (read-only): what `colormaps[cmap](x)[..., :3] * 255` gives."""
    table = colormaps[cmap](np.arange(colormaps[cmap].N))[:, :3] * 255
    table.setflags(write=False)
    return table


def _colours(probability: np.ndarray, cmap: str) -> np.ndarray:
    """H x W x 3 float64 colours of values in [0, 1], exactly as matplotlib's Colormap picks them (x * N,
    truncated, 1.0 in the last bin), from a cached table: the colormap call builds an RGBA copy each time."""
    n = colormaps[cmap].N
    if probability.dtype.kind != "f" or not np.isfinite(probability).all():  # NaN: matplotlib's 'bad' colour
        return colormaps[cmap](probability)[..., :3] * 255
    index = probability * n
    index[index == n] = n - 1
    return _colour_table(cmap).take(index.astype(int), axis=0)


def heatmap(rgb: np.ndarray, probability: np.ndarray, alpha: float = 0.55, cmap: str = "inferno") -> np.ndarray:
    """Tumor probability as colour blended over the grayscale MRI. Same pixels as the plain
    `gray * (1 - w) + colour * w` in float64, with the grey and the weight kept one channel deep (a
    third of the arithmetic: this runs twice per /analyze request)."""
    probability = np.clip(probability, 0, 1)
    colored = _colours(probability, cmap)
    rgb = np.asarray(rgb)
    if rgb.ndim == 3 and rgb.shape[-1] == 3:  # the channel sum is exact in float64: the same mean, faster
        gray = (rgb[..., 0].astype(np.float64) + rgb[..., 1] + rgb[..., 2])[..., None] / 3
    else:
        gray = rgb.mean(axis=-1, keepdims=True)
    weight = alpha * probability[..., None] ** 0.5
    blended = colored * weight
    blended += gray * (1 - weight)  # float addition commutes: the same sum as gray * (1 - w) + colour * w
    return np.clip(blended, 0, 255, out=blended).astype(np.uint8)


def colour_bar(height: int, cmap: str, low: str, high: str, title: str) -> np.ndarray:
    """A vertical colour bar (high at the top) with its end labels and a title, as an H x W x 3 strip."""
    from PIL import Image, ImageDraw, ImageFont
    font = ImageFont.load_default(size=max(10, height // 40))
    bar_w, pad = max(10, height // 32), max(3, height // 100)
    text_w = int(max(font.getlength(t) for t in (low, high))) + 2 * pad
    strip = Image.new("RGB", (bar_w + text_w + 2 * pad, height), (255, 255, 255))
    ramp = colormaps[cmap](np.linspace(1, 0, height))[:, :3] * 255
    strip.paste(Image.fromarray(np.repeat(ramp[:, None], bar_w, axis=1).astype(np.uint8)), (pad, 0))
    draw = ImageDraw.Draw(strip)
    draw.text((bar_w + 2 * pad, pad), high, fill=(0, 0, 0), font=font)
    draw.text((bar_w + 2 * pad, height - pad), low, fill=(0, 0, 0), font=font, anchor="ld")
    out = np.asarray(strip).copy()
    title_img = Image.new("RGB", (height, text_w), (255, 255, 255))  # the title runs up the strip
    ImageDraw.Draw(title_img).text((height // 2, text_w // 2), title, fill=(0, 0, 0), font=font, anchor="mm")
    rotated = np.asarray(title_img.rotate(90, expand=True))
    out[:, bar_w + 2 * pad:] = np.minimum(out[:, bar_w + 2 * pad:], rotated[:, :text_w])
    return out


def with_colour_bar(image: np.ndarray, cmap: str, low: str, high: str, title: str) -> np.ndarray:
    """`image` with its colour bar on the right: a map is not readable without its scale."""
    return np.concatenate([image, colour_bar(image.shape[0], cmap, low, high, title)], axis=1)


def probability_image(rgb: np.ndarray, probability: np.ndarray) -> np.ndarray:
    """The confidence heatmap with its colour bar."""
    return with_colour_bar(heatmap(rgb, probability), "inferno", "0", "1", "tumor probability")


DISAGREEMENT_SCALE = 0.5  # |p - p_mirrored| at or above this shows at full colour


def disagreement_image(rgb: np.ndarray, disagreement: np.ndarray) -> np.ndarray:
    """Where the slice and its mirror image disagree on the tumor probability (the uncertainty view)."""
    scaled = np.clip(np.asarray(disagreement, np.float32) / DISAGREEMENT_SCALE, 0, 1)
    return with_colour_bar(heatmap(rgb, scaled, cmap="viridis"), "viridis", "0", f">={DISAGREEMENT_SCALE:g}",
                           "views disagree by")


def activation_image(rgb: np.ndarray, activation: np.ndarray, label: str) -> np.ndarray:
    """A class-activation map (tumorlens.explain) over the slice, with its colour bar."""
    return with_colour_bar(heatmap(rgb, activation, cmap="turbo"), "turbo", "none", "most",
                           f"evidence for {label}")


def plot_confusion_matrix(cm, names, title: str, path, dpi: int = 110):
    """A confusion matrix as a PNG: counts in the cells, true classes down, predicted across."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    cm = np.asarray(cm)
    fig, ax = plt.subplots(figsize=(5, 4.4), dpi=dpi)
    ax.imshow(cm, cmap="Blues")
    for (r, c), v in np.ndenumerate(cm):
        ax.text(c, r, str(v), ha="center", va="center", color="white" if v > cm.max() / 2 else "black")
    ax.set_xticks(range(len(names)), names, rotation=30, ha="right")
    ax.set_yticks(range(len(names)), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


# reference vs prediction: the colours the Results tab's legend names
AGREEMENT_RGB = (255, 255, 0)   # yellow: both the reference and the model mark it
MISSED_RGB = (255, 0, 0)        # red: the reference marks it, the model does not
EXTRA_RGB = (0, 255, 0)         # green: the model marks it, the reference does not


def comparison_overlay(rgb: np.ndarray, reference: np.ndarray, prediction: np.ndarray,
                       alpha: float = 0.5) -> np.ndarray:
    """The slice in grey with the reference and the predicted mask blended over it: yellow where they
    agree, red where the model missed the reference, green where it marked extra. Grey underneath so a
    3-channel slice's own colours (LGG) never read as the legend's."""
    reference, prediction = np.asarray(reference, bool), np.asarray(prediction, bool)
    if reference.shape != prediction.shape or reference.shape != rgb.shape[:2]:
        raise ValueError(f"slice {rgb.shape[:2]}, reference {reference.shape} and prediction "
                         f"{prediction.shape} must have the same height and width")
    gray = np.asarray(rgb, np.float32).mean(axis=-1, keepdims=True).repeat(3, axis=-1)
    colour = np.zeros_like(gray)
    colour[reference & prediction] = AGREEMENT_RGB
    colour[reference & ~prediction] = MISSED_RGB
    colour[~reference & prediction] = EXTRA_RGB
    weight = alpha * (reference | prediction)[..., None]
    return np.clip(gray * (1 - weight) + colour * weight, 0, 255).round().astype(np.uint8)
