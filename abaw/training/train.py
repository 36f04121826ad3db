"""``abaw train``: one task's head on the feature cache, on the official split or a CV fold."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from abaw.config import Config
from abaw.data import load_tracks
from abaw.data.records import DataError, Track
from abaw.folds import ensure_folds
from abaw.tasks import Task, get_task
from abaw.training.data import WindowDataModule, WindowDataset, check_fresh, open_streams, stream_statistics
from abaw.training.losses import class_weights, positive_weights
from abaw.training.module import TaskModule


@dataclass(frozen=True)
class TrainResult:
    run_dir: Path
    best_checkpoint: Path
    best_score: float


def split_tracks(config: Config, task: Task, fold: int | None) -> tuple[list[Track], list[Track]]:
    """(train, validation) tracks: the official splits, or folds != ``fold`` and fold ``fold``."""
    if fold is None:
        return (load_tracks(config.data.root, task, splits=("train",)),
                load_tracks(config.data.root, task, splits=("validation",)))
    folds, tracks = ensure_folds(config.data.root, task.dataset, config.folds_path, k=config.folds.k,
                                 seed=config.folds.seed)
    if not 0 <= fold < folds.k:
        raise ValueError(f"fold {fold} outside 0..{folds.k - 1}")
    task_tracks = tracks[task]
    return ([t for t in task_tracks if folds.fold_of(t) != fold], [t for t in task_tracks if folds.fold_of(t) == fold])


def loss_weights(task: Task, tracks: list[Track], clip: float) -> torch.Tensor | None:
    """EXPR class weights or AU/VD positive weights from the training tracks (VA: None)."""
    labels = np.concatenate([t.labels for t in tracks])
    valid = np.concatenate([t.valid for t in tracks])
    if task.kind == "multiclass":
        return class_weights(labels[valid[:, 0], 0], task.output_size)
    if task.kind in ("multilabel", "binary"):
        return positive_weights(labels, valid, clip)
    return None


def build_module(config: Config, streams: dict, train_set: WindowDataset) -> tuple[TaskModule, dict]:
    """The LightningModule with training-split statistics and loss weights set, and the statistics."""
    t = config.train
    task = get_task(t.task)
    module = TaskModule(
        task.name, {k: (s.modality, s.dim) for k, s in streams.items()}, dict(t.model),
        dict(t.fallback) if t.fallback else None,
        {"label_smoothing": t.label_smoothing, "mse": t.va_mse, "balance": t.balance},
        {"lr": t.lr, "weight_decay": t.weight_decay, "warmup_fraction": t.warmup_fraction},
    )
    stats = stream_statistics(train_set, l2=t.model.get("l2", True), seed=config.seed)
    module.set_training_statistics(stats, loss_weights(task, train_set.tracks, t.au_pos_weight_max))
    return module, stats


def training_windows(tracks: list[Track], streams: dict, window: int) -> WindowDataset:
    """The windows a head trains on: ``window`` rows, overlapping by half."""
    return WindowDataset(tracks, streams, window, stride=max(1, window // 2))


def build_datasets(config: Config, fold: int | None) -> tuple[WindowDataset, WindowDataset]:
    """Training windows (overlapping by half) and validation windows (each row once)."""
    t = config.train
    task = get_task(t.task)
    if not t.features:
        raise ValueError("train.features is empty: name the extract.features labels the head reads")
    streams = open_streams(config, task.dataset, list(t.features))
    train_tracks, val_tracks = split_tracks(config, task, fold)
    if not train_tracks or not val_tracks:
        raise DataError(Path(config.data.root), f"{task.name.upper()}: {len(train_tracks)} training and "
                                                f"{len(val_tracks)} validation tracks; need both")
    check_fresh(config, task.dataset, streams, train_tracks + val_tracks)
    return training_windows(train_tracks, streams, t.window), WindowDataset(val_tracks, streams, t.window)


def train(config: Config, run_dir: Path, fold: int | None = None, log=None, select: bool = True) -> TrainResult:
    """Train one head; writes checkpoints, metrics.csv and stream_statistics.json in ``run_dir``.

    With ``select`` the best epoch by the validation score is kept and training stops early;
    without it (cross-validation, where the validation fold is the held-out data) every run
    trains ``train.epochs`` epochs and the last checkpoint is the result, so nothing about the
    held-out frames chooses the model.
    """
    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    t = config.train
    task = get_task(t.task)
    L.seed_everything(config.seed, workers=True, verbose=False)
    train_set, val_set = build_datasets(config, fold)
    module, stats = build_module(config, train_set.streams, train_set)
    (run_dir / "stream_statistics.json").write_text(json.dumps(stats))
    checkpoint = ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor="val/score", mode="max",
                                 save_last=True)
    trainer = L.Trainer(
        max_epochs=t.epochs, deterministic=t.deterministic, default_root_dir=run_dir,
        callbacks=[checkpoint] + ([EarlyStopping(monitor="val/score", mode="max", patience=t.patience)]
                                  if select else []),
        logger=CSVLogger(run_dir, name="", version="logs"), enable_progress_bar=False, enable_model_summary=False,
        log_every_n_steps=5, num_sanity_val_steps=0, **dict(t.trainer),
    )
    log(f"{task.name.upper()}{'' if fold is None else f' fold {fold}'}: {len(train_set.tracks)} training tracks, "
        f"{len(val_set.tracks)} validation tracks, streams {', '.join(train_set.streams)}")
    trainer.fit(module, WindowDataModule(train_set, val_set, t.batch_size, t.num_workers), ckpt_path=t.resume)
    if not select:
        last = trainer.callback_metrics.get("val/score")
        score = float(last) if last is not None else float("nan")
        log(f"last-epoch val/score {score:.4f} -> {checkpoint.last_model_path}")
        return TrainResult(run_dir, Path(checkpoint.last_model_path), score)
    best_path = Path(checkpoint.best_model_path)
    best = checkpoint.best_model_score
    if best is None and best_path.is_file():
        # Spawned strategies return the path but not the score to this process: read it back.
        best = _checkpoint_score(best_path)
    best = float("nan") if best is None else float(best)
    log(f"best val/score {best:.4f} -> {best_path}")
    return TrainResult(run_dir, best_path, best)


def _checkpoint_score(path: Path) -> float | None:
    """The monitored best score recorded by ModelCheckpoint inside a checkpoint file."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    for callback in state.get("callbacks", {}).values():
        if isinstance(callback, dict) and callback.get("best_model_score") is not None:
            return float(callback["best_model_score"])
    return None


