"""``abaw predict``: the fold ensemble of a CV directory on a split's tracks, with the saved
post-processing (the submission files are written from its output by :mod:`abaw.submit`)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from abaw.cv import fold_views, personalised_predictions, track_output
from abaw.data import affwild2, load_tracks
from abaw.data.records import DataError
from abaw.folds import ensure_folds
from abaw.personalise import METHODS
from abaw.postprocess import apply
from abaw.rundir import CVDir, config_hash
from abaw.runtime import stderr_log
from abaw.score import normalise_split
from abaw.tasks import Task, get_task
from abaw.training.data import features_digest, head_features, open_streams
from abaw.training.train import predict_frames

AVERAGED = ("probabilities", "fallback")


def _log_odds(task: Task, p: np.ndarray) -> np.ndarray:
    """Probabilities -> logits: log-probabilities of classes (softmax), log-odds of labels."""
    if task.kind == "regression":
        return p
    p = np.clip(np.asarray(p, np.float64), 1e-7, 1 - 1e-7)
    return np.log(p) if task.kind == "multiclass" else np.log(p / (1 - p))


def _from_log_odds(task: Task, z: np.ndarray) -> np.ndarray:
    if task.kind == "regression":
        return z
    if task.kind == "multiclass":
        e = np.exp(z - z.max(axis=1, keepdims=True))
        return e / e.sum(axis=1, keepdims=True)
    return 1 / (1 + np.exp(-z))


def _identity(task: Task, values: np.ndarray) -> np.ndarray:
    return values


# How fold models are averaged: (into the averaged space, back to probabilities).
ENSEMBLES = {"probabilities": (_identity, _identity), "logits": (_log_odds, _from_log_odds)}


def split_name(name: str) -> str:
    """``test`` or the normalised name of a labelled split (``Validation_Set`` -> ``validation``)."""
    return "test" if name.lower() in ("test", "test_set") else normalise_split(name)


def warn_in_sample(split: str, log) -> None:
    """Say that a labelled split's predictions are in-sample: every fold model trained on train
    ∪ validation, so on those tracks it scores data it has seen."""
    if split != "test":
        log(f"warning: the fold models were trained on train and validation, {split} included: scores of "
            "these predictions are in-sample, not held out. The held-out estimate is the CV score (cv.json, "
            "report.md).")


def chosen_personalisation(summary: dict | None, log, where: Path | None = None) -> tuple[str | None, dict]:
    """The personalisation method ``abaw cv`` kept (``cv.json``: its nested mean over the folds
    above the model's own, on the argmax and once post-processed) and its parameters chosen on
    every fold, or ``(None, {})``; either way the log says which, so a submission's provenance
    is on record. A summary that chose a method without scoring it post-processed (written
    before that was scored) is refused: its ``postprocess.json`` was not tuned for it."""
    entry = (summary or {}).get("personalisation")
    if not entry:
        return None, {}
    method, post = entry.get("chosen"), entry.get("post")
    if method is None:
        if post:
            log(f"personalisation: none applied ({post['method']} gained on the argmax, not once post-processed: "
                f"{post['with']['mean']:.4f} vs {post['without']['mean']:.4f})")
        else:
            log(f"personalisation: none applied (no method beat {entry['without']['mean']:.4f} out of fold)")
        return None, {}
    if not post:
        raise DataError(where or Path("cv.json"), f"chooses personalisation {method} but was written before it was "
                        "scored post-processed; run abaw cv again with the same configuration (finished folds are "
                        "reused) to rewrite the summary and postprocess.json")
    result = entry["methods"][method]
    log(f"personalisation: {method} ({entry['mode']}), out of fold {result['mean']:.4f} vs "
        f"{entry['without']['mean']:.4f} without, post-processed {post['with']['mean']:.4f} vs "
        f"{post['without']['mean']:.4f}, parameters {result['params']}")
    return method, dict(result["params"])


def _no_tracks(root: str | Path, task: Task, split: str) -> str:
    """Why ``split`` has no tracks of ``task``: for an Aff-Wild2 test set without a template,
    where the template was looked for and under which names."""
    if split == "test" and task.template_key:  # a task whose test rows come from a template
        missing = affwild2.missing_template(affwild2.find_layout(root), task)
        if missing is not None:
            return missing
    return f"no {split} tracks for {task.name.upper()}"


def predict(run_dir: str | Path, split: str = "test", log=None) -> Path:
    """Average the fold models over ``split``'s tracks, apply ``postprocess.json`` and save
    ``predictions-<split>.npz`` (per track: averaged arrays and the decided ``values``).

    When ``cv.json`` names a personalisation method that gained out of fold, after
    post-processing as well as before, each fold model's probabilities are personalised per
    unit before the average (:func:`abaw.cv.personalised_predictions`), and ``postprocess.json``
    was tuned on the personalised out-of-fold probabilities, as CV scored them."""
    log = log or stderr_log
    cv = CVDir(run_dir)
    config = cv.config()
    task = get_task(config.train.task)
    split = split_name(split)
    tracks = load_tracks(config.data.root, task, splits=(split,))
    if not tracks:
        raise DataError(Path(config.data.root), _no_tracks(config.data.root, task, split))
    warn_in_sample(split, log)
    # Every fold trained under the configuration the directory holds and from the features the
    # cache holds now (as abaw cv checks them), or a refusal naming them.
    folds, trained = ensure_folds(config.data.root, task.dataset, config.folds_path, k=config.folds.k,
                                  seed=config.folds.seed)
    streams = open_streams(config, task.dataset, head_features(config))
    checkpoints = cv.checkpoints(config.folds.k, config_hash(config, folds), features_digest(streams, trained[task]))
    params = cv.postprocess()
    if config.cv.ensemble not in ENSEMBLES:
        raise ValueError(f"cv.ensemble={config.cv.ensemble!r}: choose one of {', '.join(ENSEMBLES)}")
    totals: dict[str, dict[str, np.ndarray]] = {}
    log(f"{task.name.upper()} {split}: {len(checkpoints)} fold models over {len(tracks)} tracks")
    method, method_params = chosen_personalisation(cv.summary(), log, cv.path / "cv.json")
    for k, checkpoint in enumerate(checkpoints):
        fold_predictions = predict_frames(checkpoint, config, tracks, features=method is not None)
        if method is not None:
            training = ([t for t in trained[task] if folds.fold_of(t) != k]
                        if METHODS[method].uses_source else [])
            fold_predictions = personalised_predictions(
                fold_predictions, fold_views(config, checkpoint, tracks, training, fold_predictions), method,
                method_params)
        for track_id, arrays in fold_predictions.items():
            entry = totals.setdefault(track_id, {k: v for k, v in arrays.items() if k not in AVERAGED})
            for name in AVERAGED:
                if name in arrays:
                    entry[name] = entry.get(name, 0.0) + ENSEMBLES[config.cv.ensemble][0](task, arrays[name])
    for arrays in totals.values():
        for name in AVERAGED:
            if name in arrays:
                arrays[name] = ENSEMBLES[config.cv.ensemble][1](task, arrays[name] / len(checkpoints))
    for arrays in totals.values():
        arrays["values"] = apply(task, params, track_output(arrays, config.cv.primary, config.cv.secondary))
    return cv.save_predictions(split, totals)
