"""The one preprocessing path: decoding every image kind, mask thresholding, letterbox geometry, and
parity between the training path (uint8 packs) and the inference path (a file)."""

from __future__ import annotations

import io

import datasets
import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from tumorlens.data import brisc2025
from tumorlens.errors import DataError
from tumorlens.packs import build_pack, load_pack, save_pack
from tumorlens.preprocess import (
    Letterbox, PreprocessConfig, Preprocessor, binarize_mask, decode_image, decode_mask, letterbox_geometry,
    letterbox_image, letterbox_mask, restore_map, crop_to_tumor, tumor_box,
)

RNG = np.random.default_rng(0)
GRAY = RNG.integers(0, 256, size=(24, 40), dtype=np.uint8)
RGB = RNG.integers(0, 256, size=(24, 40, 3), dtype=np.uint8)


def _png(img: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG", **kwargs)
    return buf.getvalue()


def _window(a: np.ndarray) -> np.ndarray:
    """The documented 16-bit view: min-max to 0..255, rounded."""
    a = a.astype(np.float32)
    lo, hi = float(a.min()), float(a.max())
    return np.rint((a - lo) * (255.0 / (hi - lo))).astype(np.uint8)


# ------------------------------------------------------------------------------------------ decode


def _check_rgb(out: np.ndarray, shape=(24, 40)) -> None:
    assert out.dtype == np.uint8
    assert out.shape == (*shape, 3)
    assert out.flags["C_CONTIGUOUS"]


@pytest.mark.parametrize("as_bytes", [False, True])
def test_decode_grayscale_L(tmp_path, as_bytes):
    img = Image.fromarray(GRAY)
    assert img.mode == "L"
    if as_bytes:
        src = _png(img)
    else:
        src = tmp_path / "g.png"
        img.save(src)
    out = decode_image(src)
    _check_rgb(out)
    for c in range(3):
        assert np.array_equal(out[..., c], GRAY)


def test_decode_rgb(tmp_path):
    path = tmp_path / "c.png"
    Image.fromarray(RGB).save(path)
    out = decode_image(path)
    _check_rgb(out)
    assert np.array_equal(out, RGB)
    assert np.array_equal(decode_image(Image.open(path)), RGB)
    assert np.array_equal(decode_image({"bytes": path.read_bytes(), "path": None}), RGB)
    assert np.array_equal(decode_image({"bytes": None, "path": str(path)}), RGB)


def test_decode_rgba_composites_on_black(tmp_path):
    alpha = np.zeros((24, 40), np.uint8)
    alpha[:, 10:20] = 255
    alpha[:, 20:30] = 128
    rgba = np.dstack([RGB, alpha])
    path = tmp_path / "a.png"
    Image.fromarray(rgba, "RGBA").save(path)
    out = decode_image(path)
    _check_rgb(out)
    assert not out[:, :10].any()  # fully transparent -> black
    assert not out[:, 30:].any()
    assert np.array_equal(out[:, 10:20], RGB[:, 10:20])  # opaque -> unchanged
    expected = np.rint(RGB[:, 20:30].astype(np.float32) * (128 / 255.0)).astype(np.uint8)
    assert np.array_equal(out[:, 20:30], expected)
    assert np.array_equal(decode_image(rgba), out)  # the same from an array


def test_decode_16bit_png_is_min_max_windowed(tmp_path):
    a = np.linspace(300, 41000, 24 * 40).reshape(24, 40).astype(np.uint16)
    a[3, 5] = 300
    path = tmp_path / "i16.png"
    Image.fromarray(a).save(path)
    with Image.open(path) as img:
        assert img.mode in ("I;16", "I")
        assert np.array_equal(np.asarray(img).astype(np.int64), a.astype(np.int64))  # lossless on disk
    out = decode_image(path)
    _check_rgb(out)
    assert np.array_equal(out[..., 0], _window(a))
    assert np.array_equal(out[..., 1], out[..., 0]) and np.array_equal(out[..., 2], out[..., 0])
    assert out.min() == 0 and out.max() == 255
    assert np.array_equal(decode_image(a), out)  # the same from a uint16 array


def test_decode_palette(tmp_path):
    palette = RNG.integers(0, 256, size=(256, 3), dtype=np.uint8)
    idx = RNG.integers(0, 256, size=(24, 40), dtype=np.uint8)
    img = Image.fromarray(idx, "P")
    img.putpalette(palette.ravel().tolist())
    path = tmp_path / "p.png"
    img.save(path)
    with Image.open(path) as check:
        assert check.mode == "P"
    out = decode_image(path)
    _check_rgb(out)
    assert np.array_equal(out, palette[idx])


def test_decode_palette_with_transparency_composites_on_black(tmp_path):
    palette = np.array([[200, 100, 50], [10, 20, 30]] + [[0, 0, 0]] * 254, np.uint8)
    idx = np.zeros((24, 40), np.uint8)
    idx[:, 20:] = 1
    img = Image.fromarray(idx, "P")
    img.putpalette(palette.ravel().tolist())
    path = tmp_path / "pt.png"
    img.save(path, transparency=0)  # index 0 is transparent
    out = decode_image(path)
    assert not out[:, :20].any()
    assert np.array_equal(out[:, 20:], np.broadcast_to(np.array([10, 20, 30], np.uint8), (24, 20, 3)))


@pytest.mark.parametrize("kind", ["gray", "gray1", "rgb", "chw", "rgba", "uint16", "int16", "float", "bool-like"])
def test_decode_arrays(kind):
    if kind == "gray":
        arr, expected = GRAY, np.repeat(GRAY[..., None], 3, -1)
    elif kind == "gray1":
        arr, expected = GRAY[..., None], np.repeat(GRAY[..., None], 3, -1)
    elif kind == "rgb":
        arr, expected = RGB, RGB
    elif kind == "chw":
        arr, expected = np.moveaxis(RGB, -1, 0), RGB
    elif kind == "rgba":
        arr, expected = np.dstack([RGB, np.full((24, 40), 255, np.uint8)]), RGB
    elif kind == "uint16":
        arr = GRAY.astype(np.uint16) * 200
        expected = np.repeat(_window(arr)[..., None], 3, -1)
    elif kind == "int16":
        arr = GRAY.astype(np.int16) - 100
        expected = np.repeat(_window(arr)[..., None], 3, -1)
    elif kind == "float":
        arr = GRAY.astype(np.float64) / 1000.0
        expected = np.repeat(_window(arr)[..., None], 3, -1)
    else:
        arr = (GRAY > 128).astype(np.float32)
        expected = np.repeat(((GRAY > 128) * 255).astype(np.uint8)[..., None], 3, -1)
    out = decode_image(arr)
    _check_rgb(out)
    assert np.array_equal(out, expected)


def test_decode_constant_high_bit_depth_is_black():
    assert not decode_image(np.full((20, 20), 1234, np.uint16)).any()


@pytest.mark.parametrize("arr", [np.zeros((20, 20, 2), np.uint8), np.zeros((2, 20, 20, 3), np.uint8),
                                 np.zeros(400, np.uint8)])
def test_decode_refuses_bad_array_shapes(arr):
    with pytest.raises(DataError, match="expected a 2-D grayscale or 3-channel image"):
        decode_image(arr)


def test_decode_refuses_tiny_and_bad_sources(tmp_path):
    with pytest.raises(DataError, match="at least 16 px"):
        decode_image(np.zeros((8, 100), np.uint8))
    missing = tmp_path / "nope.png"
    with pytest.raises(DataError, match="nope.png"):
        decode_image(missing)
    empty = tmp_path / "empty.jpg"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="empty.jpg"):
        decode_image(empty)
    with pytest.raises(DataError, match="empty"):
        decode_image(b"")
    with pytest.raises(DataError, match="not a readable image"):
        decode_image(b"garbage bytes that are not an image")
    with pytest.raises(DataError, match="cannot read an image from int"):
        decode_image(3)


