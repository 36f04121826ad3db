"""``abaw cv``: K-fold cross-validation of one task's head, out-of-fold predictions, honest
post-processing scores and the tuned ``postprocess.json``.

The CV directory is stable (``<runs_dir>/<name>-cv-<task>/``): a fold whose ``done.json``
matches the current configuration and the features cached now is not retrained, so folds can
run one at a time and a rerun only does what is missing. No parameter applied to a held-out
fold is chosen on it: each fold model is its last epoch (no early stopping or checkpoint
picking on the held-out frames), and the post-processed score of fold k uses parameters tuned
on the other folds' out-of-fold predictions only; the parameters saved for the test set are
tuned on all of them. Test-time personalisation (EXPR, A/H) is scored the same way: fold k's
parameters of each method are those best on the other folds (``cv.json`` "personalisation").
Which method is applied to the test set, though, is decided on every fold's nested score, so
the score of the method kept is a selected figure (see :func:`personalised_postprocess`).
"""

from __future__ import annotations

import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from abaw.config import SOURCES, Config, ConfigError, is_main_process
from abaw.data import resolve_tasks
from abaw.data.records import DataError, Track
from abaw.folds import absent_from_training, absent_lines, ensure_folds
from abaw.metrics import score
from abaw.personalise import METHODS, LinearView, SourceBank, build_source, param_grid, personalise, views_of_rows
from abaw.postprocess import PostParams, TrackOutput, apply, tune
from abaw.report import write_report
from abaw.rundir import CVDir, config_hash, source_values
from abaw.runtime import stderr_log
from abaw.tasks import Task, get_task
from abaw.training.data import check_fresh, features_digest, head_features, open_streams
from abaw.training.losses import decide
from abaw.training.train import check_fit, predict_frames, predict_on_every_rank, train


def track_output(prediction: dict[str, np.ndarray], primary: str, secondary: str | None) -> TrackOutput:
    """The post-processing input of one track from its prediction arrays."""
    first = source_values(prediction, primary)
    if first is None:
        raise DataError(Path(primary), f"no {primary!r} predictions: is it trained or extracted?")
    return TrackOutput(first, prediction["present"].astype(bool), source_values(prediction, secondary))


def source_scores(task: Task, held_out: dict[int, list[Track]], oof: dict[int, dict]) -> dict[str, dict]:
    """Per fold, mean and std of the official score of each source every held-out track has,
    decided without post-processing: ``{source: {"folds": {k: score}, "mean", "std"}}``."""
    scores = {}
    for name in SOURCES:
        folds = {}
        for k, tracks in held_out.items():
            values = [source_values(oof[k][t.id], name) for t in tracks]
            # A source of another shape (an emotion classifier's 8 logits beside AU labels) is
            # not a prediction of this task.
            if any(v is None or v.shape[1] != t.labels.shape[1] * (task.output_size if task.kind == "multiclass"
                                                                    else 1) for v, t in zip(values, tracks)):
                break
            folds[k] = _score(task, [t.labels for t in tracks], [decide(task, v) for v in values],
                              [t.valid for t in tracks])
        else:
            array = np.array(list(folds.values()))
            scores[name] = {"folds": folds, "mean": float(array.mean()), "std": float(array.std())}
    return scores


