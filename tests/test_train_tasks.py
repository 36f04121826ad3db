"""Each task's head, trained from its config on the features configs/extract/sample.yaml
extracts from the default-size sample dataset, beats the trivial baseline on the validation
split by a clear margin (absolute, in the official metric)."""

import re
from pathlib import Path

import numpy as np
import pytest

from abaw.baseline import constant_rows, trivial_values
from abaw.cli import main
from abaw.data import load_tracks
from abaw.metrics import score
from abaw.score import pooled_labels
from abaw.tasks import get_task

REPO = Path(__file__).resolve().parents[1]
MARGIN = {"expr": 0.15, "va": 0.15, "au": 0.1, "vd": 0.1}


def baseline(root, task):
    train, val = (load_tracks(root, task, splits=(s,)) for s in ("train", "validation"))
    rows = constant_rows(val, trivial_values(task, train))
    labels, valid = pooled_labels(val)
    return score(task, labels, np.concatenate([rows[t.id].values for t in val]), valid).value


@pytest.mark.parametrize("name", ["expr", "va", "au", "vd"])
def test_task_config_trains_above_the_trivial_baseline(name, demo_features, tmp_path, capsys):
    root, cache = demo_features
    overrides = [f"data.root={root}", f"extract.cache={cache}", f"runs_dir={tmp_path}"]
    assert main(["train", "--config", str(REPO / "configs" / "task" / f"{name}.yaml"), *overrides]) == 0
    value = float(re.search(r"best validation score (-?[\d.]+)", capsys.readouterr().out).group(1))
    floor = baseline(root, get_task(name))
    assert value > floor + MARGIN[name], (value, floor)
