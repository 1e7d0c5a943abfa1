"""The out-of-scope gate (tumorlens.scope_gate): its decision logic on synthetic data (fast), and the
shipped gate on a handful of real validation slices and held-out out-of-scope images (slow)."""

from __future__ import annotations

import numpy as np
import pytest

from tumorlens.scope_gate import (GATE_CARD, GATE_FILE, REFUSAL, STAT_NAMES, GateModel, GaussianGroup, ScopeGate,
                                  StageFeatures, at_most_two_colours, calibrate_threshold, extract_features,
                                  fit_logistic, image_statistics)


# -- fast: the parts, on synthetic data ---------------------------------------------------------------
def test_calibrated_threshold_refuses_at_most_the_share_of_each_dataset():
    rng = np.random.default_rng(0)
    scores = {"a": rng.random(265), "b": rng.random(501) * 0.5 + 0.5, "c": rng.random(409)}
    t = calibrate_threshold(scores, 0.01)
    for s in scores.values():
        assert (s < t).sum() <= np.floor(0.01 * len(s))
    # the binding dataset refuses exactly its share, with the line halfway between two of its slices
    binding = [s for s in scores.values() if (s < t).sum() == np.floor(0.01 * len(s))]
    assert binding and any(np.isclose(t, (np.sort(s)[int(0.01 * len(s)) - 1] + np.sort(s)[int(0.01 * len(s))]) / 2)
                           for s in binding)
    assert 0.19 < calibrate_threshold({"a": np.array([0.2, 0.9])}, 0.0) < 0.2  # refuse none
    with pytest.raises(ValueError):
        calibrate_threshold({}, 0.01)


def test_gaussian_group_measures_distance_to_the_nearest_dataset():
    rng = np.random.default_rng(1)
    a = rng.normal(0, 1, (400, 10))
    b = rng.normal(0, 1, (400, 10)) + 6
    g = GaussianGroup.fit([a, b], k=4)  # fewer axes than dimensions: the residual term counts too
    far = rng.normal(0, 1, (50, 10)) + np.r_[30, np.zeros(9)]
    d_in = g.distances(np.r_[a[:50], b[:50]]).min(1)
    d_out = g.distances(far).min(1)
    assert np.median(d_in) < 2 and d_out.min() > 10 * np.median(d_in)
    near = g.distances(np.r_[a[:50], b[:50]]).argmin(1)
    assert (near[:50] == 0).all() and (near[50:] == 1).all()


def test_logistic_regression_keeps_only_nonpositive_weights():
    rng = np.random.default_rng(2)
    n = 600
    y = (rng.random(n) > 0.5).astype(float)
    dist = rng.normal(0, 1, n) - 3 * y              # in-scope slices lie closer: a negative weight
    odd = rng.normal(0, 1, n) + 0.8 * y             # would get a positive weight: dropped
    w, b, mean, scale = fit_logistic(np.c_[dist, odd], y)
    assert w[0] < 0 and w[1] == 0
    p = 1 / (1 + np.exp(-((np.c_[dist, odd] - mean) / scale @ w + b)))
    assert ((p > 0.5) == (y > 0)).mean() > 0.9


def test_image_statistics_tell_colour_and_blank_images():
    grey = np.repeat(np.linspace(0, 255, 100 * 80).reshape(100, 80, 1), 3, 2).astype(np.uint8)
    colour = np.random.default_rng(3).integers(0, 256, (50, 70, 3), dtype=np.uint8)
    black = np.zeros((30, 30, 3), np.uint8)
    s_grey, s_colour, s_black = (image_statistics(x) for x in (grey, colour, black))
    assert s_grey.shape == (len(STAT_NAMES),) and s_grey.dtype == np.float32
    chroma = STAT_NAMES.index("chroma_mean")
    assert s_grey[chroma] == 0 and s_colour[chroma] > 0.3
    assert s_black[STAT_NAMES.index("dark_frac")] == 1 and s_black[STAT_NAMES.index("grey_std")] == 0