def run_folds(config: Config, folds_to_run: list[int] | None = None, log=None) -> tuple[CVDir, str, str]:
    """Train the requested folds (default all) that are not finished under this configuration,
    and store their out-of-fold predictions; a fold finished under it, from the features cached
    now, is reused. Returns the CV directory, the configuration's hash (folds included) and the
    digest of the features the folds read (``abaw.training.data.features_digest``).

    In a distributed run every rank calls this (Lightning's ``ddp`` launcher, torchrun and
    SLURM all run the command once per rank). Only rank 0 makes, cleans and writes
    directories: the others write nothing in a fit (Lightning saves checkpoints and logs from
    rank 0) and never touch a fold directory, so they need not wait for one to exist. After
    each fit every rank predicts its share of the held-out tracks and rank 0 gathers and
    records them (:func:`abaw.training.train.predict_on_every_rank`), as Lightning means
    multi-device prediction: no rank waits in the next fit's collectives, whose timeout a
    held-out fold of real length predicted by rank 0 alone could run past.
    """
    log = log or stderr_log
    task = resolve_tasks(config.data.root, [config.train.task])[0]
    # Everything a fit builds first is built here, before the CV directory is touched: a typo
    # costs no finished fold.
    streams = open_streams(config, task.dataset, head_features(config))
    check_fit(config, streams)
    folds, tracks = ensure_folds(config.data.root, task.dataset, config.folds_path, k=config.folds.k,
                                 seed=config.folds.seed)
    main = is_main_process()
    wanted = list(range(folds.k)) if folds_to_run is None else folds_to_run
    for k in wanted:
        if not 0 <= k < folds.k:
            raise ValueError(f"fold {k} outside 0..{folds.k - 1}")
    digest = config_hash(config, folds)
    features = features_digest(streams, tracks[task])
    cv = CVDir.for_config(config)
    finished, stale = cv.status(folds.k, digest, features)
    if any(k in finished for k in wanted):
        # A reused fold reads nothing, but its features must still be those of the dataset as it
        # is now, as training them would require.
        check_fresh(config, task.dataset, streams, tracks[task])
    if main:
        cv.record(config)
    for k in wanted:
        if k in finished:
            log(f"{task.name.upper()} fold {k}: finished earlier, reused")
            continue
        if k in stale:
            why = ("its features were extracted again since" if cv.done(k)["config"] == digest
                   else "trained under another configuration")
            log(f"{task.name.upper()} fold {k}: {why}, training again")
        # Trained beside the fold's directory, which it replaces only once finished
        # (CVDir.finish_fold): a fit that fails leaves the fold as it was.
        training_dir = cv.training_dir(k)
        if main:
            if training_dir.exists() and config.train.resume is None:
                shutil.rmtree(training_dir)  # what an interrupted fit left: checkpoints, logs
            training_dir.mkdir(exist_ok=True)
        result = train(config, training_dir, fold=k, log=log, select=False)
        held_out = [t for t in tracks[task] if folds.fold_of(t) == k]
        predictions = predict_on_every_rank(result.best_checkpoint, config, held_out)
        if predictions is None:  # a rank other than 0: rank 0 records the fold
            continue
        # The number report.md shows for this fold ("model"): the configured primary source over
        # the held-out rows, pooled; Lightning's val/score is a running metric of the fusion model.
        held_out_score = _score(task, [t.labels for t in held_out],
                                [decide(task, track_output(predictions[t.id], config.cv.primary,
                                                           config.cv.secondary).primary) for t in held_out],
                                [t.valid for t in held_out])
        log(f"{task.name.upper()} fold {k}: {config.train.epochs} epochs on {len(tracks[task]) - len(held_out)} "
            f"tracks, held-out score {held_out_score:.4f} over {len(held_out)} ({SOURCES[config.cv.primary]}, "
            "as in report.md)")
        cv.finish_fold(k, digest, features, result.best_checkpoint, held_out_score, predictions,
                       trained=training_dir)
    return cv, digest, features