def predict_frames(checkpoint: str | Path, config: Config, tracks: list[Track]) -> dict[str, dict[str, np.ndarray]]:
    """Per-track (T, output) predictions of a checkpoint: ``probabilities`` of the fusion model,
    ``fallback`` of the MLP (if trained), ``emotion_logits`` when a stream cached them, and
    ``present`` (T,) whether the first visual stream (the face) had input."""
    module = TaskModule.load_from_checkpoint(checkpoint, map_location="cpu").eval()
    labels = list(module.hparams["streams"])
    streams = open_streams(config, module.task.dataset, labels)
    check_fresh(config, module.task.dataset, streams, tracks)
    from abaw.training.losses import to_probabilities

    results: dict[str, dict[str, np.ndarray]] = {}
    for track in tracks:
        if track.labels is None:  # test tracks: shape-only labels so the dataset can window them
            track = Track(track.id, track.task, track.split, track.video, track.video_path, track.source,
                          np.arange(1, int(track.frames.max()) + 1),
                          np.zeros((int(track.frames.max()), module.task.columns), np.float32),
                          np.zeros((int(track.frames.max()), module.task.columns), bool))
        dataset = WindowDataset([track], streams, window=max(1, config.train.window))
        outputs: dict[str, list] = {"probabilities": [], "fallback": []}
        with torch.inference_mode():
            for i in range(len(dataset)):
                batch = torch.utils.data.default_collate([dataset[i]])
                keep = batch["rows"][0] >= 0
                output, fallback = module(batch)
                outputs["probabilities"].append(to_probabilities(module.task, output)[0][keep].numpy())
                if fallback is not None:
                    outputs["fallback"].append(to_probabilities(module.task, fallback)[0][keep].numpy())
        result = {k: np.concatenate(v) for k, v in outputs.items() if v}
        visual = [s for s in streams.values() if s.modality == "visual"]
        result["present"] = (np.asarray(visual[0].store.read(track.id, "valid")[: track.num_frames], dtype=bool)
                             if visual else np.ones(track.num_frames, dtype=bool))
        for stream in streams.values():
            if stream.store.file(track.id, "logits").exists():
                result["emotion_logits"] = np.asarray(stream.store.read(track.id, "logits")[: track.num_frames],
                                                      dtype=np.float32)
        results[track.id] = result
    return results
