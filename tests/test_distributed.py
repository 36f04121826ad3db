"""Multi-process training as users launch it: Lightning's ``ddp`` strategy re-runs the command
line in each rank process, so these tests go through ``python -m abaw`` in a subprocess."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import yaml

from abaw.config import load_config
from abaw.training.data import WindowDataModule
from abaw.training.module import TaskModule
from abaw.training.train import build_datasets
from tests.test_training import FEATURES, write_synthetic_features

DDP = "train.trainer={accelerator: cpu, devices: 2, strategy: ddp}"


@pytest.fixture(scope="module")
def cache(sample_root, tmp_path_factory) -> Path:
    cache = tmp_path_factory.mktemp("ddp-cache")
    write_synthetic_features(sample_root, cache)
    return cache


def _config(tmp_path: Path, sample_root: Path, cache: Path) -> Path:
    path = tmp_path / "expr.yaml"
    path.write_text(yaml.safe_dump({
        "name": "ddp", "data": {"root": str(sample_root)}, "runs_dir": str(tmp_path / "runs"),
        "folds": {"k": 2}, "extract": {"cache": str(cache), "features": FEATURES},
        "train": {"task": "expr", "features": ["face", "voice"], "epochs": 2, "window": 16, "batch_size": 8,
                  "model": {"name": "fusion_moe", "hidden": 16, "experts": 2}},
    }))
    return path


def _abaw(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "NODE_RANK", "RANK", "WORLD_SIZE")}
    result = subprocess.run([sys.executable, "-m", "abaw", *args], env={**env, "HF_HUB_OFFLINE": "1"},
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


def test_ddp_train_makes_one_run_directory_and_scores_like_one_process(sample_root, cache, tmp_path):
    config_path = _config(tmp_path, sample_root, cache)
    result = _abaw("train", "--config", str(config_path), DDP)
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1, runs  # one per rank before: each process made its own
    assert result.stdout.count("best validation score") == 1
    score = float(re.search(r"best validation score (\S+)", result.stdout).group(1))
    checkpoint = Path(re.search(r"-> (\S+\.ckpt)", result.stderr).group(1))
    assert checkpoint.is_relative_to(runs[0]) and checkpoint.exists()
    # The same checkpoint validated in one process gives the score the two processes reported.
    config = load_config(config_path)
    train_set, val_set = build_datasets(config, None)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False)
    module = TaskModule.load_from_checkpoint(checkpoint)
    one = trainer.validate(module, datamodule=WindowDataModule(train_set, val_set, 8), verbose=False)[0]["val/score"]
    assert one == pytest.approx(score, abs=5e-5)  # printed with 4 decimals


def test_ddp_cross_validation_records_each_fold_once(sample_root, cache, tmp_path):
    result = _abaw("cv", "--config", str(_config(tmp_path, sample_root, cache)), DDP)
    # Only rank 0 predicts and records: one held-out line per fold, one summary.
    assert [line.split(":")[0] for line in result.stderr.splitlines() if "held-out score" in line] == \
           ["EXPR fold 0", "EXPR fold 1"]
    assert result.stdout.count("EXPR CV:") == 1
    cv_dir = tmp_path / "runs" / "ddp-cv-expr"
    summary = json.loads((cv_dir / "cv.json").read_text())
    for k in (0, 1):
        done = json.loads((cv_dir / f"fold{k}" / "done.json").read_text())
        assert done["score"] == pytest.approx(summary["folds"][str(k)]["raw"])
        assert [p.name for p in (cv_dir / f"fold{k}" / "checkpoints").iterdir()] == ["last.ckpt"]