def summarise(config: Config, cv: CVDir, log=None, features: str | None = None) -> dict:
    """Score every fold before and after post-processing, tune ``postprocess.json`` on all
    out-of-fold predictions, and return the summary written to ``cv.json``. Every fold must be
    finished under this configuration (and from ``features``, the digest :func:`run_folds`
    returns, when given).

    For a classification task of people (EXPR, A/H) it also scores test-time personalisation
    (:mod:`abaw.personalise`) of the fusion head, nested like post-processing
    (:func:`nested_personalisation`): each fold model predicts its held-out tracks once more
    for their embeddings, and its training tracks too when a listed method uses a source bank
    (``cap``). When a method is kept (:func:`personalised_postprocess`), ``postprocess.json``
    is tuned on the personalised out-of-fold predictions."""
    log = log or stderr_log
    task = get_task(config.train.task)
    folds, tracks = ensure_folds(config.data.root, task.dataset, config.folds_path, k=config.folds.k,
                                 seed=config.folds.seed)
    checkpoints = cv.checkpoints(folds.k, config_hash(config, folds), features)
    per_fold: dict[int, tuple[list[Track], list[TrackOutput]]] = {}
    oof = {k: cv.oof(k) for k in range(folds.k)}
    for k in range(folds.k):
        held_out = [t for t in tracks[task] if folds.fold_of(t) == k]
        per_fold[k] = (held_out, [track_output(oof[k][t.id], config.cv.primary, config.cv.secondary)
                                  for t in held_out])
    summary, pooled, final = nested_postprocess(task, per_fold, config.cv.search)
    summary["primary"] = config.cv.primary
    # A class a fold's model never saw scores 0 there: said with the scores, not left to be guessed.
    absent = absent_from_training(task, folds, tracks[task])
    summary["absent_from_training"] = {str(k): names for k, names in absent.items()}
    for line in absent_lines(task, absent):
        log(line)
    # The secondary source the decisions could fall back on: the configured one, if the folds predicted it.
    summary["secondary"] = config.cv.secondary if any(o.secondary is not None for _, outputs in per_fold.values()
                                                      for o in outputs) else None
    if personalised(task) and config.cv.personalise:  # EXPR, A/H
        scored = score_personalisation(config, task, checkpoints, folds, tracks[task], log)
        if scored is not None:
            summary["personalisation"], views = scored
            final = personalised_postprocess(config, task, summary["personalisation"], views, oof, per_fold,
                                             summary["post"], log) or final
    summary["sources"] = source_scores(task, {k: held for k, (held, _) in per_fold.items()}, oof)
    cv.save_postprocess(final)
    summary["postprocess"] = final.to_json()
    cv.save_summary(summary)
    write_report(task, cv.path, summary, pooled, per_fold)
    return summary


def nested_postprocess(task: Task, per_fold: dict[int, tuple[list[Track], list[TrackOutput]]],
                       search: dict | None = None) -> tuple[dict, dict, PostParams]:
    """Per-fold scores before and after post-processing, where fold k's parameters are tuned
    on the other folds only; and the parameters tuned on every fold, for the test set.

    Returns ``(summary, pooled, final)``: summary holds ``folds`` {k: {raw, post}}, ``raw`` and
    ``post`` mean/std, ``pooled_raw``/``pooled_post`` value and parts; pooled holds the
    per-track labels, valid masks and decisions.
    """
    summary: dict = {"task": task.name, "folds": {}}
    pooled: dict[str, list] = {"labels": [], "valid": [], "raw": [], "post": []}
    for k, (held_out, outputs) in per_fold.items():
        params = tune(task.name, *_flatten([per_fold[other] for other in per_fold if other != k]), search)
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
    final = tune(task.name, *_flatten(list(per_fold.values())), search)
    return summary, pooled, final


# ----------------------------------------------------------------- test-time personalisation

@dataclass(frozen=True)
class FoldViews:
    """What personalising one fold needs: its held-out units (a unit is what one personalisation
    call adapts to, :func:`personalisation_units`: a frame-wise track, or an A/H participant's
    videos), each unit's linear view through the fold's own model (its tracks' rows in order)
    and face-present mask, and the ``cap`` source bank built from the fold model's views of its
    own training tracks (never of the held-out ones)."""

    units: list[tuple[Track, ...]]
    views: list[LinearView]
    masks: list[torch.Tensor]
    source: SourceBank | None

    def labels(self) -> list[np.ndarray]:
        """Per unit the (rows, C) labels of its tracks, in view order."""
        return [np.concatenate([t.labels for t in unit]) for unit in self.units]

    def valid(self) -> list[np.ndarray]:
        """Per unit the (rows, C) valid masks of its tracks, in view order."""
        return [np.concatenate([t.valid for t in unit]) for unit in self.units]


def person_of(track: Track) -> str:
    """Who a track shows, as far as the dataset names it: a BAH video's participant, else the
    Aff-Wild2 recording its name shows it was cut from (``affwild2.source_name``)."""
    from abaw.data.affwild2 import source_name

    participant = getattr(track, "participant", None)
    return participant if participant is not None else source_name(track.video)


def personalisation_units(tracks: list[Track]) -> list[tuple[Track, ...]]:
    """The units personalisation adapts to, each reset before the next: every frame-wise track
    alone (a track is one person's frames), and per participant the videos of a video-level task
    (a video is one row, its embedding: one video alone leaves nothing to adapt from)."""
    if not tracks or getattr(tracks[0], "participant", None) is None:
        return [(track,) for track in tracks]
    by_person: dict[str, list[Track]] = {}
    for track in tracks:
        by_person.setdefault(person_of(track), []).append(track)
    return [tuple(by_person[person]) for person in sorted(by_person)]


