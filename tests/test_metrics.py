"""The three Dice definitions and the size groups, on cases small enough to compute by hand."""

import pytest

from tumorlens.metrics import DICE_DEFINITIONS, dice_definitions, size_groups


def test_three_dice_definitions_by_hand():
    # tumor slices as (overlap, predicted px, true px): Dice 2*8/(10+10)=0.8 and 2*0/(0+4)=0
    tumor = [(8, 10, 10), (0, 0, 4)]
    healthy = [0, 0, 6]  # two healthy slices left empty (Dice 1 each), one given 6 px (Dice 0)
    d = dice_definitions(tumor, healthy)
    assert list(d) == list(DICE_DEFINITIONS)
    assert d["per_tumor_slice_mean"]["value"] == pytest.approx(0.4) and d["per_tumor_slice_mean"]["n_slices"] == 2
    assert d["all_slices_mean"]["value"] == pytest.approx((0.8 + 0 + 1 + 1 + 0) / 5)
    assert d["all_slices_mean"]["n_slices"] == 5
    # pooled: 2*(8+0) / ((10+0+6) + (10+4)) = 16/30
    assert d["pooled"]["value"] == pytest.approx(16 / 30)
    assert all(v["definition"] for v in d.values())


def test_dice_definitions_without_healthy_slices_agree_on_the_slice_means():
    d = dice_definitions([(3, 4, 4), (1, 2, 2)], [])
    assert d["all_slices_mean"]["value"] == d["per_tumor_slice_mean"]["value"] == pytest.approx((0.75 + 0.5) / 2)
    assert d["pooled"]["value"] == pytest.approx(8 / 12)
    assert dice_definitions([], [])["per_tumor_slice_mean"]["value"] is None


def test_size_groups_split_by_tertiles():
    names, rule = size_groups([10, 20, 30, 40, 50, 60])
    assert names == ["small", "small", "medium", "medium", "large", "large"]
    assert rule["small"].startswith("<= ") and rule["large"].startswith("> ")
    assert size_groups([]) == ([], {})


def test_benchmark_report_names_each_definition_and_size_group():
    from tumorlens.bench.report import _dice_definition_lines
    names, rule = size_groups([10, 20, 30])
    result = {"dice_definitions": dice_definitions([(8, 10, 10)], [0, 6]),
              "by_size": {"groups": rule, **{k: {"n": 1, "dice": {"mean": 0.5}} for k in names}}}
    text = "\n".join(_dice_definition_lines(result))
    assert "per tumor slice mean 0.8000 (n=1)" in text and "all slices mean 0.6000 (n=3)" in text
    assert "pooled 0.6154 (n=3)" in text  # 16 / (16 + 10)
    assert "small (<= 17 px) 0.5000 (n=1)" in text and "large" in text


def test_calibration_report_by_hand():
    import numpy as np

    from tumorlens.metrics import calibration_report
    probs = np.array([[0.9, 0.1], [0.6, 0.4], [0.2, 0.8]])
    labels = [0, 1, 1]
    r = calibration_report(probs, labels, bins=10)
    # bins: 0.9 -> (0.8, 0.9] right; 0.6 -> (0.5, 0.6]; 0.8 -> (0.7, 0.8]; each alone: |conf - correct| / 3
    assert r["ece"] == pytest.approx((abs(0.9 - 1) + abs(0.6 - 0) + abs(0.8 - 1)) / 3)
    assert r["brier"] == pytest.approx(((0.1 ** 2 + 0.1 ** 2) + (0.6 ** 2 + 0.6 ** 2) + (0.2 ** 2 + 0.2 ** 2)) / 3)
    assert r["nll"] == pytest.approx(-(np.log(0.9) + np.log(0.4) + np.log(0.8)) / 3)


def test_temperature_scaling_recovers_a_known_temperature_and_keeps_the_argmax():
    import numpy as np

    from tumorlens.postprocess import choose_calibration, fit_temperature
    rng = np.random.default_rng(0)
    true_logits = rng.normal(0, 2, (4000, 4))
    labels = np.array([rng.choice(4, p=np.exp(z) / np.exp(z).sum()) for z in true_logits])
    overconfident = true_logits * 3.0  # a model 3x too sure: the fitted temperature undoes it
    assert fit_temperature(overconfident, labels) == pytest.approx(3.0, rel=0.1)
    chosen = choose_calibration(overconfident, labels)
    assert chosen["calibration_val"]["after"]["ece"] < chosen["calibration_val"]["before"]["ece"]
    assert chosen["calibration_val"]["after"]["nll"] < chosen["calibration_val"]["before"]["nll"]
    t = chosen["temperature"]
    assert np.array_equal((overconfident / t).argmax(1), overconfident.argmax(1))
