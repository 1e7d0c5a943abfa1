"""`tumorlens publish` and the Hub checks before a push: the plan, the access check (token, offline mode,
an unreachable endpoint), one-line failures naming the endpoint, and nothing under models/ changed.

No test reaches the Hub: HfApi is replaced, or the endpoint is a closed loopback port."""

from __future__ import annotations

import hashlib
import json
import socket
from pathlib import Path

import pytest
from huggingface_hub import HfApi, constants
from huggingface_hub.errors import HfHubHTTPError

from tumorlens import hub, publish
from tumorlens.errors import HubError
from tumorlens.hub_code import takes_transformers_keys
from tumorlens.paths import MODELS_DIR
from tumorlens.registry import BRISC_CLASSIFIER, BRISC_SEGMENTER, HUB_OWNER, LGG_SEGMENTER
from tumorlens.space_bundle import SPACE_CONFIG_NAME

try:  # the HTTP client huggingface_hub raises with
    import httpx2 as hub_http
except ImportError:  # pragma: no cover - older huggingface_hub
    import httpx as hub_http

SHIPPED = (BRISC_SEGMENTER, LGG_SEGMENTER, BRISC_CLASSIFIER)
CLOSED_ENDPOINT = "http://127.0.0.1:9"  # the discard port on loopback: nothing listens, the connection is refused
HF_API_CALLS = ("whoami", "create_repo", "upload_folder", "upload_file", "create_commit", "repo_info",
                "list_repo_files", "preupload_lfs_files")