def personalised(task: Task) -> bool:
    """Whether test-time personalisation applies to ``task``: a classification of people, EXPR
    and A/H (VD labels scenes; VA, AU and EMI have no classes to put supports under)."""
    return task.kind in ("multiclass", "binary") and task.dataset != "dvd"


def class_indices(track: Track) -> np.ndarray:
    """(T,) class index of each row of a classification track, -1 where it has no label."""
    return np.where(track.valid[:, 0], track.labels[:, 0], -1).astype(np.int64)


def fold_views(config: Config, checkpoint: Path, held_out: list[Track], training: list[Track],
               predicted: dict[str, dict[str, np.ndarray]] | None = None) -> FoldViews:
    """One fold's :class:`FoldViews`: the linear-view rows of every track that
    :func:`~abaw.training.train.predict_frames` keeps with ``features=True`` (the same windows
    as the out-of-fold probabilities; a video's one row at video level), with the checkpoint's
    last linear map; ``predicted`` may already hold some tracks' arrays (with ``view`` and
    ``logits``), which are not predicted again. A track may be both held out and trained on
    (in-sample prediction): its rows serve both. The source bank groups the training tracks by
    person (:func:`person_of`); no training tracks, no source bank (``cap`` then runs without)."""
    from abaw.training.video import module_class

    model = module_class(get_task(config.train.task)).load_from_checkpoint(checkpoint, map_location="cpu").eval().model
    predicted = dict(predicted or {})
    missing = [t for t in held_out + training if not {"view", "logits"} <= set(predicted.get(t.id, {}))]
    if missing:
        predicted.update(predict_frames(checkpoint, config, missing, features=True))

    def joined(unit: tuple[Track, ...], name: str) -> torch.Tensor:  # a one-track unit's array is shared, not copied
        arrays = [predicted[t.id][name] for t in unit]
        return torch.from_numpy(arrays[0] if len(arrays) == 1 else np.concatenate(arrays))

    def views_of(units: list[tuple[Track, ...]]) -> list[LinearView]:
        return views_of_rows(model, [joined(u, "view") for u in units], [joined(u, "logits") for u in units])

    source = None
    if training:
        trained = views_of([(t,) for t in training])
        source = build_source([v.z for v in trained], [torch.from_numpy(class_indices(t)) for t in training],
                              [person_of(t) for t in training], trained[0].weight.shape[0])
    units = personalisation_units(held_out)
    masks = [torch.from_numpy(np.concatenate([predicted[t.id]["present"] for t in unit]).astype(bool)) for unit in units]
    return FoldViews(units, views_of(units), masks, source)


def personalised_predictions(predictions: dict[str, dict[str, np.ndarray]], views: FoldViews, method: str,
                             params: dict) -> dict[str, dict[str, np.ndarray]]:
    """One fold model's predictions of ``views``' tracks with ``probabilities`` replaced by those
    of its personalised logits (offline, per unit: a track, or an A/H participant's videos;
    face-present frames only in the caches), as CV scores it and ``predict`` applies it. The
    other arrays (the fallback MLP's included) stay the model's own, ``view`` and ``logits``
    (what personalisation read, not predictions) are dropped, and a one-logit head (A/H) keeps
    one probability, class 1's."""
    out = {track_id: {name: a for name, a in arrays.items() if name not in ("view", "logits")}
           for track_id, arrays in predictions.items()}
    adapted = personalise(method, views.views, params, source=views.source, masks=views.masks)
    for unit, logits in zip(views.units, adapted):
        probabilities = torch.softmax(logits.double(), dim=-1).float().numpy()
        start = 0
        for track in unit:
            arrays = out[track.id]
            rows = len(arrays["probabilities"])
            kept = probabilities[start:start + rows]
            arrays["probabilities"] = kept[:, 1:] if arrays["probabilities"].shape[1] == 1 else kept
            start += rows
        if start != len(probabilities):
            raise ValueError(f"personalised_predictions: the view of {unit[0].id} has {len(probabilities)} rows, "
                             f"its predictions {start}")
    return out


