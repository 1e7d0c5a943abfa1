"""`python -m tumorlens.data build`: a Parquet build carries the image and mask bytes (it still loads
with the source folder gone), and the card pushed after `push_to_hub` keeps the `configs:` and
`dataset_info:` metadata that `push_to_hub` wrote (the Hub calls are patched: nothing goes online)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import datasets
import httpx
import numpy as np
import pytest
import yaml
from huggingface_hub import DatasetCard
from huggingface_hub.errors import RemoteEntryNotFoundError
from PIL import Image

from tumorlens.data import brisc2025, cards, figshare
from tumorlens.data.__main__ import build
from tumorlens.data.export import write_parquet
from tumorlens.errors import ConfigError, DataError

# what Dataset.push_to_hub writes into the repo's README (the Hub reads splits and features from it)
HUB_YAML = {
    "configs": [{"config_name": "default", "data_files": [{"split": "train", "path": "data/train-*"}]}],
    "dataset_info": {"features": [{"name": "image", "dtype": "image"}, {"name": "mask", "dtype": "image"}],
                     "splits": [{"name": "train", "num_bytes": 1234, "num_examples": 3}],
                     "download_size": 1234, "dataset_size": 1234},
}


def _pixels(path: Path) -> np.ndarray:
    with Image.open(path) as img:
        return np.asarray(img)


def _load_parquet(out: Path, splits, cache: Path) -> datasets.DatasetDict:
    return datasets.load_dataset("parquet", data_files={s: str(out / f"{s}.parquet") for s in splits},
                                 cache_dir=str(cache))


# ------------------------------------------------------------------------------------------ Parquet


def test_parquet_build_stands_alone(make_brisc_tree, tmp_path):
    """BRISC segmentation+no_tumor (file-backed masks and in-memory empty ones) from a copied subset."""
    tree = make_brisc_tree(per_class=2)
    expected, source_bytes = {}, {}
    for split in brisc2025.SPLITS:
        files = [(tree.seg_image(split, s), tree.seg_mask(split, s)) for s in tree.seg_stems[split]]
        expected[split] = {img.name: (_pixels(img), _pixels(mask)) for img, mask in files}
        source_bytes[split] = sum(p.stat().st_size for pair in files for p in pair)
        for name in tree.cls_files[split]["no_tumor"]:
            path = tree.cls_path(split, name)
            expected[split][name] = (_pixels(path), None)
            source_bytes[split] += path.stat().st_size
    out = tmp_path / "built"
    build("brisc2025", str(tree.root), out, task="segmentation+no_tumor", fmt="parquet", check="full")

    for split in brisc2025.SPLITS:
        data = (out / f"{split}.parquet").read_bytes()
        assert len(data) >= 0.9 * source_bytes[split]  # the bytes are in the file, not just their paths
        assert str(tree.root).encode() not in data  # nor any absolute source path
    assert not [p.name for p in out.iterdir() if p.name.startswith(".")]  # the embedding scratch is gone

    shutil.rmtree(tree.root)
    dsd = _load_parquet(out, brisc2025.SPLITS, tmp_path / "cache")
    for split in brisc2025.SPLITS:
        ds = dsd[split]
        assert ds.features == brisc2025.SEGMENTATION_FEATURES
        assert sorted(ds["file_name"]) == sorted(expected[split])
        for row in ds:
            image, mask = expected[split][row["file_name"]]
            assert np.array_equal(np.asarray(row["image"]), image)
            if mask is None:  # a no_tumor slice: an all-zero mask of the image's size
                assert np.asarray(row["mask"]).shape == image.shape[:2] and not np.asarray(row["mask"]).any()
            else:
                assert np.array_equal(np.asarray(row["mask"]), mask)


def test_cli_build_parquet_stands_alone(make_figshare_tree, tmp_path):
    tree = make_figshare_tree(n_per_label=1)
    expected = {i: (_pixels(tree.image(i)), _pixels(tree.mask(i))) for i in (1, 2, 3)}
    out = tmp_path / "built"
    env = {k: v for k, v in os.environ.items() if not k.startswith("TUMORLENS_")}
    env.update(HF_DATASETS_OFFLINE="1", HF_HUB_OFFLINE="1")
    proc = subprocess.run([sys.executable, "-m", "tumorlens.data", "build", "figshare", "--root", str(tree.root),
                           "--out", str(out), "--format", "parquet"],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "train.parquet"]
    shutil.rmtree(tree.root)
    ds = datasets.Dataset.from_parquet(str(out / "train.parquet"), cache_dir=str(tmp_path / "cache"))
    assert ds.features == figshare.FEATURES
    assert list(ds["id"]) == [1, 2, 3]
    for row in ds:
        image, mask = expected[row["id"]]
        assert np.array_equal(np.asarray(row["image"]), image)
        assert np.array_equal(np.asarray(row["mask"]), mask)


def test_write_parquet_missing_file_names_it(tmp_path):
    gone = tmp_path / "gone.png"
    ds = datasets.Dataset.from_dict({"image": [str(gone)]}, features=datasets.Features({"image": datasets.Image()}))
    with pytest.raises(DataError, match="gone.png"):
        write_parquet(ds, tmp_path / "out" / "train.parquet")


def test_build_unknown_format(tmp_path):
    with pytest.raises(ConfigError, match="csv"):
        build("figshare", str(tmp_path), tmp_path / "out", fmt="csv")


# ------------------------------------------------------------------------------------------ the card


def _hub_card(tags=("user-tag",), text="\nold text\n") -> DatasetCard:
    data = {"license": "mit", "tags": list(tags), **HUB_YAML}
    return DatasetCard(f"---\n{yaml.safe_dump(data, sort_keys=False)}---\n{text}")


def _ours() -> DatasetCard:
    return DatasetCard("---\nlicense: cc-by-4.0\ntags:\n- medical\n- tumorlens\npretty_name: Ours\n---\n# Ours\n")


def _yaml(card: DatasetCard) -> dict:
    return yaml.safe_load(card.content.split("---")[1])


def test_merge_card_keeps_hub_metadata():
    hub = _hub_card()
    merged = cards.merge_card(hub, _ours())
    meta = _yaml(merged)
    assert meta["configs"] == HUB_YAML["configs"] and meta["dataset_info"] == HUB_YAML["dataset_info"]
    assert meta["license"] == "cc-by-4.0" and meta["pretty_name"] == "Ours"
    assert meta["tags"] == ["user-tag", "medical", "tumorlens"]  # the owner's tags stay, ours are added once
    assert merged.text == "# Ours\n" and "old text" not in merged.content
    assert _yaml(hub)["license"] == "mit"  # the loaded card itself is untouched


@pytest.fixture
def fake_hub(monkeypatch):
    """Patches the Hub calls; returns the log: ('dataset', repo) / ('load', repo) / ('card', repo, content)."""
    log: list[tuple] = []
    readme: dict[str, DatasetCard | None] = {"card": _hub_card()}

    def push_dataset(self, repo_id, **kwargs):
        log.append(("dataset", repo_id))

    def load(cls, repo_id, repo_type=None, token=None, **kwargs):
        log.append(("load", repo_id, repo_type))
        if readme["card"] is None:
            raise RemoteEntryNotFoundError("404", response=httpx.Response(404, request=httpx.Request("GET", "https://hub")))
        return readme["card"]

    def push_card(self, repo_id, token=None, repo_type=None, **kwargs):
        log.append(("card", repo_id, repo_type, self.content))

    monkeypatch.setattr(datasets.DatasetDict, "push_to_hub", push_dataset)
    monkeypatch.setattr(DatasetCard, "load", classmethod(load))
    monkeypatch.setattr(DatasetCard, "push_to_hub", push_card)
    return log, readme


def test_build_push_merges_card_into_push_to_hub_readme(make_figshare_tree, tmp_path, fake_hub):
    log, _ = fake_hub
    tree = make_figshare_tree(n_per_label=1)
    build("figshare", str(tree.root), tmp_path / "out", fmt="parquet", check="header", push_to_hub="user/name")
    assert [e[0] for e in log] == ["dataset", "load", "card"]  # the card comes after the data, read back first
    assert log[1][1:] == ("user/name", "dataset") and log[2][1:3] == ("user/name", "dataset")
    pushed = DatasetCard(log[2][3])
    meta = _yaml(pushed)
    assert meta["configs"] == HUB_YAML["configs"] and meta["dataset_info"] == HUB_YAML["dataset_info"]
    assert meta["license"] == "cc-by-4.0" and "user-tag" in meta["tags"] and "tumorlens" in meta["tags"]
    assert "10.6084/m9.figshare.1512427" in pushed.text and "| train | 3 |" in pushed.text


def test_push_card_without_readme_pushes_ours(fake_hub):
    log, readme = fake_hub
    readme["card"] = None
    pushed = cards.push_dataset_card(_ours(), "user/name")
    assert [e[0] for e in log] == ["load", "card"] and pushed.content == _ours().content