# ------------------------------------------------------------------------------------------ masks


def test_binarize_mask_threshold_is_127():
    m = np.array([[0, 1, 126, 127], [128, 129, 254, 255]], np.uint8)
    assert np.array_equal(binarize_mask(m), [[0, 0, 0, 0], [1, 1, 1, 1]])
    assert binarize_mask(m).dtype == np.uint8
    assert np.array_equal(binarize_mask(np.array([127, 128], np.uint16)), [0, 1])
    assert np.array_equal(binarize_mask(np.array([True, False])), [1, 0])


def test_binarize_mask_any_channel():
    m = np.zeros((2, 2, 3), np.uint8)
    m[0, 0, 2] = 200
    m[1, 1, 0] = 127
    assert np.array_equal(binarize_mask(m), [[1, 0], [0, 0]])


def test_decode_mask_files(tmp_path):
    m = np.array([[0, 7, 127, 128], [248, 255, 126, 200]] * 8, np.uint8)
    m = np.tile(m, (1, 4))
    path = tmp_path / "m.png"
    Image.fromarray(m).save(path)
    assert np.array_equal(decode_mask(path), (m > 127).astype(np.uint8))
    pal = Image.fromarray((m > 127).astype(np.uint8), "P")
    pal.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    assert np.array_equal(decode_mask(_png(pal)), (m > 127).astype(np.uint8))


