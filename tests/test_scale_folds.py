"""Which finished folds a cross-validation may reuse: those of this configuration as far as the
head reads it, from the features cached now; and a rank process never makes the directory."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import yaml

import abaw.cv
from abaw.cli import main
from abaw.config import load_config
from abaw.rundir import config_hash
from abaw.training.train import TrainResult
from tests.test_training import FEATURES, write_synthetic_features


@pytest.fixture(scope="module")
def cache(sample_root, tmp_path_factory):
    cache = tmp_path_factory.mktemp("folds-cache")
    write_synthetic_features(sample_root, cache)
    return cache


def _config_file(tmp_path, sample_root, cache, **train):
    path = tmp_path / "expr.yaml"
    path.write_text(yaml.safe_dump({
        "name": "reuse", "data": {"root": str(sample_root)}, "runs_dir": str(tmp_path / "runs"), "folds": {"k": 2},
        "extract": {"cache": str(cache), "features": FEATURES},
        "train": {"task": "expr", "features": ["face", "voice"], "epochs": 1, "window": 16, "batch_size": 8,
                  "model": {"name": "fusion_moe", "hidden": 16, "experts": 2}, **train}}))
    return path


def _with_features(config, **features):
    return dataclasses.replace(config, extract=dataclasses.replace(config.extract, features=features))


def test_the_config_hash_covers_the_extractors_the_head_reads_and_no_other(tmp_path, sample_root, cache):
    config = load_config(_config_file(tmp_path, sample_root, cache))
    other = {"extractor": "logmel", "n_mels": 4}
    assert config_hash(_with_features(config, **FEATURES, other=other)) == config_hash(config)
    assert config_hash(_with_features(config, **{**FEATURES, "voice": other})) != config_hash(config)
    # The fallback MLP's stream is read too.
    face_only = dataclasses.replace(config, train=dataclasses.replace(config.train, features=["face"],
                                                                      fallback={"stream": "voice", "hidden": 8}))
    assert config_hash(_with_features(face_only, **{**FEATURES, "voice": other})) != config_hash(face_only)


def test_done_folds_are_reused_until_the_features_they_read_change(tmp_path, sample_root, capsys):
    from abaw.data import load_tracks
    from abaw.extraction import feature_spec, feature_store, jobs_for
    from abaw.tasks import EXPR

    cache = tmp_path / "cache"  # this test rewrites features: a cache of its own
    write_synthetic_features(sample_root, cache)
    path = _config_file(tmp_path, sample_root, cache)
    cv_dir = tmp_path / "runs" / "reuse-cv-expr"
    assert main(["cv", "--config", str(path)]) == 0
    done = {k: (cv_dir / f"fold{k}" / "done.json").stat().st_mtime_ns for k in (0, 1)}
    capsys.readouterr()

    # Another extractor configured (for another task, say) changes nothing the head computes.
    assert main(["cv", "--config", str(path), "extract.features.other={extractor: logmel, n_mels: 4}"]) == 0
    assert capsys.readouterr().err.count("finished earlier, reused") == 2
    assert {k: (cv_dir / f"fold{k}" / "done.json").stat().st_mtime_ns for k in (0, 1)} == done

    config = load_config(path)
    track = load_tracks(sample_root, EXPR, splits=("train",))[0]
    job = next(j for j in jobs_for(config, "affwild2") if j.id == track.id)
    store, inputs = feature_store(config, "affwild2", "face"), job.inputs_for(feature_spec(config, "face").modality)
    features, valid = np.asarray(store.read(job.id), np.float32), store.read(job.id, "valid", mmap=False)
    # The dataset changed after extraction (the record's inputs differ from the dataset's):
    # reusing the folds is refused, as training on those features would be.
    store.write(job.id, features, valid, inputs={**inputs, "rows": job.frames + 1})
    assert main(["cv", "--config", str(path)]) == 1
    assert "do not match the dataset" in capsys.readouterr().err
    # Extracted again, with other numbers: every fold read that track, so every fold is retrained.
    store.write(job.id, features + 1.0, valid, inputs=inputs)
    # predict refuses fold models trained on the features as they were, as cv does.
    assert main(["predict", "--run", str(cv_dir)]) == 1
    assert "fold(s) 0, 1 trained under another configuration or from features extracted again since" in \
        capsys.readouterr().err
    assert main(["cv", "--config", str(path)]) == 0
    assert capsys.readouterr().err.count("its features were extracted again since, training again") == 2
    assert all((cv_dir / f"fold{k}" / "done.json").stat().st_mtime_ns != done[k] for k in (0, 1))
    assert (cv_dir / "cv.json").exists()


def test_a_rank_process_neither_makes_the_cv_directory_nor_waits_for_it(tmp_path, sample_root, cache, monkeypatch):
    # torchrun and SLURM start every rank at once: rank 1 may reach a fold before rank 0 made the
    # CV directory. It must not need the directory (before, its fold_dir.mkdir raised), nor make one.
    config = load_config(_config_file(tmp_path, sample_root, cache))
    monkeypatch.setenv("RANK", "1")
    seen = []

    def fit(config, run_dir, fold=None, log=None, select=True):  # a rank's part of a fit writes nothing
        seen.append((fold, run_dir.parent.exists()))
        return TrainResult(run_dir, run_dir / "checkpoints" / "last.ckpt", float("nan"))

    monkeypatch.setattr(abaw.cv, "train", fit)
    cv, _, _ = abaw.cv.run_folds(config)
    assert seen == [(0, False), (1, False)]
    assert not cv.path.exists()
