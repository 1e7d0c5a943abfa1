"""Duplicate audit on small real subsets: planted exact and near copies are found, distinct real
slices (LGG patients, BRISC images) give no pairs, and BRISC's byte-identical train/test files
come out exact. Fast: about 70 real images are fingerprinted."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import time
from collections import defaultdict
from pathlib import Path

import datasets
import numpy as np
import pytest
from PIL import Image

from tumorlens import audit
from tumorlens.data import data_home
from tumorlens.errors import DataError

DATA = data_home()
BRISC = DATA / "brisc2025" / "classification_task"
LGG = DATA / "lgg" / "kaggle_3m"


def brisc_sample(n: int = 30) -> list[Path]:
    """n BRISC train images spread evenly over the sorted list (all four classes)."""
    files = sorted((BRISC / "train").glob("*/*.jpg"))
    return [files[k] for k in np.linspace(0, len(files) - 1, n).round().astype(int)]


def lgg_sample(n: int = 30) -> list[Path]:
    """The middle slice of each of the first n LGG patients: n different patients."""
    out = []
    for case in sorted(p for p in LGG.iterdir() if p.is_dir() and p.name.startswith("TCGA_"))[:n]:
        slices = sorted((p for p in case.glob("*.jpg")), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
        out.append(slices[len(slices) // 2])
    return out


@pytest.fixture(scope="module")
def real(data_home):
    brisc, lgg = brisc_sample(), lgg_sample()
    return {"brisc": brisc, "lgg": lgg,
            "brisc_fps": audit.fingerprints(brisc, progress=False),
            "lgg_fps": audit.fingerprints(lgg, progress=False)}


def _png(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _jpeg(img: Image.Image, quality: int) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


COPIES = {  # name -> (make the copy's file bytes from the decoded original, expected kind)
    "png_resave": (lambda im: _png(im), "exact"),
    "jpeg_q70": (lambda im: _jpeg(im, 70), "near"),
    "resize_90": (lambda im: _png(im.resize((round(im.width * 0.9), round(im.height * 0.9)), Image.BILINEAR)), "near"),
    "brightness_+8": (lambda im: _png(Image.fromarray(np.clip(np.asarray(im).astype(np.int16) + 8, 0, 255)
                                                      .astype(np.uint8))), "near"),
}


def test_distinct_real_slices_give_no_pairs(real):
    fps = real["lgg_fps"] + real["brisc_fps"]
    assert len(fps) == 60 and not any(f.blank for f in fps)
    assert len({p.parent.name for p in real["lgg"]}) == 30  # 30 different patients
    assert audit.find_duplicates(fps) == []
    assert audit.find_duplicates(real["lgg_fps"], real["brisc_fps"]) == []
    # pHash alone would not do: distinct MRI slices often sit within a few bits of each other
    i, j, d, c = audit.pair_stats(fps)
    assert d.min() <= audit.MAX_HAMMING and c.max() < audit.MIN_CORRELATION


def test_planted_exact_and_near_copies_are_found(real, tmp_path):
    originals = real["brisc"][::8] + real["lgg"][::8]  # 4 BRISC + 4 LGG
    orig_fps = audit.fingerprints(originals, progress=False)
    copy_paths, expected = [], {}
    for i, path in enumerate(originals):
        im = Image.open(path)
        im.load()
        for name, (make, kind) in COPIES.items():
            out = tmp_path / f"{i}_{name}.{'jpg' if 'jpeg' in name else 'png'}"
            out.write_bytes(make(im))
            expected[(i, len(copy_paths))] = kind
            copy_paths.append(out)
    copy_fps = audit.fingerprints(copy_paths, progress=False)
    pairs = audit.find_duplicates(orig_fps, copy_fps)
    found = {(p["index_a"], p["index_b"]): p["kind"] for p in pairs}
    assert found == expected, {k: v for k, v in found.items() ^ expected.items()}
    for p in pairs:
        if p["kind"] == "near":
            assert p["hamming"] <= audit.MAX_HAMMING and p["correlation"] >= audit.MIN_CORRELATION
        else:
            assert p["hamming"] == 0 and p["correlation"] == 1.0
    # exact means same pixels, whatever the file: the PNG holds the JPEG's decoded pixels
    png = [k for k, p in enumerate(copy_paths) if p.name.endswith("png_resave.png")]
    assert all(copy_fps[k].pixel_sha256 == orig_fps[k // len(COPIES)].pixel_sha256 for k in png)
    assert all(copy_fps[k].file_sha256 != orig_fps[k // len(COPIES)].file_sha256 for k in png)

    # within one list: every pair inside an original's family of copies, nothing across families
    family = [i for i in range(len(originals))] + [i for i in range(len(originals)) for _ in COPIES]
    within = audit.find_duplicates(orig_fps + copy_fps)
    assert all(family[p["index_a"]] == family[p["index_b"]] and p["index_a"] < p["index_b"] for p in within)
    per_family = defaultdict(int)
    for p in within:
        per_family[family[p["index_a"]]] += 1
    n = len(COPIES) + 1
    assert dict(per_family) == {i: n * (n - 1) // 2 for i in range(len(originals))}


def test_gray_stored_as_rgb_hashes_like_gray(real):
    gray = Image.open(real["brisc"][0]).convert("L")
    a = audit.fingerprint(_png(gray))
    b = audit.fingerprint(_png(gray.convert("RGB")))
    c = audit.fingerprint(np.asarray(gray))
    assert a.pixel_sha256 == b.pixel_sha256 == c.pixel_sha256 and a.phash == b.phash == c.phash
    assert c.file_sha256 is None and a.file_sha256 != b.file_sha256


@pytest.mark.usefixtures("data_home")
def test_brisc_byte_identical_train_test_pair_is_exact():
    by_hash = defaultdict(list)
    for split in ("train", "test"):
        for path in sorted((BRISC / split).glob("*/*.jpg")):
            by_hash[hashlib.sha256(path.read_bytes()).hexdigest()].append(path)
    cross = [g for g in by_hash.values() if {"train", "test"} <= {p.parts[-3] for p in g}]
    assert len(cross) >= 1  # the README counts 7
    group = cross[0]
    test_img = [p for p in group if p.parts[-3] == "test"][0]
    twins = [p for p in group if p.parts[-3] == "train"]
    train = brisc_sample(20) + twins
    # through the datasets path: an Image column, read with decode=False
    ds = datasets.Dataset.from_dict({"image": [str(p) for p in train]}, features=datasets.Features({"image": datasets.Image()}))
    train_fps = audit.fingerprints(ds, progress=False)
    assert all(f.source == str(p) for f, p in zip(train_fps, train))
    pairs = audit.find_duplicates(train_fps, audit.fingerprints([test_img], progress=False))
    assert {(p["index_a"], p["kind"]) for p in pairs} == {(train.index(t), "exact") for t in twins}
    assert all(p["index_b"] == 0 and p["hamming"] == 0 for p in pairs)


def test_unreadable_images_raise_data_error(tmp_path, real):
    junk = tmp_path / "junk.jpg"
    junk.write_bytes(b"not an image at all")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    for bad in (junk, empty, tmp_path / "missing.png"):
        with pytest.raises(DataError) as err:
            audit.fingerprint(bad)
        assert err.value.path == str(bad)
    with pytest.raises(DataError, match="junk.jpg"):
        audit.fingerprints([real["brisc"][0], junk], progress=False, cache=tmp_path / "cache")
    with pytest.raises(DataError):
        audit.fingerprint(b"\x89PNG\r\n\x1a\n truncated")


def _synthetic(n: int, rng, tag: str = "a") -> list[audit.Fingerprint]:
    """n random fingerprints: distinct pixel hashes, random pHashes and thumbnails."""
    gray = rng.integers(0, 256, size=(n, 32, 32), dtype=np.uint8)
    hashes = rng.integers(0, 2**63, size=n, dtype=np.uint64)
    return [audit.Fingerprint(f"{tag}{k}", int(hashes[k]), gray[k], 32, 32, 50.0) for k in range(n)]


def test_popcount_and_blocked_search_match_brute_force():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 2**63, size=(50, 7), dtype=np.uint64) | np.uint64(2**63) * rng.integers(0, 2, (50, 7)).astype(np.uint64)
    ref = np.vectorize(lambda v: bin(int(v)).count("1"))(x)
    assert (audit.popcount64(x) == ref).all() and (audit.popcount64_lut(x) == ref).all()

    a = _synthetic(700, rng)
    b = _synthetic(600, rng, "b")
    for k in range(0, 600, 7):  # plant near hashes and copies of thumbnails across blocks
        b[k] = audit.Fingerprint(f"near{k}", a[k].phash ^ (1 << (k % 63)) ^ (1 << ((k + 5) % 63)),
                                 a[k].gray32, 32, 32, 50.0)
    b[3] = audit.Fingerprint(a[650].pixel_sha256, a[650].phash, a[650].gray32, 32, 32, 50.0)
    ha, hb = audit._hashes(a), audit._hashes(b)
    full = np.array([[audit.hamming(p, q) for q in hb.tolist()] for p in ha.tolist()])
    i, j, d = audit._candidates(ha, hb, 14, within=False, block=128)
    assert set(zip(i.tolist(), j.tolist(), d.tolist())) == {(p, q, full[p, q]) for p, q in zip(*np.nonzero(full <= 14))}
    pairs = audit.find_duplicates(a, b)
    assert {(p["index_a"], p["index_b"], p["kind"]) for p in pairs} == \
        {(k, k, "near") for k in range(0, 600, 7) if k != 3} | {(650, 3, "exact")}

    fa = a + b
    hw = audit._hashes(fa)
    i, j, d = audit._candidates(hw, hw, 14, within=True, block=256)
    fw = np.array([[audit.hamming(p, q) for q in hw.tolist()] for p in hw.tolist()])
    want = {(p, q) for p, q in zip(*np.nonzero(fw <= 14)) if q > p}
    assert set(zip(i.tolist(), j.tolist())) == want


def test_six_thousand_by_six_thousand_is_fast():
    rng = np.random.default_rng(1)
    fps = _synthetic(6000, rng)
    t = time.perf_counter()
    pairs = audit.find_duplicates(fps, fps)
    elapsed = time.perf_counter() - t
    assert sum(p["kind"] == "exact" for p in pairs) == 6000  # each with itself, nothing else
    assert elapsed < 15, f"6000 x 6000 took {elapsed:.1f} s"
    t = time.perf_counter()
    assert audit.find_duplicates(fps) == []
    assert time.perf_counter() - t < 15


def test_cache_is_reused_and_follows_file_changes(tmp_path, real, monkeypatch):
    files = []
    for k, src in enumerate(real["brisc"][:5]):
        files.append(tmp_path / "imgs" / f"{k}.jpg")
        files[-1].parent.mkdir(exist_ok=True)
        shutil.copy(src, files[-1])
    cache = tmp_path / "cache"
    first = audit.fingerprints(files, cache=cache, progress=False)
    assert list(cache.rglob("*.npz"))

    def boom(*_a, **_k):
        raise AssertionError("cache miss")

    monkeypatch.setattr(audit.fingerprinting, "fingerprint", boom)  # where fingerprints() looks it up
    again = audit.fingerprints(files, cache=cache, progress=False)
    for x, y in zip(first, again):
        assert (x.pixel_sha256, x.file_sha256, x.phash, x.content) == (y.pixel_sha256, y.file_sha256, y.phash, y.content)
        assert np.array_equal(x.thumb, y.thumb)
    monkeypatch.undo()

    shutil.copy(real["brisc"][10], files[0])  # a changed file is fingerprinted again
    os.utime(files[0], ns=(time.time_ns(), time.time_ns() + 10**9))
    changed = audit.fingerprints(files, cache=cache, progress=False)
    assert changed[0].file_sha256 != first[0].file_sha256
    assert [f.file_sha256 for f in changed[1:]] == [f.file_sha256 for f in first[1:]]


def _fake_brisc(root: Path, real) -> dict:
    """A small BRISC classification tree: 2 images per class and split, taken from the real
    sample, plus 2 planted test leaks: a byte copy and a JPEG q70 re-encode of train images."""
    codes = {"glioma": "gl", "meningioma": "me", "no_tumor": "no", "pituitary": "pi"}
    src = iter(real["brisc"])
    n = {"train": 0, "test": 0}
    train_files = []

    def add(split, cls, data: bytes) -> str:
        n[split] += 1
        name = f"brisc2025_{split}_{n[split]:05d}_{codes[cls]}_ax_t1.jpg"
        folder = root / "classification_task" / split / cls
        folder.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(data)
        return name

    for split in ("train", "test"):
        for cls in codes:
            for _ in range(2):
                name = add(split, cls, next(src).read_bytes())
                if split == "train":
                    train_files.append((cls, name))
    cls0, name0 = train_files[0]
    cls1, name1 = train_files[5]
    exact = add("test", cls0, (root / "classification_task" / "train" / cls0 / name0).read_bytes())
    im = Image.open(root / "classification_task" / "train" / cls1 / name1)
    near = add("test", cls1, _jpeg(im.convert("L"), 70))
    return {"exact": exact, "near": near}


def test_brisc_test_leaks_and_audit_cli_on_a_small_tree(tmp_path, real, capsys, monkeypatch):
    data_root = tmp_path / "data"
    planted = _fake_brisc(data_root / "brisc2025", real)
    cache = tmp_path / "cache"
    assert audit.brisc_test_leaks(data_root, cache=cache, progress=False) == {planted["exact"], planted["near"]}
    assert audit.brisc_test_leaks(data_root / "brisc2025", cache=cache, progress=False) == \
        {planted["exact"], planted["near"]}

    out = tmp_path / "out"
    monkeypatch.setenv(audit.CACHE_ENV, str(cache))
    assert audit.main(["--data-root", str(data_root), "--out", str(out), "--datasets", "brisc2025"]) == 0
    report = json.loads((out / "duplicates.json").read_text())
    assert report["thresholds"]["max_hamming"] == audit.MAX_HAMMING
    (cmp,) = report["comparisons"]
    assert (cmp["a"], cmp["b"], cmp["exact_pairs"], cmp["near_pairs"]) == ("brisc2025/train", "brisc2025/test", 1, 1)
    assert {p["b"]: p["kind"] for p in cmp["pairs"]} == {planted["exact"]: "exact", planted["near"]: "near"}
    table = capsys.readouterr().out
    assert "brisc2025/train" in table and "duplicates.json" in table
