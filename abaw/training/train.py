"""``abaw train``: one task's head on the feature cache, on the official split or a CV fold."""

from __future__ import annotations

import datetime
import inspect
import json
import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import EarlyStopping, ModelCheckpoint
from lightning.pytorch.loggers import CSVLogger

from abaw.config import Config, ConfigError, check_config, is_main_process
from abaw.config_checks import unknown
from abaw.data import load_tracks
from abaw.data.records import DataError, Track
from abaw.folds import ensure_folds
from abaw.runtime import Log, stderr_log
from abaw.tasks import Task, get_task
from abaw.training.data import (WindowDataModule, WindowDataset, check_fresh, open_streams, prediction_windows,
                                stream_statistics)
from abaw.training.epochlog import EPOCH_LOG_EVERY, EpochLog
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


def new_module(config: Config, kinds: dict[str, tuple[str, int]]) -> TaskModule:
    """The LightningModule of ``config.train`` (a video-level task's, :mod:`abaw.training.video`,
    for EMI and A/H) on streams of ``kinds`` (label -> (modality, dim)), before training
    statistics are set."""
    t = config.train
    task = get_task(t.task)
    optim = {"lr": t.lr, "weight_decay": t.weight_decay, "warmup_fraction": t.warmup_fraction}
    if task.level == "video":
        from abaw.training.video import VideoTaskModule

        return VideoTaskModule(task.name, kinds, dict(t.model), None,
                               {"mse": t.emi_mse, "pearson": t.emi_pearson, "balance": t.balance}, optim)
    return TaskModule(task.name, kinds, dict(t.model), dict(t.fallback) if t.fallback else None,
                      {"label_smoothing": t.label_smoothing, "mse": t.va_mse, "balance": t.balance}, optim)


def build_module(config: Config, streams: dict, train_set: WindowDataset) -> tuple[TaskModule, dict]:
    """The LightningModule with training-split statistics and loss weights set, and the
    statistics; a video-level task's (:mod:`abaw.training.video`) for EMI and A/H."""
    t = config.train
    task = get_task(t.task)
    module = new_module(config, {k: (s.modality, s.dim) for k, s in streams.items()})
    if task.level == "video":
        from abaw.training.video import video_loss_weights

        weights = video_loss_weights(task, train_set.tracks)
    else:
        weights = loss_weights(task, train_set.tracks, t.au_pos_weight_max)
    stats = stream_statistics(train_set, l2=t.model.get("l2", True), seed=config.seed)
    module.set_training_statistics(stats, weights)
    return module, stats


# The Trainer arguments train() sets itself: train.trainer may not give them.
TRAINER_SET = frozenset({"max_epochs", "deterministic", "default_root_dir", "callbacks", "logger",
                         "enable_progress_bar", "enable_model_summary", "log_every_n_steps", "num_sanity_val_steps"})


def check_fit(config: Config, streams: dict) -> None:
    """Build what a fit builds before its first step (the head and the fallback MLP on the
    widths of the ``train.features`` among ``streams``, the Trainer's arguments) and raise what
    fails as a :class:`~abaw.config.ConfigError`: training calls it before it writes anything,
    and cross-validation before it touches a fold, so a configuration error costs no work.

    Raises:
        ConfigError: a value :func:`~abaw.config.check_config` refuses, a model or fallback
            block that cannot be built (an option of the wrong type), or a ``train.trainer`` key
            ``lightning.Trainer`` does not take or that training sets itself.
    """
    check_config(config)
    read = {k: (s.modality, s.dim) for k, s in streams.items() if k in config.train.features}  # as a fit opens them
    try:
        # The trial build draws its initial weights from a copy of the random state: the fit
        # that follows, seeded before this check, builds exactly the module it built without it.
        with torch.random.fork_rng(devices=[]):
            new_module(config, read)
    except (TypeError, ValueError, KeyError) as e:
        raise ConfigError(f"train.model / train.fallback: the head cannot be built: {e}") from None
    valid = [name for name in inspect.signature(L.Trainer.__init__).parameters if name != "self"]
    for key in config.train.trainer:
        if key in TRAINER_SET:
            raise ConfigError(f"train.trainer.{key}: set by abaw itself (train.epochs, train.deterministic, ...), "
                              "not through train.trainer")
        if key not in valid:
            raise ConfigError(f"train.trainer.{key}: {unknown('lightning.Trainer argument', key, valid)}")


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
    if task.level == "video":  # one sample per video: frames sampled across it
        from abaw.training.video import video_datasets

        return video_datasets(train_tracks, val_tracks, streams, t.frames_per_video, t.draws_per_video)
    return training_windows(train_tracks, streams, t.window), WindowDataset(val_tracks, streams, t.window)