def models_state() -> dict[str, str]:
    """sha256 of every file under models/ (weights, cards, configs)."""
    return {str(p.relative_to(MODELS_DIR)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(MODELS_DIR.rglob("*")) if p.is_file()}


@pytest.fixture
def no_network(monkeypatch):
    """Every Hub call and every socket connection fails the test."""
    def refuse(*args, **kwargs):
        raise AssertionError("a network call was made")

    for name in HF_API_CALLS:
        monkeypatch.setattr(HfApi, name, refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    import datasets
    monkeypatch.setattr(datasets.DatasetDict, "push_to_hub", refuse)


@pytest.fixture
def online(monkeypatch):
    """HF_HUB_OFFLINE off (the test lane runs with it on), as huggingface_hub read it and in the environment."""
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def closed_endpoint(monkeypatch, online):
    """The Hub endpoint is a closed port on loopback (huggingface_hub read $HF_ENDPOINT at import)."""
    monkeypatch.setenv("HF_ENDPOINT", CLOSED_ENDPOINT)
    monkeypatch.setattr(constants, "ENDPOINT", CLOSED_ENDPOINT)
    return CLOSED_ENDPOINT


@pytest.fixture
def no_token(monkeypatch, tmp_path):
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_OIDC_RESOURCE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token-here"))


def assert_one_clean_line(message: str, *names: str) -> None:
    assert "\n" not in message.strip(), message
    assert "Traceback" not in message and 'File "' not in message, message
    for name in names:
        assert name in message, (name, message)


# -- the plan ----------------------------------------------------------------------------------
@pytest.mark.parametrize("owner", [None, "someone"])
def test_dry_run_lists_every_item_sends_nothing_and_changes_no_model_file(owner, no_network, capsys):
    before = models_state()
    argv = ["--dry-run"] + (["--owner", owner] if owner else [])
    assert publish.main(argv) == 0
    out = capsys.readouterr().out
    owner = owner or HUB_OWNER
    for name in SHIPPED:
        line = next(line for line in out.splitlines() if f"-> {owner}/{name} " in line)
        assert f"models/{name}" in line and "(model repo)" in line and "files" in line and "MB" in line
    assert f"-> {owner}/{publish.SPACE_NAME} (space repo)" in out
    from tumorlens.data.registry import dataset_names
    for name in dataset_names():
        assert f"-> {owner}/{name} (dataset repo)" in out
    assert "nothing was sent" in out
    assert models_state() == before


def test_only_the_kinds_named_are_planned(no_network):
    items = publish.plan("someone", models=True, datasets=False, space=False)
    assert [(i.kind, i.repo_id, i.repo_type) for i in items] == [("model", f"someone/{n}", "model") for n in SHIPPED]
    kinds = {i.kind: i.repo_type for i in publish.plan("someone", models=False)}
    assert kinds == {"dataset": "dataset", "space": "space"}


def test_a_bad_owner_is_one_error_line(no_network, capsys):
    assert publish.main(["--owner", "a/b", "--dry-run"]) == 2
    assert_one_clean_line(capsys.readouterr().err, "error:", "a/b")


def test_the_publish_subcommand_is_listed():
    from tumorlens import __main__ as command
    assert command.COMMANDS["publish"][0] == "tumorlens.publish:main"


# -- the access check --------------------------------------------------------------------------
def test_unreachable_endpoint_is_one_line_naming_it(closed_endpoint, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_real_token")
    with pytest.raises(HubError) as err:
        hub.check_push_access("someone/model")
    assert_one_clean_line(str(err.value), closed_endpoint, "someone/model", "cannot connect")
    with pytest.raises(HubError) as err:  # a token given directly goes the same way
        hub.check_push_access(token="hf_another_fake")
    assert_one_clean_line(str(err.value), closed_endpoint)


def test_offline_mode_is_a_clear_line_and_contacts_nothing(monkeypatch, no_network):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(HubError) as err:
        hub.check_push_access("someone/model", token="hf_fake")
    assert_one_clean_line(str(err.value), "HF_HUB_OFFLINE", constants.ENDPOINT)


def test_offline_mode_set_after_import_counts_too(monkeypatch, no_network):
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError, match="HF_HUB_OFFLINE"):
        hub.check_push_access(token="hf_fake")


def test_no_token_is_a_clear_line(online, no_token, no_network):
    with pytest.raises(HubError) as err:
        hub.check_push_access("someone/model")
    assert_one_clean_line(str(err.value), "no Hugging Face token", constants.ENDPOINT, "hf auth login")


def _http_error(status: int) -> HfHubHTTPError:
    url = f"{constants.ENDPOINT}/api/whoami-v2"
    return HfHubHTTPError(f"{status} Client Error for url: {url}\nRequest ID: abc",
                          response=hub_http.Response(status, request=hub_http.Request("GET", url)))


def test_rejected_token_is_a_clear_line(online, monkeypatch):
    def whoami(self, token=None, **kwargs):
        raise _http_error(401)

    monkeypatch.setattr(HfApi, "whoami", whoami)
    with pytest.raises(HubError) as err:
        hub.check_push_access("someone/model", token="hf_revoked")
    assert_one_clean_line(str(err.value), "rejected", "401", constants.ENDPOINT)


def test_the_token_must_reach_the_repo_owner_and_write(online, monkeypatch):
    seen = {"role": "write"}
    monkeypatch.setattr(HfApi, "whoami", lambda self, token=None, **kw: {
        "name": "me", "orgs": [{"name": "my-lab"}], "auth": {"accessToken": {"role": seen["role"]}}})
    assert hub.check_push_access("me/model", token="t") == "me"
    assert hub.check_push_access("my-lab/model", token="t") == "me"
    with pytest.raises(HubError, match="belongs to me"):
        hub.check_push_access("tumorlens/model", token="t")
    seen["role"] = "read"
    with pytest.raises(HubError, match="read-only"):
        hub.check_push_access("me/model", token="t")


def test_a_failed_push_names_endpoint_and_repo_and_keeps_the_folder(closed_endpoint, tmp_path):
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    (folder / "README.md").write_text("card\n")
    with pytest.raises(HubError) as err:
        hub.push_folder(folder, "someone/model", token="hf_fake")
    assert_one_clean_line(str(err.value), closed_endpoint, "someone/model", str(folder), "kept")
    assert sorted(p.name for p in folder.iterdir()) == ["README.md", "config.json"]
    assert (folder / "README.md").read_text() == "card\n"


def test_a_local_error_in_a_push_is_not_dressed_up_as_a_hub_error(monkeypatch, tmp_path):
    def create_repo(self, *args, **kwargs):
        raise KeyError("a bug, not the network")

    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    with pytest.raises(KeyError):
        hub.push_folder(tmp_path, "someone/model", token="t")


# -- training checks the push before it trains -------------------------------------------------
@pytest.mark.parametrize("kind", ["segmenter", "classifier"])
def test_training_with_push_and_no_token_exits_2_before_training(kind, online, no_token, no_network, monkeypatch,
                                                                   tmp_path, capsys):
    from tumorlens.training import cli, recipes

    def trainer(*args, **kwargs):
        raise AssertionError("training started although the push cannot succeed")

    monkeypatch.setattr(recipes, f"train_{kind}", trainer)
    assert cli.main(kind, ["--push-to-hub", "someone/model", "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "no Hugging Face token" in err and constants.ENDPOINT in err
    assert_one_clean_line(err, "someone/model")
    assert not (tmp_path / "run").exists()


def test_training_with_push_and_an_unreachable_hub_exits_2_before_training(closed_endpoint, monkeypatch,
                                                                           tmp_path, capsys):
    from tumorlens.training import cli, recipes

    monkeypatch.setenv("HF_TOKEN", "hf_fake")
    monkeypatch.setattr(recipes, "train_segmenter", lambda *a, **k: pytest.fail("training started"))
    assert cli.main("segmenter", ["--push-to-hub", "someone/model", "--run-dir", str(tmp_path / "run")]) == 2
    assert_one_clean_line(capsys.readouterr().err, "error: ", closed_endpoint)


def test_training_with_push_and_a_good_token_trains(online, monkeypatch, tmp_path, capsys):
    from types import SimpleNamespace

    from tumorlens.training import cli, recipes

    monkeypatch.setattr(HfApi, "whoami", lambda self, token=None, **kw: {"name": "someone"})
    monkeypatch.setenv("HF_TOKEN", "hf_fake")
    reached = []
    monkeypatch.setattr(recipes, "train_segmenter",
                        lambda data, setup, schedule, release, run_dir, **kw: reached.append(release.push_to_hub)
                        or SimpleNamespace(model=tmp_path / "model", run_dir=run_dir))
    assert cli.main("segmenter", ["--push-to-hub", "someone/model", "--run-dir", str(tmp_path / "run")]) == 0
    assert reached == ["someone/model"]


def test_no_finalize_pushes_nothing_so_checks_nothing(no_token, no_network, monkeypatch, tmp_path):
    from types import SimpleNamespace

    from tumorlens.training import cli, recipes

    monkeypatch.setattr(recipes, "train_segmenter",
                        lambda *a, **kw: SimpleNamespace(model=None, run_dir=tmp_path / "run"))
    assert cli.main("segmenter", ["--push-to-hub", "someone/model", "--no-finalize",
                                  "--run-dir", str(tmp_path / "run")]) == 0


# -- publishing --------------------------------------------------------------------------------
@pytest.fixture
def fake_hub(monkeypatch, online):
    """HfApi replaced: whoami answers, create_repo/upload_folder are recorded (with the folder's files)."""
    calls: list[dict] = []

    def whoami(self, token=None, **kwargs):
        calls.append({"call": "whoami"})
        return {"name": "someone", "orgs": [], "auth": {"accessToken": {"role": "write"}}}

    def create_repo(self, repo_id, *, private=False, exist_ok=False, repo_type=None, space_sdk=None, **kwargs):
        calls.append({"call": "create_repo", "repo_id": repo_id, "repo_type": repo_type or "model",
                      "private": private, "space_sdk": space_sdk})

    def upload_folder(self, *, folder_path, repo_id, commit_message=None, repo_type=None, **kwargs):
        folder = Path(folder_path)
        files = {str(p.relative_to(folder)): p for p in folder.rglob("*") if p.is_file()}
        calls.append({"call": "upload_folder", "repo_id": repo_id, "repo_type": repo_type or "model",
                      "files": sorted(files),
                      "readme": files["README.md"].read_text() if "README.md" in files else None,
                      "space_config": json.loads(files[SPACE_CONFIG_NAME].read_text())
                      if SPACE_CONFIG_NAME in files else None})
        return f"https://hub.example/{repo_id}"

    monkeypatch.setattr(HfApi, "whoami", whoami)
    monkeypatch.setattr(HfApi, "create_repo", create_repo)
    monkeypatch.setattr(HfApi, "upload_folder", upload_folder)
    monkeypatch.setenv("HF_TOKEN", "hf_fake")
    return calls


def test_publish_pushes_each_model_to_owner_with_its_card_naming_that_repo(fake_hub, monkeypatch, capsys):
    import tumorlens.data.__main__ as data_cli

    built = []

    def fake_build(name, root, out, *, push_to_hub=None, private=False, task=None, config_name="default",
                   set_default=None, **kwargs):
        built.append((name, push_to_hub, task, config_name, set_default))
        if name == "figshare":  # one item failing is reported and the rest go on
            raise hub_http.ConnectError("[Errno 111] Connection refused")
        return {"train": [1, 2], "test": [3]}

    monkeypatch.setattr(data_cli, "build", fake_build)
    before = models_state()
    assert publish.main(["--owner", "someone"]) == 1  # figshare failed
    out = capsys.readouterr()
    assert models_state() == before  # the shipped cards (and everything else) byte-identical

    assert [c["call"] for c in fake_hub].count("whoami") == 1 and fake_hub[0]["call"] == "whoami"
    uploads = {c["repo_id"]: c for c in fake_hub if c["call"] == "upload_folder"}
    for name in SHIPPED:
        up = uploads[f"someone/{name}"]
        assert up["repo_type"] == "model"
        kind = publish.model_kind(MODELS_DIR / name)
        # everything a stranger needs: the record, the post-processing, the transformers code (which a
        # segmenter with a timm universal encoder cannot carry: tumorlens.hub_code.takes_transformers_keys)
        code = ({"image_processing_tumorlens.py", f"modeling_tumorlens_{kind}.py"}
                if kind == "classifier" or takes_transformers_keys(MODELS_DIR / name) else set())
        assert {"config.json", "model.safetensors", "README.md", "eval.json", "metadata.json", "inference_config.json",
                "preprocessor_config.json", *code} <= set(up["files"])
        readme = up["readme"]
        snippet = (f'from_pretrained("someone/{name}")' if kind == "segmenter"
                   else f'"hf-hub:someone/{name}"')
        assert snippet in readme, name
        assert f"{HUB_OWNER}/{name}" not in readme  # the default owner's repo is not named
        assert readme != (MODELS_DIR / name / "README.md").read_text()
        assert f"pushed  model {name} -> someone/{name}" in out.out

    space = uploads["someone/tumorlens"]
    assert space["repo_type"] == "space"
    assert space["space_config"]["seg_model"] == f"someone/{BRISC_SEGMENTER}"
    assert space["space_config"]["cls_model"] == f"someone/{BRISC_CLASSIFIER}"
    assert f"someone/{LGG_SEGMENTER}" in space["space_config"]["segmenters"].values()
    # no weights and no data, except the committed CC BY 4.0 example slices their README lists
    from tumorlens.examples import committed_examples
    examples = sorted(f"examples/{Path(e.path).name}" for e in committed_examples())
    assert sorted(f for f in space["files"] if f.startswith("examples/") and f != "examples/README.md") == examples
    assert not any(f.endswith((".safetensors", ".png", ".jpg")) for f in space["files"] if not f.startswith("examples/"))
    created = {c["repo_id"]: c for c in fake_hub if c["call"] == "create_repo"}
    assert created["someone/tumorlens"]["repo_type"] == "space" and created["someone/tumorlens"]["space_sdk"] == "gradio"

    from tumorlens.data.registry import dataset_names
    # BRISC 2025 as two configs of one repo (classification the default), the others as their one view
    assert built[:2] == [("brisc2025", "someone/brisc2025", "classification", "classification", True),
                         ("brisc2025", "someone/brisc2025", "segmentation", "segmentation", None)]
    assert built[2:] == [(n, f"someone/{n}", None, "default", None) for n in dataset_names() if n != "brisc2025"]
    failed = [line for line in out.out.splitlines() if line.startswith("failed")]
    assert len(failed) == 1 and "someone/figshare" in failed[0]
    assert_one_clean_line(failed[0], constants.ENDPOINT, "cannot connect")
    assert "1 of 8 failed" in out.err or "failed: someone/figshare" in out.err


def test_publish_with_an_unreachable_hub_stops_at_the_check(closed_endpoint, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", "hf_fake")
    before = models_state()

    def refuse(self, *args, **kwargs):
        raise AssertionError("pushed although the access check failed")

    monkeypatch.setattr(HfApi, "create_repo", refuse)
    monkeypatch.setattr(HfApi, "upload_folder", refuse)
    assert publish.main(["--models"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ")
    assert_one_clean_line(err, closed_endpoint)
    assert models_state() == before
