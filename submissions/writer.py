"""Writers that check a submission against the expected rows before writing a byte.

A file is written to a temporary name and moved into place only when complete, so a refused
or interrupted write never leaves a partial submission behind.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from abaw.data.records import DataError
from abaw.tasks import VD, Task
from submissions.formats import TrackRows, check_rows, parse_value_fields


def _format_values(task: Task, values: np.ndarray) -> list[str]:
    if task.kind == "regression":
        return [f"{v:.6f}" for v in values]
    return [str(int(round(v))) for v in values]


def _check_values(task: Task, rows: dict[str, TrackRows], target: Path) -> None:
    for track, track_rows in rows.items():
        for i, values in enumerate(track_rows.values):
            fields = [f"{v!r}" for v in values.tolist()]
            try:
                parse_value_fields(target, i + 1, fields, task)
            except DataError as e:
                raise DataError(target, f"track {track} frame {track_rows.frames[i]}: {e.problem.message}") from None


def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to a temporary file beside ``path`` and move it into place when complete.

    The temporary file is made by open(), not tempfile (whose files are private, 0600), so a
    submission gets the mode of any new file: 0644 under the usual umask, like VD.zip, and
    readable by the teammate who uploads it.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "w", newline="\n") as f:
            f.write(text)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)  # after a failed write; gone already after the move


def write_task_file(path: str | Path, task: Task, expected: dict[str, np.ndarray], rows: dict[str, TrackRows]) -> None:
    """Write an Aff-Wild2 one-file-per-task submission.

    Args:
        expected: frame numbers per track in the template's order (the rows the file must have).
        rows: predictions per track; values (n, task.columns): class index, 0/1 or values.

    Raises:
        DataError: a missing, duplicated, unknown or reordered row, or an out-of-range or
            non-finite (nan, inf) value; nothing is written then.
    """
    path = Path(path)
    check_rows(expected, rows, path, ordered=True)
    _check_values(task, rows, path)
    out = [",".join(task.submission_header)]
    for track, track_rows in rows.items():
        for frame, values in zip(track_rows.frames, track_rows.values):
            out.append(",".join([f"{track}/{frame:05d}.jpg", *_format_values(task, values)]))
    atomic_write(path, "\n".join(out) + "\n")


def write_dvd_folder(folder: str | Path, expected: dict[str, np.ndarray], rows: dict[str, TrackRows],
                     headers: dict[str, str] | None = None) -> list[Path]:
    """Write one ``<id>.csv`` per DVD video into ``folder`` (checked first, like write_task_file).

    ``headers`` gives each video's header line (copied from its template, which may say
    ``Frame_Num``); the default is ``Frame_Number,Label``.
    """
    folder = Path(folder)
    check_rows(expected, rows, folder, ordered=True)
    _check_values(VD, rows, folder)
    written = []
    for video, track_rows in rows.items():
        lines = [(headers or {}).get(video, ",".join(VD.submission_header))]
        lines += [f"{frame},{int(v[0])}" for frame, v in zip(track_rows.frames, track_rows.values)]
        atomic_write(folder / f"{video}.csv", "\n".join(lines) + "\n")
        written.append(folder / f"{video}.csv")
    return written


def write_per_track(folder: str | Path, task: Task, expected: dict[str, np.ndarray],
                    rows: dict[str, TrackRows]) -> list[Path]:
    """Aff-Wild2 submission of the 5th edition and before: ``<track>.txt`` per track with the
    task header and line ``i + 1`` for frame ``i``. Every track must cover frames 1..T."""
    folder = Path(folder)
    check_rows(expected, rows, folder, ordered=True)
    _check_values(task, rows, folder)
    written = []
    for track, track_rows in rows.items():
        if not np.array_equal(track_rows.frames, np.arange(1, len(track_rows.frames) + 1)):
            raise DataError(folder, f"track {track}: the per-track format needs frames 1..T in order")
        lines = [",".join(task.labels)] + [",".join(_format_values(task, v)) for v in track_rows.values]
        atomic_write(folder / f"{track}.txt", "\n".join(lines) + "\n")
        written.append(folder / f"{track}.txt")
    return written
