"""``abaw submit``: the challenge files from a CV directory's predictions, checked against the
templates (or the annotations of a labelled split) before a byte is written."""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from abaw.data import load_tracks
from abaw.data.records import DataError, Track
from abaw.predict import split_name, warn_in_sample
from abaw.rundir import CVDir
from abaw.runtime import stderr_log
from abaw.tasks import Task, get_task
from submissions.formats import TrackRows
from submissions.videolevel import write_ah, write_emi
from submissions.writer import write_dvd_folder, write_per_track, write_task_file


def submission_rows(tracks: list[Track], predictions: dict[str, dict[str, np.ndarray]]) -> dict[str, TrackRows]:
    """The rows of each track in its template order: frame ``f`` takes row ``f - 1``."""
    rows = {}
    for track in tracks:
        if track.id not in predictions:
            raise DataError(track.source, f"no prediction for track {track.id}; run abaw predict")
        values = predictions[track.id]["values"]
        rows[track.id] = TrackRows(track.frames, values[track.frames - 1], np.arange(len(track.frames)), track.source)
    return rows


def submit_videos(task: Task, tracks: list[Track], predictions: dict[str, dict[str, np.ndarray]], out: Path,
                  probabilities: bool = False) -> Path:
    """``EMI.csv`` (the split file's header and column order, one row per video, the clipped
    intensities) or ``AH.txt`` (``video_path,pred``, the tuned threshold's decision; with
    ``probabilities`` ``video_path,p0,p1,pred``, p1 the fold ensemble's A/H probability),
    every video named as its split file lists it."""
    missing = [t.id for t in tracks if t.id not in predictions]
    if missing:
        raise DataError(tracks[0].source, f"no prediction for video(s) {', '.join(missing[:5])}; run abaw predict")
    names = [t.listed_as for t in tracks]
    values = np.concatenate([predictions[t.id]["values"] for t in tracks])
    if task.dataset == "emi":
        header = tracks[0].source.read_text(encoding="utf-8-sig").splitlines()[0].split(",")
        header = tuple(h.strip() for h in header) if len(header) == len(task.submission_header) else task.submission_header
        return write_emi(out / "EMI.csv", names, values, header)
    both = None
    if probabilities:
        p1 = np.concatenate([predictions[t.id]["probabilities"][:, 0] for t in tracks]).astype(np.float64)
        both = np.stack([1.0 - p1, p1], axis=1)
    return write_ah(out / f"{task.name.upper()}.txt", names, values[:, 0], both)


def submit(run_dir: str | Path, out: str | Path, split: str = "test", layout: str = "per-task",
           probabilities: bool = False) -> list[Path]:
    """Write the submission of a CV run's task into ``out``; returns the files written.

    Aff-Wild2: ``<TASK>.txt`` with the template's rows in its order (``per-task``), or
    ``<TASK>/<track>.txt`` files (``per-track``, up to the 5th edition). DVD: one CSV per
    video copying its template's header and rows, and ``VD.zip`` holding them flat. EMI and
    A/H: one file of one row per video (:func:`submit_videos`; ``probabilities``: A/H only).
    """
    cv, out = CVDir(run_dir), Path(out)
    config = cv.config()
    task = get_task(config.train.task)
    if probabilities and task.name != "ah":
        raise ValueError(f"--probabilities: only the A/H file has probability columns, not {task.name.upper()}'s")
    split = split_name(split)
    warn_in_sample(split, stderr_log)
    predictions = cv.predictions(split)
    tracks = load_tracks(config.data.root, task, splits=(split,))
    if task.level == "video":
        return [submit_videos(task, tracks, predictions, out, probabilities)]
    rows = submission_rows(tracks, predictions)
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
