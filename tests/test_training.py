"""Training on the feature cache: losses by hand, windows, DDP de-duplication, end to end on
synthetic features written into real feature stores of the sample dataset."""

import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import pandas as pd
import yaml

from abaw.baseline import constant_rows, trivial_values
from abaw.config import load_config, make_run_dir
from abaw.data import load_tracks
from abaw.metrics import score
from abaw.score import pooled_labels
from abaw.tasks import AU, EXPR, VA, VD
from abaw.training.losses import TaskLoss, ccc_loss, class_weights, positive_weights
from abaw.training.module import TaskModule, deduplicate
from abaw.training.train import predict_frames, train

FEATURES = {"face": {"extractor": "logmel", "n_mels": 16}, "voice": {"extractor": "logmel", "n_mels": 8}}


def test_ccc_loss_by_hand():
    pred = torch.tensor([[0.0, 1.0], [2.0, 1.0], [9.0, 9.0]])
    target = torch.tensor([[2.0, 1.0], [0.0, 3.0], [0.0, 0.0]])
    valid = torch.tensor([[True, True], [True, True], [False, False]])
    # dim 0: x=[0,2], y=[2,0]: CCC = -1 -> loss 2; dim 1: x=[1,1] (var 0), y=[1,3]: cov 0 -> loss 1
    assert ccc_loss(pred, target, valid).item() == pytest.approx(1.5, abs=1e-5)


def test_invalid_frames_contribute_nothing():
    torch.manual_seed(0)
    for task in (EXPR, VA, AU, VD):
        output = torch.randn(6, task.output_size)
        labels = torch.randint(0, 2, (6, task.columns)).float()
        valid = torch.tensor([True, True, True, True, False, False])[:, None].expand(6, task.columns).clone()
        loss = TaskLoss(task)
        before = loss(output, labels, valid)
        output[4:], labels[4:] = 100.0, 1.0 - labels[4:]
        assert torch.allclose(loss(output, labels, valid), before), task.name


def test_class_and_positive_weights():
    weights = class_weights(np.array([0, 0, 0, 1]), 3)
    # inverse frequencies 1/3 and 1 over the 2 classes present, mean 1; the absent class gets 0
    assert weights.tolist() == pytest.approx([0.5, 1.5, 0.0])
    labels = np.array([[1, 0], [0, 0], [0, 0], [0, 1]], dtype=float)
    valid = np.ones_like(labels, dtype=bool)
    assert positive_weights(labels, valid, clip=2.0).tolist() == pytest.approx([2.0, 2.0])
    assert positive_weights(labels, valid, clip=10.0).tolist() == pytest.approx([3.0, 3.0])


def test_deduplicate_keeps_one_row_per_track_frame():
    tracks = np.array([0, 0, 1, 0, 1])
    rows = np.array([5, 6, 5, 5, 5])
    values = np.array([1.0, 2.0, 3.0, 1.0, 3.0])
    t, r, v = deduplicate([tracks, rows, values])
    assert sorted(zip(t.tolist(), r.tolist(), v.tolist())) == [(0, 5, 1.0), (0, 6, 2.0), (1, 5, 3.0)]


def test_stream_statistics_equal_numpy_over_present_rows(tmp_path):
    from abaw.data.records import Track
    from abaw.training.data import Stream, WindowDataset, stream_statistics
    from features.store import FeatureStore

    rng = np.random.default_rng(0)
    store = FeatureStore(tmp_path / "face")
    store.folder.mkdir(parents=True)
    tracks, present_rows = [], []
    for i, n in enumerate((7, 12, 5)):
        values, valid = rng.normal(i, 1 + i, (n, 3)), rng.random(n) > 0.3
        store.write(f"t{i}", values, valid)
        present_rows.append(np.asarray(store.read(f"t{i}"), dtype=np.float64)[valid])  # as stored (float16)
        tracks.append(Track(f"t{i}", "expr", "train", f"t{i}", None, tmp_path, np.arange(1, n + 1),
                            np.zeros((n, 1), np.float32), np.ones((n, 1), bool)))
    dataset = WindowDataset(tracks, {"face": Stream("face", store, "visual", 3)}, window=4)
    rows = np.concatenate(present_rows)
    for l2 in (False, True):
        expected = rows / np.linalg.norm(rows, axis=1, keepdims=True) if l2 else rows
        stats = stream_statistics(dataset, l2=l2)["face"]
        np.testing.assert_allclose(stats["mean"], expected.mean(axis=0), rtol=1e-9, atol=1e-12)
        np.testing.assert_allclose(stats["std"], expected.std(axis=0), rtol=1e-9, atol=1e-12)
    sampled = stream_statistics(dataset, l2=False, max_rows=8)["face"]  # a sample: close, not equal
    assert np.all(np.abs(np.array(sampled["mean"]) - rows.mean(axis=0)) < 2 * rows.std(axis=0))