def train(config: Config, run_dir: Path | Callable[[], Path], fold: int | None = None, log: Log | None = None,
          select: bool = True) -> TrainResult:
    """Train one head; writes checkpoints, metrics.csv and stream_statistics.json in ``run_dir``.

    ``run_dir`` may be a function that creates the directory: it is called only once the
    features and tracks have been read, so a run refused for its inputs leaves no directory,
    and only in the main process. The other ranks of a distributed fit (started by Lightning's
    launcher, torchrun or SLURM) write nothing (Lightning saves checkpoints and logs from rank
    0) and make no directory of their own; Lightning gives them rank 0's checkpoint directory
    when the fit starts, and their result names rank 0's run directory.

    With ``select`` the best epoch by the validation score is kept and training stops early;
    without it (cross-validation, where the validation fold is the held-out data) every run
    trains ``train.epochs`` epochs and the last checkpoint is the result, so nothing about the
    held-out frames chooses the model.
    """
    log = log or stderr_log
    t = config.train
    task = get_task(t.task)
    prefix = f"{task.name.upper()}{'' if fold is None else f' fold {fold}'}"
    L.seed_everything(config.seed, workers=True, verbose=False)
    train_set, val_set = build_datasets(config, fold)
    check_fit(config, train_set.streams)
    module, stats = build_module(config, train_set.streams, train_set)
    main = is_main_process()
    if callable(run_dir):
        # A rank process only needs a path to build the trainer with: nothing is written there.
        run_dir = run_dir() if main else Path(config.runs_dir)
    run_dir = Path(run_dir)
    if main:  # the rank processes of a distributed fit write nothing of their own
        (run_dir / "stream_statistics.json").write_text(json.dumps(stats))
    # Selecting keeps the best epoch (and the last, to resume); cross-validation keeps the last only.
    checkpoint = (ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best", monitor="val/score", mode="max",
                                  save_last=True) if select else
                  ModelCheckpoint(dirpath=run_dir / "checkpoints", save_top_k=0, save_last=True))
    # Step-level rows in metrics.csv every 5 steps, or once an epoch when an epoch is shorter
    # (Lightning warns about an interval longer than the epoch).
    batches = math.ceil(len(train_set) / t.batch_size)
    context = (f"{len(train_set.tracks)} training / {len(val_set.tracks)} validation tracks, "
               f"streams {', '.join(train_set.streams)}")
    trainer = L.Trainer(
        max_epochs=t.epochs, deterministic=t.deterministic, default_root_dir=run_dir,
        callbacks=[checkpoint, EpochLog(prefix, log, EPOCH_LOG_EVERY, context, last=select)]
        + ([EarlyStopping(monitor="val/score", mode="max", patience=t.patience)] if select else []),
        logger=CSVLogger(run_dir, name="", version="logs"), enable_progress_bar=False, enable_model_summary=False,
        log_every_n_steps=max(1, min(5, batches)), num_sanity_val_steps=0, **dict(t.trainer),
    )
    trainer.fit(module, WindowDataModule(train_set, val_set, t.batch_size, t.num_workers), ckpt_path=t.resume)
    if not main:  # the checkpoint directory rank 0 made, which ModelCheckpoint broadcast in its setup
        run_dir = Path(checkpoint.dirpath).parent
    if not select:
        # EpochLog has logged the last epoch's val/score, which is this result's.
        last = trainer.callback_metrics.get("val/score")
        score = float(last) if last is not None else float("nan")
        return TrainResult(run_dir, Path(checkpoint.last_model_path), score)
    best_path = Path(checkpoint.best_model_path)
    best = checkpoint.best_model_score
    if best is None and best_path.is_file():
        # Spawned strategies return the path but not the score to this process: read it back.
        best = _checkpoint_score(best_path)
    best = float("nan") if best is None else float(best)
    if main:
        log(f"{prefix}: best val/score {best:.4f} -> {best_path}")
    return TrainResult(run_dir, best_path, best)