def score_personalisation(config: Config, task: Task, checkpoints: list[Path], folds, tracks: list[Track],
                          log) -> tuple[dict, dict[int, FoldViews]] | None:
    """The ``"personalisation"`` entry of ``cv.json`` (:func:`nested_personalisation`) for a
    classification task, logged with its cost, and the fold views it was scored on; None,
    logged, where it does not apply:
    the primary source is not the fusion head it adapts, or the model has no exact linear view.
    A fold's training tracks are predicted only when a listed method uses a source bank."""
    name = task.name.upper()
    if config.cv.primary != "fusion":
        log(f"{name}: personalisation not scored: it adapts the fusion head, and the primary source is "
            f"{config.cv.primary}")
        return None
    started = time.perf_counter()
    source = any(METHODS[m].uses_source for m in config.cv.personalise)
    try:
        views = {k: fold_views(config, checkpoint, [t for t in tracks if folds.fold_of(t) == k],
                               [t for t in tracks if folds.fold_of(t) != k] if source else [])
                 for k, checkpoint in enumerate(checkpoints)}
    except (NotImplementedError, ValueError) as error:  # a model without an exact linear view
        log(f"{name}: personalisation not scored: {error}")
        return None
    entry = nested_personalisation(personalisation_scores(task, views, ("none", *config.cv.personalise)))
    entry["unit"] = "participant" if task.level == "video" else "track"
    log(f"{name} personalisation (offline, parameters chosen on the other folds): without "
        f"{entry['without']['mean']:.4f}; " + "; ".join(f"{m} {r['mean']:.4f} ({r['gain']:+.4f})"
                                                      for m, r in entry["methods"].items())
        + f"; {time.perf_counter() - started:.1f} s")
    return entry, views


def personalised_postprocess(config: Config, task: Task, entry: dict, views: dict[int, FoldViews],
                             oof: dict[int, dict], per_fold: dict[int, tuple[list[Track], list[TrackOutput]]],
                             without: dict, log) -> PostParams | None:
    """Score the chosen personalisation as ``predict`` runs it, post-processing included: fold
    k's held-out tracks personalised with the parameters chosen on the other folds, then
    post-processed with parameters tuned on the other folds' personalised predictions
    (:func:`nested_postprocess`). Records ``entry["post"]`` (mean ± std with it, ``without``
    the plain post-processed ones, the gain); the method stays ``chosen`` only if it gains
    there too, since the submission is post-processed. Returns the post-processing tuned on
    every fold's predictions personalised with the parameters ``predict`` applies (those
    chosen on every fold), for ``postprocess.json``, or None when nothing is chosen.

    What is shared between folds, and so not nested: fold j's personalisation parameters,
    chosen on the folds other than j, saw fold k's labels, so fold k's post-processing is tuned
    on predictions one selection step away from its own labels; and which method is scored
    here, and whether it is kept, are decided on the mean over every fold. The "with" score of
    a kept method is therefore a selected figure, slightly optimistic; the per-fold parameters
    of both steps are nested."""
    method = entry["chosen"]
    if method is None:
        return None

    def personalised_folds(params_of) -> dict[int, tuple[list[Track], list[TrackOutput]]]:
        out = {}
        for k, (held_out, _) in per_fold.items():
            arrays = personalised_predictions({t.id: oof[k][t.id] for t in held_out}, views[k], method, params_of(k))
            out[k] = (held_out, [track_output(arrays[t.id], config.cv.primary, config.cv.secondary) for t in held_out])
        return out

    nested = entry["methods"][method]["folds"]
    result, _, _ = nested_postprocess(task, personalised_folds(lambda k: nested[k]["params"]), config.cv.search)
    gain = result["post"]["mean"] - without["mean"]
    entry["post"] = {"method": method, "without": without, "with": result["post"],
                     "folds": {k: f["post"] for k, f in result["folds"].items()}, "gain": gain}
    log(f"{task.name.upper()} {method} then post-processing: {result['post']['mean']:.4f} vs {without['mean']:.4f} "
        f"post-processed without it ({gain:+.4f})" + ("" if gain > 0 else f"; {method} is not applied to the test set"))
    if gain <= 0:
        entry["chosen"] = None
        return None
    applied = entry["methods"][method]["params"]  # what predict applies: chosen on every fold
    return tune(task.name, *_flatten(personalised_folds(lambda k: applied).values()), config.cv.search)


