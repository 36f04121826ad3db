"""The video-level submission files (ABAW_FORMATS.md §6): read, checked and written.

- EMI: a CSV with the split files' header (``Filename`` and the six intensities, in the split
  file's column order), one row per test video, each intensity a number in [0, 1].
- A/H: ``video_path,pred`` (pred 0/1), or ``video_path,p0,p1,pred`` with the two class
  probabilities; ``video_path`` names the video as the split file lists it (a full path or the
  file name also match: videos are matched by file stem).

A file is checked against the videos expected (missing, repeated or unknown videos, values out
of range or not finite) before a byte is written, and written atomically.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from abaw.data.annotations import decode_lines, read_bytes
from abaw.data.records import DataError
from abaw.data.videolevel import video_stem
from abaw.tasks import AH, EMI, Task
from submissions.writer import atomic_write

AH_HEADERS = (("video_path", "pred"), ("video_path", "p0", "p1", "pred"))


@dataclass(frozen=True)
class VideoRow:
    """One video's row of a submission: its name as written, values (C,), the file line, and
    (A/H with probabilities) the two class probabilities."""

    name: str
    values: np.ndarray
    line: int
    probabilities: np.ndarray | None = None


def video_key(task: Task, name: str) -> str:
    """How a submission row is matched to a video: by file stem (A/H's ``video_path`` may be
    relative, absolute or a file name), EMI's numeric ids without leading zeros."""
    return video_stem(name, numeric=task is EMI)


def _number(path: Path, line: int, name: str, field: str, low: float, high: float, integer: bool) -> float:
    try:
        value = float(field)
    except ValueError:
        raise DataError(path, f"{name}: {field.strip()!r} is not a number", line) from None
    if not math.isfinite(value):
        raise DataError(path, f"{name}: {value:g} is not a finite number", line)
    if not low <= value <= high or (integer and value != int(value)):
        kind = "an integer" if integer else "a value"
        raise DataError(path, f"{name}: {value:g} is not {kind} in [{low:g}, {high:g}]", line)
    return value


def read_video_submission(path: str | Path, task: Task) -> dict[str, VideoRow]:
    """The rows of an EMI or A/H submission by :func:`video_key`, values in ``task.labels``
    order (EMI) or the 0/1 decision (A/H).

    Raises:
        DataError: missing or unreadable file, a wrong header, a line with the wrong number of
            fields, a value out of range, a video listed twice; naming the file and line.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(path, "prediction file not found")
    return parse_video_submission(decode_lines(read_bytes(path), path), path, task)


def parse_video_submission(lines: list[str], path: Path, task: Task) -> dict[str, VideoRow]:
    """:func:`read_video_submission` of the file's stripped ``lines`` (``path`` is named in errors)."""
    if not lines:
        raise DataError(path, "empty file")
    names = [n.strip() for n in next(csv.reader([lines[0]]))]
    lowered = [n.lower() for n in names]
    if task is EMI:
        if sorted(lowered) != sorted(n.lower() for n in EMI.submission_header):
            raise DataError(path, f"header {lines[0]!r} does not name the columns "
                                  f"{','.join(EMI.submission_header)}", 1)
        order = [lowered.index(n.lower()) for n in EMI.submission_header]
    else:
        headers = [[n.lower() for n in h] for h in AH_HEADERS]
        if lowered not in headers:
            raise DataError(path, f"header {lines[0]!r} is neither {' nor '.join(','.join(h) for h in AH_HEADERS)}", 1)
        order = list(range(len(names)))
    rows: dict[str, VideoRow] = {}
    for index, text in enumerate(lines[1:]):
        number = index + 2
        if not text:
            continue
        fields = next(csv.reader([text]))
        if len(fields) != len(names):
            raise DataError(path, f"expected {len(names)} comma-separated fields, got {len(fields)}", number)
        name = fields[order[0]].strip()
        if not name:
            raise DataError(path, f"empty {names[order[0]]}", number)
        key = video_key(task, name)
        if key in rows:
            raise DataError(path, f"video {name} listed twice (first at line {rows[key].line})", number)
        if task is EMI:
            values = np.array([_number(path, number, label, fields[i], 0.0, 1.0, False)
                               for label, i in zip(EMI.labels, order[1:])])
            rows[key] = VideoRow(name, values, number)
        else:
            pred = _number(path, number, "pred", fields[-1], 0, 1, True)
            probabilities = None
            if len(fields) == 4:
                probabilities = np.array([_number(path, number, n, fields[i], 0.0, 1.0, False)
                                          for n, i in (("p0", 1), ("p1", 2))])
            rows[key] = VideoRow(name, np.array([pred]), number, probabilities)
    return rows