def _checkpoint_score(path: Path) -> float | None:
    """The monitored best score recorded by ModelCheckpoint inside a checkpoint file."""
    state = torch.load(path, map_location="cpu", weights_only=False)
    for callback in state.get("callbacks", {}).values():
        if isinstance(callback, dict) and callback.get("best_model_score") is not None:
            return float(callback["best_model_score"])
    return None


def _process_group() -> bool:
    """True while a distributed fit's process group is up (Lightning leaves it up after fit)."""
    return torch.distributed.is_available() and torch.distributed.is_initialized() \
        and torch.distributed.get_world_size() > 1


def predict_on_every_rank(checkpoint: str | Path, config: Config,
                          tracks: list[Track]) -> dict[str, dict[str, np.ndarray]] | None:
    """:func:`predict_frames` of ``tracks`` shared among the ranks of a distributed run: each
    rank predicts every ``world_size``-th track and rank 0 receives them all, in the order of
    ``tracks``; the other ranks get None. In one process: :func:`predict_frames`, in the main
    process only.

    This is how Lightning means prediction on several devices (each process predicts its part
    of the data, the parts are then written or gathered), rather than rank 0 predicting alone
    while the others wait: a wait long enough to predict a real fold would run past the
    process group's timeout (30 minutes) in the collectives the others are in by then (the
    next fit). Tracks are split whole, so no row is predicted twice (a ``DistributedSampler``
    would pad). Every rank calls this right after the same fit, whose process group it uses.
    """
    if not _process_group():
        return predict_frames(checkpoint, config, tracks) if is_main_process() else None
    rank, world = torch.distributed.get_rank(), torch.distributed.get_world_size()
    mine = predict_frames(checkpoint, config, tracks[rank::world])
    parts: list | None = [None] * world if rank == 0 else None
    torch.distributed.gather_object(mine, parts, dst=0)
    if parts is None:
        return None
    merged = {track_id: arrays for part in parts for track_id, arrays in part.items()}
    return {t.id: merged[t.id] for t in tracks}


# How long wait_for_main() holds the other ranks for rank 0's own work: hours, not the 30
# minutes of the fit's process group. ABAW_WAIT_FOR_MAIN_S (seconds) overrides it.
WAIT_FOR_MAIN = datetime.timedelta(hours=12)
_wait_group = None


def wait_for_main() -> None:
    """Hold every rank of a distributed run here until rank 0 arrives too (no-op without a
    process group, i.e. in one process or before the first fit).

    Work that only rank 0 does between two fits (tuning post-processing on all out-of-fold
    predictions, test predictions, submission files) would otherwise leave the other ranks
    waiting inside the next fit's collectives, which time out after the process group's 30
    minutes. They wait here instead, on a gloo group of their own whose timeout is
    :data:`WAIT_FOR_MAIN` (or ``ABAW_WAIT_FOR_MAIN_S`` seconds); gloo works beside an NCCL
    group, and a rank that died closes its connection, so the others stop at once rather
    than at the timeout. Ranks launched externally (torchrun, SLURM) are not connected before
    their first fit: until then this returns at once, and they wait for each other in that
    fit's rendezvous, under the process group's timeout.
    """
    global _wait_group
    if not _process_group():
        return
    if _wait_group is None:  # every rank gets here in the same order: creating it is collective
        _wait_group = torch.distributed.new_group(backend="gloo", timeout=wait_timeout())
    torch.distributed.barrier(group=_wait_group)


def wait_timeout() -> datetime.timedelta:
    """How long a rank waits for rank 0's work: ``ABAW_WAIT_FOR_MAIN_S`` seconds, else
    :data:`WAIT_FOR_MAIN`."""
    seconds = os.environ.get("ABAW_WAIT_FOR_MAIN_S")
    return datetime.timedelta(seconds=float(seconds)) if seconds else WAIT_FOR_MAIN