def write_synthetic_features(root: Path, cache: Path, seed: int = 0) -> None:
    """Fill the stores of FEATURES with features that carry the labels (plus noise), so a
    head can learn them: the face stream encodes EXPR/VD labels, the voice stream VA."""
    from abaw.extraction import feature_spec, feature_store, jobs_for
    from tests.conftest import config_of

    config = config_of(root, cache, FEATURES)

    rng = np.random.default_rng(seed)
    for dataset, tasks in (("affwild2", (EXPR, VA, AU)), ("dvd", (VD,))):
        by_id: dict = {}
        for task in tasks:
            for track in load_tracks(root, task, splits=("train", "validation")):
                by_id.setdefault(track.id, {})[task.name] = track
        for job in jobs_for(config, dataset):
            face = rng.normal(0, 0.3, (job.frames, 16))
            voice = rng.normal(0, 0.3, (job.frames, 8))
            for name, track in by_id.get(job.id, {}).items():
                n = track.num_frames
                if name in ("expr", "vd"):
                    classes = np.where(track.valid[:, 0], track.labels[:, 0], 0).astype(int)
                    face[np.arange(n), classes] += 2.0
                elif name == "va":
                    voice[:n, :2] += 2.0 * np.where(track.valid, track.labels, 0)
                else:
                    face[:n, 8:] += 2.0 * np.where(track.valid, track.labels, 0)[:, :8]
            present = job.present if job.present is not None else np.ones(job.frames, bool)
            for label, values, valid in (("face", face, present), ("voice", voice, np.ones(job.frames, bool))):
                store = feature_store(config, dataset, label, create=True)
                modality = feature_spec(config, label).modality
                store.write(job.id, values * valid[:, None], valid, inputs=job.inputs_for(modality))


@pytest.fixture(scope="module")
def synthetic_cache(sample_root, tmp_path_factory):
    cache = tmp_path_factory.mktemp("cache")
    write_synthetic_features(sample_root, cache)
    return cache


def config_for(sample_root, cache, tmp_path, task, *overrides):
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({
        "data": {"root": str(sample_root)}, "runs_dir": str(tmp_path),
        "extract": {"cache": str(cache), "features": FEATURES},
        "train": {"task": task, "features": ["face", "voice"], "epochs": 4, "window": 16, "batch_size": 8,
                  "lr": 0.003, "fallback": {"stream": "face", "hidden": 16},
                  "model": {"name": "fusion_moe", "hidden": 32, "experts": 2}},
    }))
    return load_config(path, list(overrides))


def baseline_score(config, task):
    train = load_tracks(config.data.root, task, splits=("train",))
    val = load_tracks(config.data.root, task, splits=("validation",))
    rows = constant_rows(val, trivial_values(task, train))
    predictions = np.concatenate([rows[t.id].values for t in val])
    labels, valid = pooled_labels(val)
    return score(task, labels, predictions, valid).value


@pytest.mark.parametrize("task", [EXPR, VA, AU, VD], ids=lambda t: t.name)
def test_each_task_learns_synthetic_features_above_the_trivial_baseline(sample_root, synthetic_cache, tmp_path, task):
    config = config_for(sample_root, synthetic_cache, tmp_path, task.name)
    run_dir = make_run_dir(config, f"train-{task.name}")
    result = train(config, run_dir, log=lambda m: None)
    assert result.best_checkpoint.exists()
    assert (run_dir / "logs" / "metrics.csv").exists() and (run_dir / "stream_statistics.json").exists()
    assert result.best_score > baseline_score(config, task) + 0.15, result.best_score
    val = load_tracks(config.data.root, task, splits=("validation",))
    frames = predict_frames(result.best_checkpoint, config, val)
    track = val[0]
    assert frames[track.id]["probabilities"].shape == (track.num_frames, task.output_size)
    assert frames[track.id]["fallback"].shape == (track.num_frames, task.output_size)