# ------------------------------------------------------------------------------------------ letterbox


@pytest.mark.parametrize("h, w, size, expected", [
    (100, 200, 64, Letterbox(100, 200, 64, 32, 64, 16, 0)),
    (300, 150, 256, Letterbox(300, 150, 256, 256, 128, 0, 64)),
    (512, 512, 256, Letterbox(512, 512, 256, 256, 256, 0, 0)),
    (201, 554, 256, Letterbox(201, 554, 256, 93, 256, 81, 0)),
    (120, 121, 256, Letterbox(120, 121, 256, 254, 256, 1, 0)),
])
def test_letterbox_geometry(h, w, size, expected):
    assert letterbox_geometry(h, w, size) == expected


def test_letterbox_image_pads_with_zeros_and_keeps_aspect():
    rgb = np.full((100, 200, 3), 200, np.uint8)
    out, box = letterbox_image(rgb, 64)
    assert out.shape == (64, 64, 3) and out.dtype == np.uint8
    assert box == Letterbox(100, 200, 64, 32, 64, 16, 0)
    assert not out[:16].any() and not out[48:].any()
    assert (out[16:48] == 200).all()
    same, box2 = letterbox_image(RGB[:24, :24], 24)
    assert np.array_equal(same, RGB[:24, :24])  # already square at size: untouched
    assert box2 == Letterbox(24, 24, 24, 24, 24, 0, 0)


def _blob_mask(h: int, w: int) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    m = ((yy - 0.4 * h) ** 2 / (0.25 * h) ** 2 + (xx - 0.55 * w) ** 2 / (0.2 * w) ** 2) <= 1
    m[int(0.7 * h): int(0.9 * h), int(0.1 * w): int(0.3 * w)] = True
    return m.astype(np.uint8)