def predict_frames(checkpoint: str | Path, config: Config, tracks: list[Track], offset: int = 0,
                   batch_size: int = 32, features: bool = False) -> dict[str, dict[str, np.ndarray]]:
    """Per-track (T, output) predictions of a checkpoint: ``probabilities`` of the fusion model,
    ``fallback`` of the MLP (if trained), ``emotion_logits`` when a stream cached them, and
    ``present`` (T,) whether the first visual stream (the face) had input. A video-level task's
    videos get one row each (:func:`abaw.training.video.predict_videos`).

    Windows of ``train.window`` rows overlap by the model's ``context_rows`` on each side and
    each contributes its central rows (:func:`abaw.training.data.prediction_windows`), so a
    temporal model predicts every row as from the whole track and the result does not depend
    on where the windows start (``offset`` shifts them). Windows run in batches of
    ``batch_size`` on the device ``train.trainer.accelerator`` names.

    With ``features`` each frame track also gets ``view`` (T, D): the z rows of the model's
    ``linear_view`` (its last linear map's input, from ``forward_features``), from the same
    central window rows as its probabilities, and ``logits`` (T, C), the head's output those
    come from, both from one evaluation of the head (``head_through_view``: the fusion heads
    give ``forward_head``'s own output, so the probabilities are those of a plain run), so that
    test-time personalisation (:mod:`abaw.personalise`) sees exactly the embedding and the
    logits behind each probability row. Opt-in (classification heads): nothing else stores them.
    """
    from abaw.runtime import pick_device

    if get_task(config.train.task).level == "video":  # one row per video, from all its frames
        from abaw.training.video import predict_videos

        return predict_videos(checkpoint, config, tracks, batch_size, features)
    device = pick_device(str(config.train.trainer.get("accelerator", "cpu")))
    module = TaskModule.load_from_checkpoint(checkpoint, map_location="cpu").eval().to(device)
    labels = list(module.hparams["streams"])
    streams = open_streams(config, module.task.dataset, labels)
    check_fresh(config, module.task.dataset, streams, tracks)
    context = max(module.model.context_rows, module.fallback.context_rows if module.fallback_stream else 0)
    window = max(1, config.train.window)
    window = window if window > 2 * context else 2 * context + window

    return {track.id: predict_track(module, streams, track, window, context, offset, batch_size, device, features)
            for track in tracks}


def predict_track(module: TaskModule, streams: dict, track: Track, window: int, context: int, offset: int = 0,
                  batch_size: int = 32, device: torch.device | str = "cpu", features: bool = False
                  ) -> dict[str, np.ndarray]:
    """One frame-wise track's arrays of :func:`predict_frames` from a loaded ``module`` (eval
    mode, on ``device``) and its open ``streams``; ``window`` > 2 × ``context``."""
    from abaw.training.losses import to_probabilities

    rows = int(track.frames.max()) if track.labels is None else track.num_frames
    if track.labels is None:  # test tracks: shape-only labels so the dataset can window them
        track = Track(track.id, track.task, track.split, track.video, track.video_path, track.source,
                      np.arange(1, rows + 1), np.zeros((rows, module.task.columns), np.float32),
                      np.zeros((rows, module.task.columns), bool))
    windows = prediction_windows(rows, window, context, offset)
    dataset = WindowDataset([track], streams, min(window, rows), starts=[(0, start) for start, _, _ in windows])
    outputs: dict[str, np.ndarray] = {}
    with torch.inference_mode():
        for first in range(0, len(windows), batch_size):
            batch = torch.utils.data.default_collate([dataset[i] for i in range(first, min(first + batch_size,
                                                                                         len(windows)))])
            batch = {"rows": batch["rows"].to(device),
                     "streams": {k: v.to(device) for k, v in batch["streams"].items()},
                     "present": {k: v.to(device) for k, v in batch["present"].items()}}
            if features:  # the head's output with its linear view's z, both kept
                output, z = module.model.head_through_view(module.embed(batch))
                named = [("probabilities", output), ("fallback", module.fallback_output(batch)), ("view", z),
                         ("logits", output)]
            else:
                named = list(zip(("probabilities", "fallback"), module(batch)))
            for name, values in named:
                if values is None:
                    continue
                if name not in ("view", "logits"):
                    values = to_probabilities(module.task, values)
                values = values.float().cpu().numpy()
                target = outputs.setdefault(name, np.zeros((rows, values.shape[-1]), np.float32))
                for j, (start, keep_from, keep_to) in enumerate(windows[first:first + batch_size]):
                    target[keep_from:keep_to] = values[j, keep_from - start:keep_to - start]
    result = dict(outputs)
    visual = [s for s in streams.values() if s.modality == "visual"]
    result["present"] = (np.array(visual[0].store.read(track.id, "valid")[:rows], dtype=bool)  # a copy: no map held
                         if visual else np.ones(rows, dtype=bool))
    for stream in streams.values():
        if stream.store.file(track.id, "logits").exists():
            result["emotion_logits"] = np.array(stream.store.read(track.id, "logits")[:rows], dtype=np.float32)
    return result
