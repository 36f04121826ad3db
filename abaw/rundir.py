"""The cross-validation directory: what it holds, written and read here only.

```
<runs_dir>/<name>-cv-<task>/
    config.yaml, run.json      the configuration of the latest `abaw cv` call and its git commit
    fold<k>/done.json          written last: the fold's config hash, the digest of the features
                               it read, held-out score, checkpoint
    fold<k>/oof.npz            out-of-fold predictions, per track (keys <track>::<array>)
    fold<k>/checkpoints/       only the checkpoint the fold uses (its last epoch)
    fold<k>.training/          where fold k trains; it replaces fold<k>/ once finished
    postprocess.json           post-processing tuned on every fold's out-of-fold predictions
                               (personalised, when cv.json keeps a personalisation method)
    cv.json, report.md, *.png  the summary
    predictions-<split>.npz    fold-ensemble predictions (abaw predict)
```
A fold counts as finished for a configuration only when its ``done.json`` holds that
configuration's hash, so a directory never summarises or predicts with folds trained under
different settings: such folds are named, and retrained when asked for. ``abaw cv`` also
retrains a fold whose features were extracted again since it was trained. A fold is trained
beside its directory and takes its place only once finished, so a fit that fails (or a
configuration error) never costs a finished fold; replacing a fold removes the summary and
the post-processing, which were tuned on the old one.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np

from abaw.config import Config, load_run_config, make_run_dir
from abaw.data.records import DataError
from abaw.postprocess import PostParams
from abaw.tasks import get_task

Predictions = dict[str, dict[str, np.ndarray]]
SUMMARY_FILES = ("postprocess.json", "cv.json", "report.md")


def source_values(prediction: dict[str, np.ndarray], name: str | None) -> np.ndarray | None:
    """(T, K) probabilities (or values) of one source of a track's predictions: ``fusion``
    (the trained head), ``fallback`` (its MLP), ``emotion_logits`` (a pretrained classifier's
    cached logits, softmaxed); None if the track has no such source."""
    if name is None:
        return None
    if name == "fusion":
        return prediction["probabilities"]
    if name == "emotion_logits" and "emotion_logits" in prediction:
        logits = prediction["emotion_logits"].astype(np.float64)
        exp = np.exp(logits - logits.max(axis=1, keepdims=True))
        return exp / exp.sum(axis=1, keepdims=True)
    return prediction.get(name)


def config_hash(config: Config, folds=None) -> str:
    """Hash of everything that changes a fold's model (not where runs are written), the fold
    assignment ``folds`` (``abaw.folds.Folds``) included: rebuilt folds retrain every fold.

    Of the extractors, only the entries the head reads count (``head_features``: another
    configured extractor, a new stream for another task, leaves the folds done), and of the
    face sources only the task's dataset's. Whether those features were extracted again since
    a fold was trained is the features digest of its ``done.json``, not part of this hash.
    """
    from abaw.training.data import head_features  # imports torch: only where a hash is needed

    relevant = {k: getattr(config, k) for k in ("seed", "data", "folds", "train")}
    relevant["assignment"] = sorted(folds.videos.items()) if folds is not None else None
    relevant["features"] = {label: config.extract.features.get(label) for label in head_features(config)}
    relevant["faces"] = config.extract.faces.get(get_task(config.train.task).dataset)
    relevant["cache"] = config.extract.cache
    return hashlib.sha256(repr(relevant).encode()).hexdigest()[:16]


def save_predictions(path: Path, predictions: Predictions) -> None:
    """Per-track prediction arrays in one ``.npz`` (keys ``<track>::<name>``), atomically."""
    arrays = {f"{track}::{name}": value for track, result in predictions.items() for name, value in result.items()}
    with tempfile.NamedTemporaryFile("wb", dir=path.parent, prefix=f".{path.name}.", delete=False) as f:
        np.savez(f, **arrays)
    os.replace(f.name, path)


def load_predictions(path: Path) -> Predictions:
    """The per-track arrays :func:`save_predictions` wrote."""
    result: Predictions = {}
    with np.load(path) as data:
        for key in data.files:
            track, name = key.split("::")
            result.setdefault(track, {})[name] = data[key]
    return result


def _write_json(path: Path, value) -> None:
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as f:
        json.dump(value, f, indent=1)
    os.replace(f.name, path)


def _replace_directory(target: Path, new: Path) -> None:
    """Put directory ``new`` in the place of ``target`` (which may not exist): two renames, the
    old directory removed only once the new one is in place."""
    replaced = target.with_name(f"{target.name}.replaced")
    if replaced.exists():
        shutil.rmtree(replaced)
    if target.exists():
        os.replace(target, replaced)
    os.replace(new, target)
    shutil.rmtree(replaced, ignore_errors=True)


class CVDir:
    """One task's cross-validation directory (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @classmethod
    def for_config(cls, config: Config, create: bool = False) -> CVDir:
        """``<runs_dir>/<name>-cv-<task>/``; with ``create`` (main process only) made if needed
        and given the current ``config.yaml`` and ``run.json``."""
        cv = cls(Path(config.runs_dir) / f"{config.name}-cv-{config.train.task}")
        if create:
            cv.record(config)
        return cv

    def record(self, config: Config) -> None:
        """Make the directory if needed and give it ``config.yaml`` and ``run.json`` (main process only)."""
        make_run_dir(config, f"cv-{config.train.task}", path=self.path)

    def config(self) -> Config:
        """The configuration of the latest ``abaw cv`` call on this directory."""
        if not (self.path / "config.yaml").is_file():
            raise DataError(self.path, "not a CV directory (no config.yaml); run abaw cv first")
        return load_run_config(self.path)

    def fold_dir(self, k: int) -> Path:
        return self.path / f"fold{k}"

    def training_dir(self, k: int) -> Path:
        """Where fold ``k`` trains, beside its directory, which it replaces once finished."""
        return self.path / f"fold{k}.training"

    def done(self, k: int) -> dict | None:
        """Fold ``k``'s ``done.json`` (config hash, score, checkpoint), or None."""
        try:
            return json.loads((self.fold_dir(k) / "done.json").read_text())
        except FileNotFoundError:
            return None

    def status(self, folds: int, digest: str, features: str | None = None) -> tuple[list[int], list[int]]:
        """``(finished, stale)`` folds of ``range(folds)``: done under ``digest`` (and, when
        ``features`` is given, from the features of that digest: ``training.data.features_digest``),
        or done under another configuration or from features extracted again since."""
        finished, stale = [], []
        for k in range(folds):
            done = self.done(k)
            if done is not None:
                current = done["config"] == digest and features in (None, done.get("features"))
                (finished if current else stale).append(k)
        return finished, stale

    def finish_fold(self, k: int, digest: str, features: str, checkpoint: Path, score: float,
                    predictions: Predictions, *, trained: Path) -> None:
        """Record fold ``k``, trained in ``trained`` (:meth:`training_dir`): its out-of-fold
        predictions, then ``done.json`` (atomically) with the configuration's hash and the digest
        of the features it read; every other checkpoint of the fold and the now outdated summary
        are removed, and then ``trained`` takes the place of the fold's directory."""
        fold = self.fold_dir(k)
        save_predictions(trained / "oof.npz", predictions)
        for other in (trained / "checkpoints").glob("*.ckpt"):
            if other.resolve() != checkpoint.resolve():
                other.unlink()
        # Relative to the CV directory as the fold will lie in it, wherever it was trained.
        relative = f"{fold.name}/{checkpoint.resolve().relative_to(trained.resolve()).as_posix()}"
        _write_json(trained / "done.json", {"config": digest, "features": features, "score": score,
                                            "checkpoint": relative})
        for name in SUMMARY_FILES:
            (self.path / name).unlink(missing_ok=True)
        for old in self.path.glob("predictions-*.npz"):  # made by the models this fold replaces
            old.unlink()
        _replace_directory(fold, trained)

    def oof(self, k: int) -> Predictions:
        return load_predictions(self.fold_dir(k) / "oof.npz")

    def checkpoints(self, folds: int, digest: str, features: str | None = None) -> list[Path]:
        """Every fold's checkpoint, all trained under ``digest`` (and from ``features``, when given).

        Raises:
            DataError: naming the folds that are not finished or were trained under another
                configuration (or features), with the command that (re)trains them.
        """
        finished, stale = self.status(folds, digest, features)
        missing = [k for k in range(folds) if k not in finished]
        if missing:
            what = "not finished"
            if set(missing) <= set(stale):
                what = "trained under another configuration" + (" or from features extracted again since"
                                                                 if features is not None else "")
            raise DataError(self.path, f"fold(s) {', '.join(map(str, missing))} {what}; run abaw cv --config <config> "
                                       f"--folds {','.join(map(str, missing))} first")
        return [self.path / self.done(k)["checkpoint"] for k in range(folds)]

    def save_postprocess(self, params: PostParams) -> None:
        for old in self.path.glob("predictions-*.npz"):  # decided with the previous parameters
            old.unlink()
        _write_json(self.path / "postprocess.json", params.to_json())

    def postprocess(self) -> PostParams:
        path = self.path / "postprocess.json"
        if not path.exists():
            raise DataError(path, "no post-processing parameters; run abaw cv over every fold first")
        return PostParams.from_json(json.loads(path.read_text()))

    def save_summary(self, summary: dict) -> None:
        _write_json(self.path / "cv.json", summary)

    def summary(self) -> dict | None:
        """``cv.json`` as :meth:`save_summary` wrote it (fold keys as strings), or None."""
        path = self.path / "cv.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def predictions_path(self, split: str) -> Path:
        return self.path / f"predictions-{split}.npz"

    def save_predictions(self, split: str, predictions: Predictions) -> Path:
        path = self.predictions_path(split)
        save_predictions(path, predictions)
        return path

    def predictions(self, split: str) -> Predictions:
        path = self.predictions_path(split)
        if not path.exists():
            raise DataError(path, "no predictions; run abaw predict first")
        return load_predictions(path)