@pytest.mark.parametrize("h, w, size", [(120, 200, 256), (300, 180, 128), (201, 554, 256), (512, 380, 256)])
def test_letterbox_mask_then_restore_matches_original(h, w, size):
    mask = _blob_mask(h, w)
    boxed = letterbox_mask(mask, size)
    box = letterbox_geometry(h, w, size)
    assert boxed.shape == (size, size)
    assert set(np.unique(boxed)) <= {0, 1}
    # nothing leaks into the padding
    assert not boxed[: box.top].any() and not boxed[box.top + box.new_h:].any()
    assert not boxed[:, : box.left].any() and not boxed[:, box.left + box.new_w:].any()
    restored = restore_map(boxed.astype(np.float32), box)
    assert restored.shape == (h, w)
    back = (restored > 0.5).astype(np.uint8)
    wrong = back != mask
    # disagreement only on the boundary: within a couple of pixels (a pixel more per downscale step)
    tol = 2 + int(np.ceil(max(h, w) / size))
    band = ndimage.binary_dilation(mask, iterations=tol) & ~ndimage.binary_erosion(mask, iterations=tol)
    assert not (wrong & ~band).any()
    assert wrong.sum() < 0.05 * mask.sum()
    inter = (back & mask).sum()
    assert 2 * inter / (back.sum() + mask.sum()) > 0.97


def test_restore_map_inverts_the_letterbox_of_a_smooth_map():
    h, w, size = 90, 160, 128
    yy, xx = np.mgrid[:h, :w]
    prob = (yy / h * 0.5 + xx / w * 0.5).astype(np.float32)
    box = letterbox_geometry(h, w, size)
    boxed = np.zeros((size, size), np.float32)
    boxed[box.top: box.top + box.new_h, box.left: box.left + box.new_w] = np.asarray(
        Image.fromarray(prob).resize((box.new_w, box.new_h), Image.BILINEAR))
    back = restore_map(torch.from_numpy(boxed), box)
    assert back.shape == (h, w)
    assert np.abs(back - prob).max() < 0.02


# ------------------------------------------------------------------------------------------ parity


@pytest.fixture(scope="module")
def brisc_images(data_home):
    """Real BRISC slices: a non-square one, an RGB one and a grayscale one where available."""
    root = data_home / "brisc2025" / "classification_task" / "test"
    want = {"nonsquare": None, "RGB": None, "L": None}
    for cls in ("glioma", "meningioma", "no_tumor", "pituitary"):
        for p in sorted((root / cls).iterdir())[:60]:
            with Image.open(p) as img:
                if want["nonsquare"] is None and img.width != img.height:
                    want["nonsquare"] = p
                if img.mode in want and want[img.mode] is None:
                    want[img.mode] = p
        if all(want.values()):
            break
    assert all(want.values()), want
    return sorted(set(want.values()))


@pytest.mark.parametrize("size", [256, 224])
def test_training_and_inference_paths_are_identical(brisc_images, tmp_path, size):
    pre = Preprocessor(PreprocessConfig(input_size=size))
    for path in brisc_images:
        pixels, box = pre.prepare(path)
        assert pixels.shape == (size, size, 3) and pixels.dtype == np.uint8
        # store and reload as a training pack does
        stored = load_pack(save_pack({"images": pixels[None]}, tmp_path / f"{path.stem}-{size}.npz"))["images"]
        assert stored.dtype == np.uint8
        x_train = pre.normalize(torch.from_numpy(stored))  # SegmentationTask.validate / predict_probs
        x_train_one = pre.normalize(torch.from_numpy(stored[0])[None])
        # make_batch: uint8 NHWC -> float NCHW in [0, 1] -> normalize
        x_batch = pre.normalize(torch.from_numpy(stored).permute(0, 3, 1, 2).float().div_(255.0))
        x_infer, box_infer = pre(path)
        assert x_infer.shape == (1, 3, size, size) and x_infer.dtype == torch.float32
        assert box_infer == box
        assert torch.equal(x_train, x_infer)
        assert torch.equal(x_train_one, x_infer)
        assert torch.equal(x_batch, x_infer)
        # the same from the bytes an upload would give
        assert torch.equal(pre(path.read_bytes())[0], x_infer)


