"""The `tumorlens` command: every job is a subcommand that reaches the module owning it."""

import importlib

import pytest

from tumorlens import __main__ as command


def test_every_subcommand_names_a_callable_entry_point():
    for name, (target, text) in command.COMMANDS.items():
        module, function = target.split(":")
        assert callable(getattr(importlib.import_module(module), function)), name
        assert text


@pytest.mark.parametrize("name", sorted(command.COMMANDS))
def test_every_subcommand_answers_help(name, capsys):
    argv = [name, "segmenter", "--help"] if name == "train" else [name, "--help"]
    with pytest.raises(SystemExit) as exit_:
        command.main(argv)
    assert exit_.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_arguments_reach_the_owning_module(monkeypatch):
    seen = {}
    monkeypatch.setattr("tumorlens.evaluate.main", lambda argv: seen.setdefault("evaluate", argv) and 0)
    monkeypatch.setattr("tumorlens.training.cli.main", lambda kind, argv: seen.setdefault(kind, argv) and 0)
    assert command.main(["evaluate", "segmenter", "some/folder", "--limit", "3"]) == 0
    assert command.main(["train", "classifier", "--epochs", "2"]) == 0
    assert seen == {"evaluate": ["segmenter", "some/folder", "--limit", "3"], "classifier": ["--epochs", "2"]}


def test_unknown_or_missing_commands_exit_2_with_the_list(capsys):
    assert command.main(["segment"]) == 2
    assert "unknown command 'segment'" in capsys.readouterr().err
    assert command.main(["train", "unet"]) == 2
    assert "segmenter or classifier" in capsys.readouterr().err
    assert command.main([]) == 2
    assert "predict" in capsys.readouterr().out
