"""``abaw cv``: K-fold cross-validation of one task's head, out-of-fold predictions, honest
post-processing scores and the tuned ``postprocess.json``.

The CV directory is stable (``<runs_dir>/<name>-cv-<task>/``): a fold whose ``done.json``
matches the current configuration is not retrained, so folds can run one at a time and a rerun
only does what is missing. Nothing about a held-out fold chooses anything applied to it: each
fold model is its last epoch (no early stopping or checkpoint picking on the held-out frames),
and the post-processed score of fold k uses parameters tuned on the other folds' out-of-fold
predictions only; the parameters saved for the test set are tuned on all of them.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import numpy as np

from abaw.config import Config, make_run_dir
from abaw.data import resolve_tasks
from abaw.data.records import DataError, Track
from abaw.folds import ensure_folds
from abaw.metrics import score
from abaw.postprocess import PostParams, TrackOutput, apply, tune
from abaw.report import write_report
from abaw.tasks import Task, get_task
from abaw.training.losses import decide
from abaw.training.train import predict_frames, train


def config_hash(config: Config) -> str:
    """Hash of everything that changes a fold's model (not where runs are written)."""
    relevant = {k: getattr(config, k) for k in ("seed", "data", "folds", "train")}
    relevant["features"] = config.extract.features
    relevant["cache"] = config.extract.cache
    return hashlib.sha256(repr(relevant).encode()).hexdigest()[:16]


def cv_dir(config: Config) -> Path:
    return Path(config.runs_dir) / f"{config.name}-cv-{config.train.task}"


def save_predictions(path: Path, predictions: dict[str, dict[str, np.ndarray]]) -> None:
    """Per-track prediction arrays in one ``.npz`` (keys ``<track>::<name>``)."""
    arrays = {f"{track}::{name}": value for track, result in predictions.items() for name, value in result.items()}
    np.savez(path, **arrays)


def load_predictions(path: Path) -> dict[str, dict[str, np.ndarray]]:
    result: dict[str, dict[str, np.ndarray]] = {}
    with np.load(path) as data:
        for key in data.files:
            track, name = key.split("::")
            result.setdefault(track, {})[name] = data[key]
    return result


def track_output(prediction: dict[str, np.ndarray], primary: str, secondary: str | None) -> TrackOutput:
    """The post-processing input of one track from its prediction arrays."""

    def source(name: str | None) -> np.ndarray | None:
        if name is None:
            return None
        if name == "fusion":
            return prediction["probabilities"]
        if name == "emotion_logits" and "emotion_logits" in prediction:
            logits = prediction["emotion_logits"].astype(np.float64)
            exp = np.exp(logits - logits.max(axis=1, keepdims=True))
            return exp / exp.sum(axis=1, keepdims=True)
        if name in prediction:
            return prediction[name]
        return None

    first = source(primary)
    if first is None:
        raise DataError(Path(primary), f"no {primary!r} predictions: is it trained or extracted?")
    return TrackOutput(first, prediction["present"].astype(bool), source(secondary))


def run_folds(config: Config, folds_to_run: list[int] | None = None, log=None) -> Path:
    """Train (or reuse) the requested folds and store their out-of-fold predictions."""
    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    task = resolve_tasks(config.data.root, [config.train.task])[0]
    folds, tracks = ensure_folds(config.data.root, task.dataset, config.folds_path, k=config.folds.k,
                                 seed=config.folds.seed)
    run_dir = make_run_dir(config, f"cv-{task.name}", path=cv_dir(config))
    wanted = list(range(folds.k)) if folds_to_run is None else folds_to_run
    digest = config_hash(config)
    for k in wanted:
        if not 0 <= k < folds.k:
            raise ValueError(f"fold {k} outside 0..{folds.k - 1}")
        fold_dir = run_dir / f"fold{k}"
        done = fold_dir / "done.json"
        if done.exists() and json.loads(done.read_text()).get("config") == digest:
            log(f"{task.name.upper()} fold {k}: finished earlier, reused")
            continue
        fold_dir.mkdir(exist_ok=True)
        result = train(config, fold_dir, fold=k, log=log, select=False)
        held_out = [t for t in tracks[task] if folds.fold_of(t) == k]
        predictions = predict_frames(result.best_checkpoint, config, held_out)
        save_predictions(fold_dir / "oof.npz", predictions)
        # The number report.md shows for this fold ("model"): the configured primary source over
        # the held-out rows, pooled; Lightning's val/score is a running metric of the fusion model.
        held_out_score = _score(task, [t.labels for t in held_out],
                                [decide(task, track_output(predictions[t.id], config.cv.primary,
                                                           config.cv.secondary).primary) for t in held_out],
                                [t.valid for t in held_out])
        log(f"{task.name.upper()} fold {k}: held-out score {held_out_score:.4f} ({config.cv.primary}, as in report.md)")
        done.write_text(json.dumps({"config": digest, "score": held_out_score,
                                    "checkpoint": str(result.best_checkpoint.resolve().relative_to(run_dir.resolve()))},
                                   indent=1))
    return run_dir