def test_resumed_run_continues_from_its_last_epoch(sample_root, synthetic_cache, tmp_path):
    config = config_for(sample_root, synthetic_cache, tmp_path, "expr", "train.epochs=2", "train.patience=10")
    first = make_run_dir(config, "first")
    train(config, first, log=lambda m: None)
    resumed = config_for(sample_root, synthetic_cache, tmp_path, "expr", "train.epochs=3", "train.patience=10",
                         f"train.resume={first / 'checkpoints' / 'last.ckpt'}")
    second = make_run_dir(resumed, "second")
    train(resumed, second, log=lambda m: None)
    epochs = pd.read_csv(second / "logs" / "metrics.csv")["epoch"].dropna().astype(int).unique().tolist()
    assert epochs == [2]


def test_two_process_ddp_trains_and_validates_like_one_process(sample_root, synthetic_cache, tmp_path):
    import lightning as L

    from abaw.training.data import WindowDataModule, WindowDataset
    from abaw.training.train import build_datasets

    config = config_for(sample_root, synthetic_cache, tmp_path, "expr", "train.epochs=1",
                        "train.trainer={accelerator: cpu, devices: 2, strategy: ddp_spawn}")
    result = train(config, make_run_dir(config, "ddp"), log=lambda m: None)
    assert result.best_checkpoint.exists() and np.isfinite(result.best_score)
    module = TaskModule.load_from_checkpoint(result.best_checkpoint)
    train_set, val_set = build_datasets(config, None)
    # A DistributedSampler pads each rank to the same number of windows, repeating some: with an
    # odd number of validation windows over 2 processes one window is seen twice, and the score
    # must not count it twice. The window length that gives an odd count is looked up, not assumed.
    window = next(w for w in (16, 12, 20, 24, 10, 14, 18) if len(WindowDataset(val_set.tracks, val_set.streams, w)) % 2)
    val_set = WindowDataset(val_set.tracks, val_set.streams, window)
    assert len(val_set) % 2 == 1, "the premise of this test: the 2-process validation is padded"
    data = WindowDataModule(train_set, val_set, batch_size=3)
    scores = {}
    for devices, strategy in ((1, "auto"), (2, "ddp_spawn")):
        trainer = L.Trainer(accelerator="cpu", devices=devices, strategy=strategy, logger=False,
                            enable_progress_bar=False, enable_model_summary=False)
        scores[devices] = trainer.validate(module, datamodule=data, verbose=False)[0]["val/score"]
    assert scores[2] == pytest.approx(scores[1], abs=1e-9)


EPOCH_LINE = r"EXPR epoch (\d+)/(\d+): train loss \d+\.\d{3}, val/score \d\.\d{4}"
CONTEXT = r" \(\d+ training / \d+ validation tracks, streams face, voice\)"


def test_epoch_log_has_one_line_per_epoch_with_loss_and_score(sample_root, synthetic_cache, tmp_path, monkeypatch):
    import abaw.training.train as train_module

    monkeypatch.setattr(train_module, "EPOCH_LOG_EVERY", 0.0)  # every epoch, however fast
    config = config_for(sample_root, synthetic_cache, tmp_path, "expr", "train.epochs=3", "train.patience=10")
    lines: list[str] = []
    train(config, make_run_dir(config, "epochs"), log=lines.append)
    *epochs, best = lines
    assert re.fullmatch(EPOCH_LINE + CONTEXT, epochs[0]), epochs  # the first line says what is trained on
    assert all(re.fullmatch(EPOCH_LINE, line) for line in epochs[1:]), epochs
    assert [re.match(EPOCH_LINE, line).groups() for line in epochs] == [("1", "3"), ("2", "3"), ("3", "3")]
    assert re.fullmatch(r"EXPR: best val/score \d\.\d{4} -> .*best\.ckpt", best), best


def test_train_prints_only_lines_about_the_run(sample_root, synthetic_cache, tmp_path):
    """``abaw train`` in a fresh interpreter (Lightning's loggers and Python's warning filters as
    a user gets them): no tips, no accelerator banners, no internal steps, no deprecations."""
    config_for(sample_root, synthetic_cache, tmp_path, "expr")  # writes tmp_path/config.yaml
    done = subprocess.run([sys.executable, "-m", "abaw.cli", "train", "--config", str(tmp_path / "config.yaml")],
                          capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=600)
    assert done.returncode == 0, done.stderr
    *epochs, best = done.stderr.splitlines()
    assert re.fullmatch(EPOCH_LINE + CONTEXT, epochs[0]), epochs
    assert all(re.fullmatch(EPOCH_LINE, line) for line in epochs[1:]), epochs
    assert re.match(EPOCH_LINE, epochs[-1]).groups() == ("4", "4")  # the last epoch always has its line
    assert re.fullmatch(r"EXPR: best val/score \d\.\d{4} -> .*best\.ckpt", best), best
    assert "run directory:" in done.stdout