def personalisation_scores(task: Task, folds: dict[int, FoldViews],
                           methods=METHODS) -> dict[str, list[tuple[dict, dict[int, float]]]]:
    """``{method: [(params, {fold: score}), ...]}`` for every parameter set of
    :func:`~abaw.personalise.param_grid`: each held-out track personalised on its own (as
    ``abaw predict`` would a test track; offline, as in the challenge), its argmax scored with
    the task metric pooled over the fold's frames. ``none`` is the model's own argmax."""
    table: dict[str, list[tuple[dict, dict[int, float]]]] = {}
    for method in methods:
        table[method] = []
        for params in param_grid(method):
            fold_scores = {}
            for k, fold in folds.items():
                decisions = [logits.argmax(dim=-1).numpy()[:, None] for logits in
                             personalise(method, fold.views, params, source=fold.source, masks=fold.masks)]
                fold_scores[k] = _score(task, fold.labels(), decisions, fold.valid())
            table[method].append((params, fold_scores))
    return table


def _best(candidates: list[tuple[dict, dict[int, float]]], folds) -> tuple[dict, dict[int, float]]:
    """The candidate of highest mean score over ``folds`` (the first of equals: grid order)."""
    return max(candidates, key=lambda c: np.mean([c[1][j] for j in folds]))


def nested_personalisation(table: dict[str, list[tuple[dict, dict[int, float]]]], mode: str = "offline") -> dict:
    """The ``"personalisation"`` entry of ``cv.json`` from :func:`personalisation_scores`.

    Fold k's score of a method uses the parameters that score best on the other folds only,
    exactly as ``postprocess`` is tuned: a parameter set that happens to suit fold k's people
    cannot be picked for fold k by fold k. ``without`` is the model's own argmax; per method
    ``params`` are chosen on every fold (for the test set), ``gain`` is the nested mean minus
    the mean without; ``chosen`` names the method of largest positive gain, or None: the
    candidate for ``abaw predict``, which :func:`personalised_postprocess` keeps only if it
    still gains once post-processed.
    """
    without = table["none"][0][1]
    folds = sorted(without)
    entry: dict = {"mode": mode, "without": _mean_std(without), "methods": {}, "chosen": None}
    best_gain = 0.0
    for method, candidates in table.items():
        if method == "none":
            continue
        per_fold = {}
        for k in folds:
            others = [j for j in folds if j != k] or folds  # one fold: nothing else to choose on
            params, scores = _best(candidates, others)
            per_fold[k] = {"score": scores[k], "params": params}
        result = _mean_std({k: f["score"] for k, f in per_fold.items()})
        result["folds"] = per_fold
        result["params"] = _best(candidates, folds)[0]
        result["gain"] = result["mean"] - entry["without"]["mean"]
        entry["methods"][method] = result
        if result["gain"] > best_gain:
            entry["chosen"], best_gain = method, result["gain"]
    return entry


def _mean_std(folds: dict[int, float]) -> dict:
    values = np.array(list(folds.values()))
    return {"folds": dict(folds), "mean": float(values.mean()), "std": float(values.std())}


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
    """``abaw cv``: the requested folds, then the summary once every fold is finished under
    this configuration (folds finished under another one are named in the log)."""
    log = log or stderr_log
    unknown = [m for m in config.cv.personalise if m not in METHODS or m == "none"]
    if unknown:  # refused before any fold trains, not after
        raise ConfigError(f"cv.personalise: unknown method(s) {', '.join(map(str, unknown))}; valid: "
                          f"{', '.join(m for m in METHODS if m != 'none')} (an empty list scores none)")
    cv, digest, features = run_folds(config, folds_to_run, log)
    if not is_main_process():
        return cv.path, None
    finished, stale = cv.status(config.folds.k, digest, features)
    if len(finished) < config.folds.k:
        if stale:
            names = ",".join(map(str, stale))
            log(f"fold(s) {names} of {cv.path} were trained under another configuration or from features "
                f"extracted again since: they are not summarised with this one; run abaw cv --config <this config> "
                f"--folds {names} (or without --folds)")
        return cv.path, None
    return cv.path, summarise(config, cv, log, features)