def check_videos(task: Task, expected: list[str], rows: dict[str, VideoRow], source: Path) -> None:
    """Raise DataError unless ``rows`` has exactly one row for each of the ``expected`` video
    names (as the split file lists them): missing and unknown videos are named, up to 10."""
    wanted = {video_key(task, name): name for name in expected}
    problems = [f"line {rows[key].line}: unknown video {rows[key].name}" for key in rows.keys() - wanted.keys()]
    problems += [f"missing video {wanted[key]}" for key in wanted.keys() - rows.keys()]
    if problems:
        problems.sort()
        shown = "\n  ".join(problems[:10]) + (f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else "")
        raise DataError(source, f"rows do not match the expected videos:\n  {shown}")


def write_emi(path: str | Path, videos: list[str], values: np.ndarray, header: tuple[str, ...] = EMI.submission_header
              ) -> Path:
    """Write the EMI submission: ``header`` (the split file's: ``Filename`` and the six
    intensities in its order), then one row per video of ``videos`` (as the split file names
    them) with its (6,) intensities of ``values`` (N, 6), in ``EMI.labels`` order.

    Raises:
        DataError: a header that does not name the seven columns, a repeated video, a shape
            mismatch, or a value that is not a finite number in [0, 1]; nothing is written then.
    """
    path = Path(path)
    values = np.asarray(values, dtype=np.float64)
    if values.shape != (len(videos), len(EMI.labels)):
        raise DataError(path, f"{values.shape} predictions for {len(videos)} videos x {len(EMI.labels)} intensities")
    lowered = [n.strip().lower() for n in header]
    if sorted(lowered) != sorted(n.lower() for n in EMI.submission_header):
        raise DataError(path, f"header {','.join(header)} does not name the columns {','.join(EMI.submission_header)}")
    columns = [[n.lower() for n in EMI.labels].index(n) if n != "filename" else None for n in lowered]
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(header)
    for video, row in zip(videos, values):
        writer.writerow([video if c is None else f"{row[c]:.6f}" for c in columns])
    return _write_checked(path, EMI, videos, out.getvalue())


def write_ah(path: str | Path, videos: list[str], decisions: np.ndarray, probabilities: np.ndarray | None = None
             ) -> Path:
    """Write the A/H submission: ``video_path,pred`` per video of ``videos`` (as the split file
    lists them), or ``video_path,p0,p1,pred`` when ``probabilities`` (N, 2) are given.

    Raises:
        DataError: a repeated video, a shape mismatch, a decision that is not 0/1 or a
            probability outside [0, 1]; nothing is written then.
    """
    path = Path(path)
    decisions = np.asarray(decisions, dtype=np.float64).reshape(-1)
    if decisions.shape != (len(videos),) or (probabilities is not None and np.shape(probabilities) != (len(videos), 2)):
        raise DataError(path, f"{decisions.shape} decisions / {np.shape(probabilities)} probabilities for "
                              f"{len(videos)} videos")
    header = AH_HEADERS[probabilities is not None]
    lines = [",".join(header)]
    for i, (video, pred) in enumerate(zip(videos, decisions)):
        fields = [video] + ([] if probabilities is None else [f"{p:.6f}" for p in probabilities[i]])
        lines.append(",".join(fields + [f"{pred:g}"]))
    return _write_checked(path, AH, videos, "\n".join(lines) + "\n")


def _write_checked(path: Path, task: Task, videos: list[str], text: str) -> Path:
    """Parse ``text`` as the reader will (so the writer and the reader can never disagree),
    check it against ``videos``, then write it atomically."""
    check_videos(task, videos, parse_video_submission(text.splitlines(), path, task), path)
    atomic_write(path, text)
    return path
