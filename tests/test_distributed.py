"""Multi-process training as users launch it: Lightning's ``ddp`` strategy re-runs the command
line in each rank process, and torchrun (or SLURM) starts every rank itself, so these tests go
through ``python -m abaw`` in subprocesses."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import lightning as L
import numpy as np
import pytest
import yaml

from abaw.config import load_config
from abaw.folds import ensure_folds
from abaw.rundir import load_predictions
from abaw.tasks import EXPR
from abaw.training.data import WindowDataModule
from abaw.training.module import TaskModule
from abaw.training.train import build_datasets, predict_frames
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


def _abaw(*args: str, launcher: tuple[str, ...] = (), tmp: Path | None = None) -> subprocess.CompletedProcess:
    """``python -m abaw ARGS`` (or under ``launcher``, e.g. torchrun) in a clean environment;
    with ``tmp`` the processes' temporary directory, so that a test sees what they leave there."""
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "NODE_RANK", "RANK", "WORLD_SIZE")}
    env["HF_HUB_OFFLINE"] = "1"
    if tmp is not None:
        tmp.mkdir(exist_ok=True)
        env["TMPDIR"] = str(tmp)
    result = subprocess.run([sys.executable, *launcher, "-m", "abaw", *args], env=env, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-4000:]
    return result


# torchrun starting both ranks itself, as a cluster job does; --standalone picks a free port.
TORCHRUN = ("-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2")


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


def test_ranks_started_by_torchrun_make_one_run_directory_and_no_other(sample_root, cache, tmp_path):
    # Every rank runs `abaw train` from the start; before, rank 1 made a mkdtemp directory of its own.
    result = _abaw("train", "--config", str(_config(tmp_path, sample_root, cache)), DDP, launcher=TORCHRUN,
                   tmp=tmp_path / "tmp")
    runs = list((tmp_path / "runs").iterdir())
    assert len(runs) == 1 and (runs[0] / "checkpoints" / "best.ckpt").is_file(), runs
    assert result.stdout.count("best validation score") == 1
    assert list((tmp_path / "tmp").glob("ddp-*")) == []  # torchrun keeps its own logs there


def test_ddp_run_makes_one_run_directory_and_records_each_fold_once(sample_root, cache, tmp_path):
    """``abaw run`` under Lightning's ddp launcher: the rank process re-runs the whole command."""
    config = yaml.safe_load(_config(tmp_path, sample_root, cache).read_text())
    config.update(tasks=["expr"], train={**config["train"], "epochs": 1})
    (tmp_path / "task").mkdir()
    (tmp_path / "task" / "expr.yaml").write_text("train: {task: expr}\n")
    run_config = tmp_path / "run.yaml"
    run_config.write_text(yaml.safe_dump(config))
    result = _abaw("run", str(run_config), DDP, tmp=tmp_path / "tmp")
    runs = tmp_path / "runs"
    assert sorted(p.name for p in runs.iterdir() if not p.name.startswith("ddp-run-")) == \
           ["ddp-cv-expr", "ddp-submission", "folds.json"]
    assert len(list(runs.glob("ddp-run-*"))) == 1
    assert list((tmp_path / "tmp").glob("ddp-*")) == []
    assert (next(runs.glob("ddp-run-*")) / "scores.txt").is_file()
    # Only rank 0 records, summarises, predicts and submits: one held-out line per fold, one table.
    assert [line.split(":")[0] for line in result.stderr.splitlines() if "held-out score" in line] == \
           ["EXPR fold 0", "EXPR fold 1"]
    assert result.stdout.count("cross-validation on train ∪ validation") == 1
    cv_dir = runs / "ddp-cv-expr"
    summary = json.loads((cv_dir / "cv.json").read_text())
    folds, tracks = ensure_folds(sample_root, "affwild2", runs / "folds.json", k=2)
    one = load_config(run_config)
    for k in (0, 1):
        done = json.loads((cv_dir / f"fold{k}" / "done.json").read_text())
        assert done["score"] == pytest.approx(summary["folds"][str(k)]["raw"])
        assert [p.name for p in (cv_dir / f"fold{k}" / "checkpoints").iterdir()] == ["last.ckpt"]
        # Each rank predicted half the held-out tracks; gathered, they are the fold's predictions
        # in one process, every held-out track once.
        held_out = [t for t in tracks[EXPR] if folds.fold_of(t) == k]
        oof = load_predictions(cv_dir / f"fold{k}" / "oof.npz")
        assert sorted(oof) == sorted(t.id for t in held_out) and len(held_out) >= 2
        alone = predict_frames(cv_dir / f"fold{k}" / "checkpoints" / "last.ckpt", one, held_out)
        for track in held_out:
            np.testing.assert_allclose(oof[track.id]["probabilities"], alone[track.id]["probabilities"], atol=1e-6)
    assert sorted(p.name for p in (runs / "ddp-submission").iterdir()) == ["EXPR.txt"]


WAITING = '''
import datetime, time, torch, torch.distributed as dist
from abaw.training.train import wait_for_main
dist.init_process_group("gloo")
fit = dist.new_group(backend="gloo", timeout=datetime.timedelta(seconds=2))  # the next fit's, but 2 s
if dist.get_rank() == 0:
    time.sleep(5)  # rank 0's own work: a summary, test predictions
wait_for_main()
total = torch.ones(1)
dist.all_reduce(total, group=fit)  # the next fit's first collective
print(f"rank {dist.get_rank()} sum {total.item():.0f}")
dist.destroy_process_group()
'''


def test_the_other_ranks_wait_for_rank_0_past_the_process_group_timeout(tmp_path):
    # Without wait_for_main, rank 1 would be in the all_reduce 5 s before rank 0, past its 2 s timeout.
    script = tmp_path / "wait.py"
    script.write_text(WAITING)
    result = subprocess.run([sys.executable, *TORCHRUN, str(script)], capture_output=True, text=True,
                            timeout=300, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-4000:]
    # The two ranks share one stdout: their lines may interleave, so find them rather than split.
    assert sorted(re.findall(r"rank \d sum \d+", result.stdout)) == ["rank 0 sum 2", "rank 1 sum 2"]


def test_a_rank_started_with_rank_0_waits_for_the_sample_dataset_rather_than_generating_it(tmp_path, monkeypatch):
    """torchrun starts every rank at once: only rank 0 generates (two generators would race for
    the same folder); rank 1 returns once the complete dataset is in place, or names the folder."""
    import threading

    from abaw.data.records import DataError
    from abaw.pipeline import ensure_dataset

    root = tmp_path / "sample"
    config = tmp_path / "c.yaml"
    config.write_text(f"name: w\ndata: {{root: {root}, generate: true}}\n")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("ABAW_WAIT_FOR_MAIN_S", "0.5")
    with pytest.raises(DataError, match="rank 0 did not generate the sample dataset") as error:
        ensure_dataset(load_config(config))
    assert str(root) in str(error.value) and not root.exists()  # it generated nothing itself

    def rank_0():  # what generate() does last: the finished folder moved into place
        building = tmp_path / ".sample.tmp"
        building.mkdir()
        (building / "sample_manifest.json").write_text("{}")
        building.rename(root)

    monkeypatch.setenv("ABAW_WAIT_FOR_MAIN_S", "30")
    timer = threading.Timer(1.5, rank_0)
    timer.start()
    try:
        assert ensure_dataset(load_config(config)) == root
    finally:
        timer.join()
    assert [p.name for p in root.iterdir()] == ["sample_manifest.json"]
