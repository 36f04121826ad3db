"""What a person reads: help text, file modes of submissions, no debris from a refused run."""

from __future__ import annotations

import argparse
import os
import re

import numpy as np
import pytest
import yaml

from abaw.cli import build_parser, main
from abaw.tasks import EXPR, VA
from submissions.formats import TrackRows
from submissions.writer import write_dvd_folder, write_per_track, write_task_file

# reStructuredText that means nothing in a terminal: ``literal``, :role:`target`.
MARKUP = re.compile(r"``|:\w+:`")


def sub_commands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    """Every sub-command's parser, by name."""
    return {name: sub for action in parser._actions if isinstance(action, argparse._SubParsersAction)
            for name, sub in action.choices.items()}


def test_every_option_of_every_command_has_help():
    parser = build_parser()
    missing = [(name, action.option_strings or action.dest)
               for name, sub in {"abaw": parser, **sub_commands(parser)}.items()
               for action in sub._actions
               if not isinstance(action, argparse._HelpAction) and not (action.help or "").strip()]
    assert not missing


@pytest.mark.parametrize("command", [None, *sub_commands(build_parser())])
def test_help_has_no_markup(command, capsys):
    with pytest.raises(SystemExit) as exit:
        main(([command] if command else []) + ["--help"])
    assert exit.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: abaw") and not MARKUP.search(text), text


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def test_submission_files_are_readable_by_others(tmp_path, umask_022):
    frames = np.array([1, 2, 3])
    expected = {"a": frames}
    expr = {"a": TrackRows(frames, np.array([[0], [4], [7]]), frames, tmp_path)}
    va = {"a": TrackRows(frames, np.array([[0.1, 0.2], [0.3, -0.4], [0.0, 0.0]]), frames, tmp_path)}
    write_task_file(tmp_path / "out" / "EXPR.txt", EXPR, expected, expr)
    written = [tmp_path / "out" / "EXPR.txt"]
    written += write_per_track(tmp_path / "out" / "VA", VA, expected, va)
    written += write_dvd_folder(tmp_path / "out" / "VD", {"0001": frames},
                                {"0001": TrackRows(frames, np.array([[0], [1], [1]]), frames, tmp_path)})
    assert {path.stat().st_mode & 0o777 for path in written} == {0o644}
    assert sorted(p.name for p in (tmp_path / "out").rglob(".*")) == []  # no temporary file left


@pytest.mark.parametrize("features", [["voice"], ["nope"]], ids=["never-extracted", "not-configured"])
def test_refused_train_leaves_no_run_directory(affwild2_root, tmp_path, capsys, features):
    runs = tmp_path / "runs"
    config = tmp_path / "train.yaml"
    config.write_text(yaml.safe_dump({
        "data": {"root": str(affwild2_root)}, "runs_dir": str(runs),
        "extract": {"cache": str(tmp_path / "cache"), "features": {"voice": {"extractor": "logmel", "n_mels": 8}}},
        "train": {"task": "expr", "features": features},
    }))
    assert main(["train", "--config", str(config)]) == 1
    assert "abaw: error:" in capsys.readouterr().err
    assert not runs.exists() or not any(runs.iterdir())