def finished_folds(run_dir: Path, k: int) -> list[int]:
    return [f for f in range(k) if (run_dir / f"fold{f}" / "done.json").exists()]


def summarise(config: Config, run_dir: Path, log=None) -> dict:
    """Score every finished fold before and after post-processing, tune ``postprocess.json``
    on all out-of-fold predictions, and return the summary written to ``cv.json``."""
    task = get_task(config.train.task)
    folds, tracks = ensure_folds(config.data.root, task.dataset, config.folds_path, k=config.folds.k,
                                 seed=config.folds.seed)
    done = finished_folds(run_dir, folds.k)
    if len(done) < 2:
        raise DataError(run_dir, f"{len(done)} finished fold(s); post-processing needs at least 2")
    per_fold: dict[int, tuple[list[Track], list[TrackOutput]]] = {}
    for k in done:
        predictions = load_predictions(run_dir / f"fold{k}" / "oof.npz")
        held_out = [t for t in tracks[task] if folds.fold_of(t) == k]
        per_fold[k] = (held_out, [track_output(predictions[t.id], config.cv.primary, config.cv.secondary)
                                  for t in held_out])
    summary, pooled, final = nested_postprocess(task, per_fold)
    (run_dir / "postprocess.json").write_text(json.dumps(final.to_json(), indent=1))
    summary["postprocess"] = final.to_json()
    (run_dir / "cv.json").write_text(json.dumps(summary, indent=1))
    write_report(task, run_dir, summary, pooled, per_fold)
    return summary


def nested_postprocess(task: Task, per_fold: dict[int, tuple[list[Track], list[TrackOutput]]]
                       ) -> tuple[dict, dict, PostParams]:
    """Per-fold scores before and after post-processing, where fold k's parameters are tuned
    on the other folds only; and the parameters tuned on every fold, for the test set.

    Returns ``(summary, pooled, final)``: summary holds ``folds`` {k: {raw, post}}, ``raw`` and
    ``post`` mean/std, ``pooled_raw``/``pooled_post`` value and parts; pooled holds the
    per-track labels, valid masks and decisions.
    """
    summary: dict = {"task": task.name, "folds": {}}
    pooled: dict[str, list] = {"labels": [], "valid": [], "raw": [], "post": []}
    for k, (held_out, outputs) in per_fold.items():
        params = tune(task.name, *_flatten([per_fold[other] for other in per_fold if other != k]))
        labels, valid = [t.labels for t in held_out], [t.valid for t in held_out]
        raw = [decide(task, o.primary) for o in outputs]
        post = [apply(task, params, o) for o in outputs]
        summary["folds"][k] = {"raw": _score(task, labels, raw, valid), "post": _score(task, labels, post, valid)}
        for name, values in (("labels", labels), ("valid", valid), ("raw", raw), ("post", post)):
            pooled[name].extend(values)
    for stage in ("raw", "post"):
        values = np.array([f[stage] for f in summary["folds"].values()])
        summary[stage] = {"mean": float(values.mean()), "std": float(values.std())}
        result = score(task, np.concatenate(pooled["labels"]), np.concatenate(pooled[stage]),
                       np.concatenate(pooled["valid"]))
        summary[f"pooled_{stage}"] = {"value": result.value, "parts": result.parts}
    final = tune(task.name, *_flatten(list(per_fold.values())))
    return summary, pooled, final


def _flatten(groups) -> tuple[list[TrackOutput], list[np.ndarray], list[np.ndarray]]:
    outputs, labels, valid = [], [], []
    for held_out, fold_outputs in groups:
        outputs.extend(fold_outputs)
        labels.extend(t.labels for t in held_out)
        valid.extend(t.valid for t in held_out)
    return outputs, labels, valid


def _score(task: Task, labels, decisions, valid) -> float:
    return score(task, np.concatenate(labels), np.concatenate(decisions), np.concatenate(valid)).value


def run_cv(config: Config, folds_to_run: list[int] | None = None, log=None) -> tuple[Path, dict | None]:
    """``abaw cv``: the requested folds, then the summary once at least two folds exist."""
    run_dir = run_folds(config, folds_to_run, log)
    k = config.folds.k
    if len(finished_folds(run_dir, k)) < k:
        return run_dir, None
    return run_dir, summarise(config, run_dir, log)


def load_postprocess(run_dir: Path) -> PostParams:
    path = Path(run_dir) / "postprocess.json"
    if not path.exists():
        raise DataError(path, "no post-processing parameters; run abaw cv over every fold first")
    return PostParams.from_json(json.loads(path.read_text()))