def test_images_of_at_most_two_colours_are_told_apart():
    rng = np.random.default_rng(5)
    assert at_most_two_colours(np.zeros((40, 50, 3), np.uint8))
    assert at_most_two_colours(np.full((40, 50, 3), (200, 10, 10), np.uint8))
    mask = (rng.random((300, 300)) > 0.999).astype(np.uint8)  # a sparse binary mask, 0/1
    assert at_most_two_colours(np.repeat(mask[..., None], 3, 2))
    three = np.zeros((300, 300, 3), np.uint8)
    three[5, 7], three[250, 3] = 1, 2  # a third value the subsample does not see
    assert not at_most_two_colours(three)
    assert not at_most_two_colours(rng.integers(0, 256, (20, 20, 3), dtype=np.uint8))


def _disc(rng, side=80):
    """A grey 'head' on black: a bright rim, darker inside, some blobs."""
    yy, xx = np.mgrid[0:side, 0:side] / side * 2 - 1
    r = (xx / rng.uniform(0.6, 0.8)) ** 2 + (yy / rng.uniform(0.7, 0.9)) ** 2
    img = np.where(r <= 1, 0.8, 0.0) * rng.uniform(0.8, 1.0)
    img[r <= 0.8] = rng.uniform(0.3, 0.5)
    img += rng.normal(0, 0.03, img.shape) * (r <= 1)
    return np.repeat((np.clip(img, 0, 1) * 255).astype(np.uint8)[..., None], 3, 2)


def test_a_gate_fitted_on_synthetic_slices_passes_them_and_refuses_the_rest(tmp_path):
    """The whole path with an untrained backbone: features, Gaussians, regression, calibration,
    save/load, check."""
    import timm
    import torch
    torch.manual_seed(0)
    net = timm.create_model("tf_efficientnet_lite0", pretrained=False, num_classes=4).eval()
    fx = StageFeatures(net, (0.5,) * 3, (0.5,) * 3, stages=3)
    rng = np.random.default_rng(4)
    pos = {d: [_disc(rng) for _ in range(40)] for d in ("one", "two")}
    val = {d: [_disc(rng) for _ in range(30)] for d in ("one", "two")}
    neg = [rng.integers(0, 256, (60, 90, 3), dtype=np.uint8) for _ in range(30)]
    neg += [np.full((64, 64, 3), rng.integers(0, 256, 3), np.uint8) for _ in range(10)]
    feats = {d: extract_features(fx, v, size=64) for d, v in pos.items()}
    names = [g for g in feats["one"] if g != "blank"]
    assert names == ["stage0", "stage1", "stage2", "stats"] and not feats["one"]["blank"].any()
    assert feats["one"]["stage0"].shape == (40, 2 * 16) and feats["one"]["stats"].shape == (40, len(STAT_NAMES))
    groups = {g: GaussianGroup.fit([feats[d][g][:20] for d in feats], k=8) for g in names}
    model = GateModel(groups, np.zeros(len(names)), 0.0, np.zeros(len(names)), np.ones(len(names)), 0.0, ["one", "two"],
                      {"input_size": 64, "stages": 3})
    x_pos = np.concatenate([model.log_distances({g: feats[d][g][20:] for g in names}) for d in feats])
    x_neg = model.log_distances(extract_features(fx, neg, size=64))
    model.weights, model.bias, model.x_mean, model.x_scale = fit_logistic(
        np.r_[x_pos, x_neg], np.r_[np.ones(len(x_pos)), np.zeros(len(x_neg))])
    model.threshold = calibrate_threshold({d: model.score(extract_features(fx, v, size=64)) for d, v in val.items()}, 0.05)
    model.save(tmp_path)
    assert (tmp_path / GATE_FILE).is_file() and (tmp_path / GATE_CARD).is_file()
    loaded = GateModel.load(tmp_path / GATE_FILE)
    gate = ScopeGate(fx, loaded, size=64)
    probe = [_disc(rng) for _ in range(3)]
    np.testing.assert_allclose(gate.scores(probe), model.score(extract_features(fx, probe, size=64)), rtol=1e-5)
    outside = [rng.integers(0, 256, (70, 50, 3), dtype=np.uint8), np.full((40, 40, 3), (200, 30, 30), np.uint8)]
    for rgb in outside:
        result = gate.check(rgb)
        assert not result.in_scope and result.score < result.threshold and REFUSAL in result.message
    assert gate.check(outside[1]).blank and gate.check(outside[1]).score == 0  # a flat colour: refused outright
    assert np.mean([gate.check(_disc(rng)).in_scope for _ in range(10)]) >= 0.8


