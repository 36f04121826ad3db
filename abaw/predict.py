"""``abaw predict`` and ``abaw submit``: the fold ensemble on the test tracks, the saved
post-processing, and the submission files, checked against the templates before writing."""

from __future__ import annotations

import json
import sys
import zipfile
from pathlib import Path

import numpy as np

from abaw.config import Config, load_run_config
from abaw.cv import load_postprocess, load_predictions, save_predictions, track_output
from abaw.data import load_tracks
from abaw.data.records import DataError, Track
from abaw.postprocess import apply
from abaw.score import normalise_split
from abaw.tasks import Task, get_task
from abaw.training.train import predict_frames
from submissions.formats import TrackRows
from submissions.writer import write_dvd_folder, write_per_track, write_task_file

AVERAGED = ("probabilities", "fallback")


def _split(name: str) -> str:
    return "test" if name.lower() in ("test", "test_set") else normalise_split(name)


def warn_in_sample(split: str, log) -> None:
    """Say that a labelled split's predictions are in-sample: every fold model trained on train
    ∪ validation, so on those tracks it scores data it has seen."""
    if split != "test":
        log(f"warning: the fold models were trained on train and validation, {split} included: scores of "
            "these predictions are in-sample, not held out. The held-out estimate is the CV score (cv.json, "
            "report.md).")


def fold_checkpoints(run_dir: Path, config: Config) -> list[Path]:
    """The checkpoint of every fold; DataError naming the first fold that is not finished."""
    paths = []
    for k in range(config.folds.k):
        done = run_dir / f"fold{k}" / "done.json"
        if not done.exists():
            raise DataError(done, f"fold {k} is not finished; run abaw cv first")
        paths.append(run_dir / json.loads(done.read_text())["checkpoint"])
    return paths


def predict(run_dir: str | Path, split: str = "test", log=None) -> Path:
    """Average the fold models over ``split``'s tracks, apply ``postprocess.json`` and save
    ``predictions-<split>.npz`` (per track: averaged arrays and the decided ``values``)."""
    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    run_dir = Path(run_dir)
    config = load_run_config(run_dir)
    task = get_task(config.train.task)
    split = _split(split)
    tracks = load_tracks(config.data.root, task, splits=(split,))
    if not tracks:
        raise DataError(Path(config.data.root), f"no {split} tracks for {task.name.upper()}")
    warn_in_sample(split, log)
    params = load_postprocess(run_dir)
    checkpoints = fold_checkpoints(run_dir, config)
    totals: dict[str, dict[str, np.ndarray]] = {}
    for k, checkpoint in enumerate(checkpoints):
        log(f"{task.name.upper()} {split}: fold {k} model over {len(tracks)} tracks")
        for track_id, arrays in predict_frames(checkpoint, config, tracks).items():
            entry = totals.setdefault(track_id, {k: v for k, v in arrays.items() if k not in AVERAGED})
            for name in AVERAGED:
                if name in arrays:
                    entry[name] = entry.get(name, 0.0) + arrays[name] / len(checkpoints)
    for arrays in totals.values():
        arrays["values"] = apply(task, params, track_output(arrays, config.cv.primary, config.cv.secondary))
    path = run_dir / f"predictions-{split}.npz"
    save_predictions(path, totals)
    return path


def submission_rows(tracks: list[Track], predictions: dict[str, dict[str, np.ndarray]]) -> dict[str, TrackRows]:
    """The rows of each track in its template order: frame ``f`` takes row ``f - 1``."""
    rows = {}
    for track in tracks:
        if track.id not in predictions:
            raise DataError(track.source, f"no prediction for track {track.id}; run abaw predict")
        values = predictions[track.id]["values"]
        rows[track.id] = TrackRows(track.frames, values[track.frames - 1], np.arange(len(track.frames)), track.source)
    return rows


def submit(run_dir: str | Path, out: str | Path, split: str = "test", layout: str = "per-task") -> list[Path]:
    """Write the submission of a CV run's task into ``out``; returns the files written.

    Aff-Wild2: ``<TASK>.txt`` with the template's rows in its order (``per-task``), or
    ``<TASK>/<track>.txt`` files (``per-track``, up to the 5th edition). DVD: one CSV per
    video copying its template's header and rows, and ``VD.zip`` holding them flat.
    """
    run_dir, out = Path(run_dir), Path(out)
    config = load_run_config(run_dir)
    task = get_task(config.train.task)
    split = _split(split)
    warn_in_sample(split, lambda message: print(message, file=sys.stderr, flush=True))
    path = run_dir / f"predictions-{split}.npz"
    if not path.exists():
        raise DataError(path, "no predictions; run abaw predict first")
    tracks = load_tracks(config.data.root, task, splits=(split,))
    rows = submission_rows(tracks, load_predictions(path))
    expected = {t.id: t.frames for t in tracks}
    if task.dataset == "dvd":
        headers = {t.id: t.source.read_text(encoding="utf-8-sig").splitlines()[0].strip() for t in tracks}
        if split != "test":  # annotations are not templates: the organisers' header is the format's
            headers = {k: ",".join(task.submission_header) for k in headers}
        written = write_dvd_folder(out / task.name.upper(), expected, rows, headers)
        archive = out / f"{task.name.upper()}.zip"
        with zipfile.ZipFile(archive, "w", zipfile.ZIP_DEFLATED) as z:
            for file in written:
                z.write(file, file.name)
        return written + [archive]
    if layout == "per-track":
        return write_per_track(out / task.name.upper(), task, expected, rows)
    target = out / f"{task.name.upper()}.txt"
    write_task_file(target, task, expected, rows)
    return [target]