def test_normalize_uses_the_config_mean_and_std():
    pre = Preprocessor(PreprocessConfig(input_size=16, mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5)))
    x = torch.tensor([0, 255, 51], dtype=torch.uint8).view(1, 1, 1, 3).expand(1, 2, 2, 3).contiguous()
    out = pre.normalize(x)
    assert out.shape == (1, 3, 2, 2)
    assert torch.allclose(out[0, :, 0, 0], torch.tensor([-1.0, 1.0, -0.6]))


def test_build_pack_matches_prepare_per_image(make_brisc_tree):
    tree = make_brisc_tree(per_class=1)
    ds = brisc2025.load_segmentation(tree.root, include_no_tumor=True, check="none")["test"]
    ds3 = ds.select([0, 2, 3])  # two tumor slices and the no_tumor slice (in-memory mask bytes)
    assert ds3.features["label"].int2str(ds3[2]["label"]) == "no_tumor"
    size = 96
    pack = build_pack(ds3, size, workers=1)
    pre = Preprocessor(PreprocessConfig(input_size=size))
    raw = ds3.cast_column("image", datasets.Image(decode=False)).cast_column("mask", datasets.Image(decode=False))
    assert pack["images"].shape == (3, size, size, 3) and pack["images"].dtype == np.uint8
    assert pack["masks"].shape == (3, size, size) and pack["masks"].dtype == np.uint8
    assert list(pack["file_names"]) == list(ds3["file_name"])
    assert list(pack["labels"]) == list(ds3["label"])
    for i, row in enumerate(raw):
        assert np.array_equal(pack["images"][i], pre.prepare(row["image"]["path"])[0])
        assert np.array_equal(pack["masks"][i], pre.prepare_mask(row["mask"]))
    assert pack["masks"][0].any() and pack["masks"][1].any()
    assert not pack["masks"][2].any()
    # and the pack feeds the network exactly what inference on the file would
    for i, row in enumerate(raw):
        assert torch.equal(pre.normalize(torch.from_numpy(pack["images"][i])[None]), pre(row["image"]["path"])[0])


# -- mask-guided classification: the tumor region -------------------------------------------
def test_tumor_box_is_a_grown_square_around_the_mask():
    mask = np.zeros((200, 100), np.uint8)
    mask[90:110, 40:50] = 1  # 20 x 10 px
    top, left, bottom, right = tumor_box(mask, margin=0.25, min_side=0.0)
    assert (bottom - top, right - left) == (30, 30)  # longer side 20, grown by a quarter each way
    assert (top + bottom) / 2 == 100 and (left + right) / 2 == 45  # centred on the mask


def test_tumor_box_keeps_a_minimum_side_and_stays_inside_the_image():
    mask = np.zeros((100, 100), np.uint8)
    mask[0:2, 97:100] = 1  # a speck in the corner
    top, left, bottom, right = tumor_box(mask, margin=0.25, min_side=0.4)
    assert (top, left, bottom, right) == (0, 60, 40, 100)  # 40 px square, shifted back inside


def test_tumor_region_of_a_small_image_is_still_a_valid_input():
    rgb = np.zeros((40, 40, 3), np.uint8)
    mask = np.zeros((40, 40), bool)
    mask[20:22, 20:22] = True
    region = crop_to_tumor(rgb, mask)
    assert min(region.shape[:2]) >= 16  # decode_image's smallest accepted side
    Preprocessor(PreprocessConfig(input_size=32)).prepare(region)


def test_tumor_box_is_cut_where_the_image_is_narrower():
    mask = np.zeros((200, 60), np.uint8)
    mask[50:150, 10:50] = 1
    top, left, bottom, right = tumor_box(mask, margin=0.25, min_side=0.0)
    assert (bottom - top, left, right) == (150, 0, 60)


