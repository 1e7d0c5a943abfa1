"""`tumorlens predict` in batches and across processes gives what one input at a time gives.

- Stand-in pipeline (tests/test_scan_analysis.py), no data: batches of single slices around a volume and
  a bad file, rows in input order, the same CSV and masks as `batch_size=1`; a batch whose model call
  fails is redone one input at a time; output names are decided from the whole input list.
- Shipped models on real BRISC 2025 test slices (slow): batched and one-at-a-time give the same rows and
  mask files, with a bad file and an out-of-scope image among them; `torchrun --nproc_per_node 2` gives
  the same predictions.csv, byte for byte, and the same mask files as one process."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from _tiny_models import REPO
from test_scan_analysis import phantom, phantom_volume, stand_in_pipeline, write_phantom_nifti
from tumorlens import predict_batch, scan_analysis
from tumorlens.errors import DataError
from tumorlens.predict import predict
from tumorlens.predict_batch import plan

SEGMENTER = REPO / "models" / "tumorlens-unet-mobilenetv2-brisc2025"
CLASSIFIER = REPO / "models" / "tumorlens-efficientnet-lite0-brisc2025"
PROB_TOLERANCE = 1e-5


def read_csv(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames), list(reader)


def assert_same_rows(got: list[dict], want: list[dict]) -> None:
    assert [r["file"] for r in got] == [r["file"] for r in want]
    for g, w in zip(got, want):
        for key in w:
            if key.startswith("prob_") and w[key] != "":
                assert float(g[key]) == pytest.approx(float(w[key]), abs=PROB_TOLERANCE), (w["file"], key)
            else:
                assert g[key] == w[key], (w["file"], key, g[key], w[key])


def output_files(out: Path) -> dict[str, bytes]:
    """Every output file below `out` but the CSV: relative name -> bytes (mask PNGs are deterministic)."""
    return {str(p.relative_to(out)): p.read_bytes() for p in sorted(out.rglob("*"))
            if p.is_file() and p.name != "predictions.csv"}


# -- stand-in pipeline, no data ------------------------------------------------------------------------
def stand_in_inputs(folder: Path) -> Path:
    """Single slices (two named alike in different folders), a NIfTI volume among them and a bad file."""
    (folder / "a").mkdir(parents=True)
    (folder / "b").mkdir()
    for i, r in enumerate((0, 5, 9, 3)):
        Image.fromarray(phantom(tumor=(40, 50, r) if r else None)).save(folder / "a" / f"s{i}.png")
    Image.fromarray(phantom(tumor=(30, 40, 6))).save(folder / "a" / "same.png")
    Image.fromarray(phantom(tumor=(50, 60, 7))).save(folder / "b" / "same.png")
    write_phantom_nifti(folder / "a" / "t_volume.nii.gz", phantom_volume((0, 4, 8)))
    (folder / "b" / "broken.png").write_bytes(b"\x89PNG not really")
    for i, r in enumerate((2, 8)):
        Image.fromarray(phantom((64, 72), (30, 30, r))).save(folder / "b" / f"z{i}.png")
    return folder


def test_batches_give_the_rows_and_masks_of_one_at_a_time(tmp_path):
    inputs = stand_in_inputs(tmp_path / "in")
    one, many = stand_in_pipeline(), stand_in_pipeline()
    rows_one = predict([str(inputs)], tmp_path / "one", one, pixel_spacing_mm=0.5, batch_size=1)
    rows_many = predict([str(inputs)], tmp_path / "many", many, pixel_spacing_mm=0.5, batch_size=3)
    assert rows_many == rows_one
    assert (tmp_path / "many" / "predictions.csv").read_bytes() == (tmp_path / "one" / "predictions.csv").read_bytes()
    assert output_files(tmp_path / "many") == output_files(tmp_path / "one")
    # the slices went through the segmenter three at a time (the volume whole, in its own calls)
    assert one.segmenter.batches.count(1) >= 8 and 3 in many.segmenter.batches
    by_name = {Path(r["file"]).relative_to(inputs).as_posix(): r for r in rows_many}
    assert list(by_name) == ["a/s0.png", "a/s1.png", "a/s2.png", "a/s3.png", "a/same.png", "a/t_volume.nii.gz",
                             "b/broken.png", "b/same.png", "b/z0.png", "b/z1.png"]  # input order
    assert by_name["b/broken.png"]["status"].startswith("error:")
    assert by_name["a/t_volume.nii.gz"]["slices"] == 3 and by_name["a/t_volume.nii.gz"]["mask_file"] == "t_volume_masks/"
    assert (by_name["a/same.png"]["mask_file"], by_name["b/same.png"]["mask_file"]) == ("same_mask.png", "same_2_mask.png")


def test_a_failed_batch_is_redone_one_input_at_a_time(tmp_path, monkeypatch):
    inputs = stand_in_inputs(tmp_path / "in")
    want = predict([str(inputs)], tmp_path / "one", stand_in_pipeline(), batch_size=1)

    def broken(*args, **kwargs):
        raise DataError(None, "the batch could not be analyzed")
    monkeypatch.setattr(predict_batch, "analyze_slices", broken)
    assert predict([str(inputs)], tmp_path / "many", stand_in_pipeline(), batch_size=4) == want


def test_little_is_decoded_ahead_when_volumes_are_large(tmp_path, monkeypatch):
    inputs = stand_in_inputs(tmp_path / "in")
    want = predict([str(inputs)], tmp_path / "one", stand_in_pipeline(), batch_size=1)
    monkeypatch.setattr(predict_batch, "PREFETCH_BYTES", 1)  # one decoded input ahead at a time
    assert predict([str(inputs)], tmp_path / "many", stand_in_pipeline(), batch_size=16) == want


def test_output_names_come_from_the_whole_input_list():
    jobs = plan([Path("x/a.png"), Path("y/A.png"), Path("z/a.jpg"), Path("b.png")])
    assert [j.stem for j in jobs] == ["a", "A_2", "a_3", "b"] and [j.index for j in jobs] == [0, 1, 2, 3]


def test_analyze_slices_matches_analyze_scan_and_keeps_per_scan_errors():
    from tumorlens.medical_io import Scan
    pipeline = stand_in_pipeline()
    scans = [Scan("image", [phantom(tumor=(40, 50, r))], source=f"s{r}.png") for r in (3, 7, 11)]
    bad = Scan("image", [phantom()], source="bad.png")
    got = scan_analysis.analyze_slices(pipeline, scans + [bad], spacing=[0.5, 0.5, None, -1.0], batch_size=2)
    assert isinstance(got[3], DataError)
    for scan, result, spacing in zip(scans, got, (0.5, 0.5, None)):
        want = scan_analysis.analyze_scan(pipeline, scan, spacing=spacing)
        assert np.array_equal(result.segmentation.mask, want.segmentation.mask)
        assert result.analysis.class_probabilities == want.analysis.class_probabilities
        assert (result.index, result.pixel_spacing_mm, result.spacing_source) == (want.index, want.pixel_spacing_mm,
                                                                                  want.spacing_source)
    with pytest.raises(ValueError, match="volume"):
        scan_analysis.analyze_slices(pipeline, [Scan("nifti", [phantom(), phantom()])])


def test_the_speed_report_says_the_ratio_and_a_busy_machine():
    from tumorlens.bench.predict_speed import render_markdown
    rows = [{"run": "(a) models alone, batch 16", "slices": 16, "seconds": 2.0, "all_seconds": [2.0, 2.5],
             "slices_per_s": 8.0},
            {"run": "(b) predict, batch 16", "slices": 16, "seconds": 2.5, "all_seconds": [2.5, 3.0], "slices_per_s": 6.4}]
    machine = {"hardware": {"cpu": "Some CPU"}, "cores": 2, "load_average_before": [1.5, 1, 1],
               "load_average_after": [1.4, 1, 1], "another_heavy_process": True,
               "busy_processes_before": [{"command": "python train.py", "cpu_share": 1.0}]}
    text = render_markdown({"command": "x", "date": "d", "machine": machine, "torch_threads": 2, "startup_s": 1.0,
                            "runtimes": {"segmenter": "onnx/fp32", "classifier": "onnx/fp32"}, "n": 16,
                            "statuses": {"ok": 16}, "rows": rows, "ratio": 0.8, "goal_ratio": 0.8, "met": True,
                            "old_csv_equal": None})
    assert "busy machine" in text and "**0.80**" in text and "met" in text and "| 2.50 (2.50, 3.00) | 6.40 | 80% |" in text


# -- shipped models, real slices (slow) ----------------------------------------------------------------
def real_inputs(data_home: Path, folder: Path, n: int = 10) -> Path:
    """`n` BRISC 2025 test slices spread over the split (classes, planes and sizes vary), a no-tumor one, a
    bad file and a colour gradient (a photo-like image the scope gate refuses)."""
    images = sorted((data_home / "brisc2025" / "segmentation_task" / "test" / "images").glob("*.jpg"))
    folder.mkdir(parents=True)
    for path in images[:: max(1, len(images) // n)][:n]:
        shutil.copyfile(path, folder / path.name)
    healthy = sorted((data_home / "brisc2025" / "classification_task" / "test" / "no_tumor").glob("*.jpg"))[0]
    shutil.copyfile(healthy, folder / healthy.name)
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    y, x = np.mgrid[:300, :400]
    gradient = np.stack([x * 255 // 399, y * 255 // 299, 255 - x * 255 // 399], axis=-1).astype(np.uint8)
    Image.fromarray(gradient).save(folder / "colours.png")
    return folder


@pytest.fixture(scope="module")
def shipped():
    from tumorlens.inference import Pipeline
    from tumorlens.scope_gate import load_gate
    return Pipeline.from_pretrained(str(SEGMENTER), str(CLASSIFIER)), load_gate(str(CLASSIFIER))


def test_shipped_models_batched_equal_one_at_a_time(data_home, tmp_path, shipped):
    pipeline, gate = shipped
    assert gate is not None
    inputs = real_inputs(data_home, tmp_path / "in")
    runs = {}
    for batch in (1, 4):
        out = tmp_path / f"batch{batch}"
        predict([str(inputs)], out, pipeline, scope_gate=gate, batch_size=batch)
        runs[batch] = (read_csv(out / "predictions.csv"), output_files(out))
    (header_one, rows_one), files_one = runs[1]
    (header_many, rows_many), files_many = runs[4]
    assert header_many == header_one
    assert_same_rows(rows_many, rows_one)
    assert files_many == files_one  # the same masks, byte for byte
    status = {Path(r["file"]).name: r["status"] for r in rows_one}
    assert status.pop("broken.jpg").startswith("error:") and status.pop("colours.png") == "refused"
    assert set(status.values()) == {"ok"} and len(status) == 11
    assert any(r["tumor_found"] == "True" for r in rows_one) and any(r["predicted_class"] for r in rows_one)


def test_two_processes_write_the_csv_of_one(data_home, tmp_path):
    """torchrun --nproc_per_node 2 splits the inputs and merges one CSV: byte-identical to one process's,
    with the same output names (two inputs named alike land on different processes)."""
    images = sorted((data_home / "brisc2025" / "segmentation_task" / "test" / "images").glob("*.jpg"))[::150][:5]
    inputs = tmp_path / "in"
    for sub, chosen in (("a", images[:3]), ("b", images[3:])):
        (inputs / sub).mkdir(parents=True)
        for path in chosen:
            shutil.copyfile(path, inputs / sub / path.name)
    shutil.copyfile(images[0], inputs / "b" / images[0].name)  # the same name in a/ and b/: two stems
    # no OMP_NUM_THREADS: one process runs on all cores, as the two processes' runtime choice assumes
    env = {**{k: v for k, v in os.environ.items() if k != "OMP_NUM_THREADS"}, "HF_HUB_OFFLINE": "1",
           "PYTHONPATH": str(REPO)}
    common = ["predict", str(inputs), "--seg-model", str(SEGMENTER), "--cls-model", str(CLASSIFIER)]
    one = subprocess.run([sys.executable, "-m", "tumorlens", *common, "--out", str(tmp_path / "one")],
                         capture_output=True, text=True, timeout=900, env=env, cwd=REPO)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                          "-m", "tumorlens", *common, "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, timeout=900, env=env, cwd=REPO)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "process 1 of 2: inputs 1-3 of 6" in two.stderr and "process 2 of 2: inputs 4-6 of 6" in two.stderr
    assert two.stdout.count("6 of 6 files predicted") == 1  # the main process says it, once
    csv_one, csv_two = (tmp_path / "one" / "predictions.csv").read_bytes(), (tmp_path / "two" / "predictions.csv").read_bytes()
    assert csv_two == csv_one
    assert output_files(tmp_path / "two") == output_files(tmp_path / "one")  # no part files left behind either
    header, rows = read_csv(tmp_path / "one" / "predictions.csv")
    assert len(rows) == 6 and {r["status"] for r in rows} == {"ok"}
    assert sorted(r["mask_file"] for r in rows if Path(r["file"]).name == images[0].name) == [
        f"{images[0].stem}_2_mask.png", f"{images[0].stem}_mask.png"]