def test_the_training_negative_pool_is_disjoint_from_the_test_set():
    from tumorlens.bench.out_of_scope import out_of_scope_images
    from tumorlens.bench.scope_negatives import near_duplicates, training_negatives
    test, pool = out_of_scope_images(), training_negatives()
    assert len(pool) >= 300 and all(name.startswith("train/") for name, _ in pool)
    assert not {n for n, _ in pool} & {n for n, _ in test}
    assert near_duplicates(pool, test) == []
    for name, rgb in pool:
        assert rgb.dtype == np.uint8 and rgb.ndim == 3 and rgb.shape[2] == 3 and min(rgb.shape[:2]) >= 16, name
    # the test set's solid greys are what their names say (they were once all black)
    levels = {n: int(rgb.max()) for n, rgb in test if n in ("synthetic/black", "synthetic/white", "synthetic/mid_grey")}
    assert levels == {"synthetic/black": 0, "synthetic/white": 255, "synthetic/mid_grey": 128}


# -- slow: the shipped gate on real slices ------------------------------------------------------------
SHIPPED = "tumorlens-efficientnet-lite0-brisc2025"
# validation slices (BRISC: the classifier's validation split; Figshare: --fold 1's validation blocks;
# LGG: the recorded validation split); the first is non-square
IN_SCOPE = (
    "brisc2025/classification_task/train/no_tumor/brisc2025_train_02527_no_ax_t1.jpg",  # 216 wide, 369 high
    "brisc2025/classification_task/train/glioma/brisc2025_train_00003_gl_ax_t1.jpg",
    "brisc2025/classification_task/train/glioma/brisc2025_train_00021_gl_ax_t1.jpg",
    "figshare/images/240.jpg",
    "lgg/kaggle_3m/TCGA_CS_4942_19970222/TCGA_CS_4942_19970222_10.jpg",
    "lgg/kaggle_3m/TCGA_CS_4942_19970222/TCGA_CS_4942_19970222_14.jpg",
)
OUT_OF_SCOPE = ("skimage/astronaut.png", "skimage/ihc.png", "skimage/text.png", "skimage/phantom.png",
                "matplotlib/grace_hopper.jpg", "pydicom/CT_small.dcm", "synthetic/black", "synthetic/uniform_noise")


@pytest.fixture(scope="module")
def shipped_gate():
    from tumorlens.paths import MODELS_DIR
    if not (MODELS_DIR / SHIPPED / GATE_FILE).is_file():
        pytest.fail(f"{SHIPPED}/{GATE_FILE} is missing: python -m tumorlens.bench.scope_gate fit")
    return ScopeGate.from_pretrained(MODELS_DIR / SHIPPED)


def test_the_shipped_gate_passes_real_validation_slices(data_home, shipped_gate):
    from tumorlens.decode import decode_image
    for rel in IN_SCOPE:
        rgb = decode_image(data_home / rel)
        result = shipped_gate.check(rgb)
        assert result.in_scope, (rel, result)
    assert rgb.shape[2] == 3 and decode_image(data_home / IN_SCOPE[0]).shape[:2] == (369, 216)  # non-square: 369 rows, 216 columns
    lgg = decode_image(data_home / IN_SCOPE[-1])
    assert np.abs(lgg[..., 0].astype(int) - lgg[..., 1]).mean() > 5  # a real 3-channel LGG slice
    assert shipped_gate.check(lgg).nearest == "lgg"


@pytest.mark.slow
def test_the_shipped_gate_refuses_held_out_out_of_scope_images(shipped_gate):
    from tumorlens.bench.out_of_scope import out_of_scope_images
    images = dict(out_of_scope_images())
    for name in OUT_OF_SCOPE:
        result = shipped_gate.check(images[name])
        assert not result.in_scope, (name, result)
        assert result.message.startswith(REFUSAL)