def test_crop_to_tumor_takes_the_whole_image_without_a_tumor():
    rgb = np.random.default_rng(0).integers(0, 255, (64, 80, 3), dtype=np.uint8)
    assert crop_to_tumor(rgb, None) is rgb
    assert crop_to_tumor(rgb, np.zeros((64, 80), bool)) is rgb
    mask = np.zeros((64, 80), bool)
    mask[20:30, 30:40] = True
    region = crop_to_tumor(rgb, mask, margin=0.5, min_side=0.0)
    assert region.shape == (20, 20, 3) and np.array_equal(region, rgb[15:35, 25:45])
    with pytest.raises(ValueError, match="differ in size"):
        crop_to_tumor(rgb, np.zeros((10, 10), bool))


def test_preprocess_config_carries_the_tumor_region_setting():
    cfg = PreprocessConfig(input_size=224, crop_to_tumor=True, roi_margin=0.3, roi_min_side=0.2)
    assert PreprocessConfig.from_dict(cfg.to_dict()).to_dict() == cfg.to_dict()
    timm_cfg = {"input_size": [3, 224, 224], "mean": [0.5] * 3, "std": [0.5] * 3}
    assert PreprocessConfig.from_timm(timm_cfg, cfg.tumor_roi()).crop_to_tumor
    assert not PreprocessConfig.from_timm(timm_cfg).crop_to_tumor
    assert PreprocessConfig.from_dict({"input_size": 256}).crop_to_tumor is False  # older folders
    rgb = np.zeros((50, 50, 3), np.uint8)
    mask = np.zeros((50, 50), bool)
    mask[10:20, 10:20] = True
    assert Preprocessor(PreprocessConfig()).crop(rgb, mask) is rgb  # a whole-slice model ignores masks
    assert Preprocessor(cfg).crop(rgb, mask).shape[:2] == (16, 16)


def test_a_float_tiff_with_nan_and_inf_is_windowed_on_its_finite_pixels(tmp_path):
    """The plain-image path windows like the DICOM/NIfTI path: NaN/inf never set the window (it used
    to turn the whole slice black)."""
    import tifffile
    from tumorlens.preprocess import decode_image
    clean = np.linspace(-50, 1200, 96 * 96, dtype=np.float32).reshape(96, 96)
    dirty = clean.copy()
    rng = np.random.default_rng(0)
    spots = rng.choice(np.arange(1, clean.size - 1), size=100, replace=False)
    dirty.flat[spots[:50]] = np.nan
    dirty.flat[spots[50:]] = np.inf
    tifffile.imwrite(tmp_path / "clean.tif", clean)
    tifffile.imwrite(tmp_path / "dirty.tif", dirty)
    a, b = decode_image(tmp_path / "clean.tif"), decode_image(tmp_path / "dirty.tif")
    finite = np.isfinite(dirty)
    assert a.max() == 255 and np.array_equal(a[finite], b[finite])
    bad = ~finite  # filled from their neighbours on a smooth ramp: within a level or two of the clean slice
    assert np.abs(b[bad].astype(int) - a[bad].astype(int)).max() <= 2


def test_nonfinite_pixels_take_their_neighbours_level():
    """NaN/inf in float data look like the tissue around them, not black or white specks, and never
    set the window: the windowed image matches the clean one within a level or two."""
    from tumorlens.decode import window
    y, x = np.mgrid[0:64, 0:64].astype(np.float32)
    clean = (x + y) * 10.0
    dirty = clean.copy()
    rng = np.random.default_rng(0)
    spots = rng.choice(64 * 64, 60, replace=False)
    dirty.flat[spots[:20]] = np.nan
    dirty.flat[spots[20:40]] = np.inf
    dirty.flat[spots[40:]] = -np.inf
    dirty[30:33, 30:33] = np.nan  # a 3 x 3 hole
    a, n = window(dirty)
    b, _ = window(clean)
    assert n == 60 + 9 - len(set(spots) & {r * 64 + c for r in range(30, 33) for c in range(30, 33)})
    assert np.abs(a.astype(int) - b.astype(int)).max() <= 12  # a neighbour on a 10-per-pixel ramp: <= 2 px away
    assert a.min() == b.min() and a.max() == b.max()  # the window is the clean one
