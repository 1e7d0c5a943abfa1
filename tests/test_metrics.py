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
