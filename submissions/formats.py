"""Reading submission files and checking them against the rows the organisers expect.

Formats (ABAW_FORMATS.md §3):
- Aff-Wild2, one file per task: header ``image_location,<labels>``; rows
  ``<track>/<frame:05d>.jpg,<values>`` (EXPR one class index, VA two values, AU twelve 0/1).
- Aff-Wild2, one file per track (up to the 5th edition): ``<track>.txt`` with the task header
  and one line per frame, frame ``i`` on line ``i + 1``.
- DVD: one CSV per video, ``Frame_Number,Label``, in a folder or a flat zip.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from abaw.data.annotations import check_frame_header, check_header, decode_lines, read_bytes, split_image_location
from abaw.data.records import DataError
from abaw.tasks import Task


@dataclass
class TrackRows:
    """Rows of one track in a submission: frame numbers (n,), values (n, C), file lines (n,)."""

    frames: np.ndarray
    values: np.ndarray
    lines: np.ndarray
    source: Path


def parse_value_fields(path: Path, line: int, fields: list[str], task: Task) -> list[float]:
    """Parse and range-check the value columns of one submission row (DataError naming the line).

    NaN and inf are refused first: NaN compares false with both range bounds, and a prediction
    that is not a number must never be written or scored."""
    if len(fields) != task.columns:
        raise DataError(path, f"expected {task.columns} value(s) after the frame, got {len(fields)}", line)
    try:
        values = [float(field) for field in fields]
    except ValueError:
        raise DataError(path, f"non-numeric value in {','.join(fields)!r}", line) from None
    low, high = task.value_range
    for value in values:
        if not math.isfinite(value):
            raise DataError(path, f"{value:g} is not a finite number", line)
        if not low <= value <= high or (task.kind != "regression" and value != int(value)):
            kind = "a value" if task.kind == "regression" else "an integer"
            raise DataError(path, f"{value:g} is not {kind} in [{low:g}, {high:g}] for {task.name.upper()}", line)
    return values


def read_task_file(path: Path, task: Task) -> dict[str, TrackRows]:
    """Read an Aff-Wild2 one-file-per-task submission into rows per track (file order kept)."""
    lines = _lines(read_bytes(path), path)
    check_header(path, lines[0] if lines else "", task.submission_header)
    collected: dict[str, tuple[list[int], list[list[float]], list[int]]] = {}
    for index, text in enumerate(lines[1:]):
        number = index + 2
        location, *fields = text.split(",")
        track, frame = split_image_location(location, path, number)
        frames, values, where = collected.setdefault(track, ([], [], []))
        frames.append(frame)
        values.append(parse_value_fields(path, number, fields, task))
        where.append(number)
    return {track: _rows(parts, path) for track, parts in collected.items()}


def read_per_track(source: Path, task: Task) -> dict[str, TrackRows]:
    """Read per-track files: ``<track>.txt`` (Aff-Wild2, older format) or ``<id>.csv`` (DVD),
    from a folder or, for DVD, a zip file."""
    files = _member_files(source, ".csv" if task.dataset == "dvd" else ".txt")
    result: dict[str, TrackRows] = {}
    for name, data in files:
        path = source / name
        lines = _lines(data, path)
        if task.dataset == "dvd":
            check_frame_header(path, lines[0])
        else:
            check_header(path, lines[0] if lines else "", task.labels)
        frames, values, where = [], [], []
        for index, text in enumerate(lines[1:]):
            number = index + 2
            fields = text.split(",")
            if task.dataset == "dvd":
                try:
                    frames.append(int(fields[0]))
                except ValueError:
                    raise DataError(path, f"frame number {fields[0]!r} is not an integer", number) from None
                fields = fields[1:]
            else:
                frames.append(index + 1)
            values.append(parse_value_fields(path, number, fields, task))
            where.append(number)
        result[Path(name).stem] = _rows((frames, values, where), path)
    return result


def read_submission(path: str | Path, task: Task) -> dict[str, TrackRows]:
    """Read any supported submission layout for ``task`` (chosen by what ``path`` is)."""
    path = Path(path)
    if not path.exists():
        raise DataError(path, "prediction file or folder not found")
    if task.dataset == "affwild2" and path.is_file():
        return read_task_file(path, task)
    return read_per_track(path, task)


def check_rows(
    expected: dict[str, np.ndarray], got: dict[str, TrackRows], source: Path, ordered: bool = False
) -> None:
    """Raise DataError unless ``got`` has exactly one row per expected (track, frame).

    Args:
        expected: frame numbers per track, e.g. from the annotations or the test template.
        got: rows read from (or about to be written to) a submission.
        source: the submission, named in the message.
        ordered: also require the expected track order and frame order (writing a submission).
    """
    problems: list[str] = []
    for track in got.keys() - expected.keys():
        problems.append(f"line {got[track].lines[0]}: unknown track {track}")
    for track, frames in expected.items():
        rows = got.get(track)
        if rows is None:
            problems.append(f"missing all {len(frames)} rows of track {track}")
            continue
        unique, first, counts = np.unique(rows.frames, return_index=True, return_counts=True)
        for frame in unique[counts > 1][:3]:
            lines = rows.lines[rows.frames == frame]
            problems.append(f"line {lines[1]}: duplicate row {track}/{frame:05d} (first at line {lines[0]})")
        missing = np.setdiff1d(frames, unique)
        if missing.size:
            problems.append(f"track {track}: {missing.size} missing row(s), first frame {missing[0]}")
        unknown = np.setdiff1d(unique, frames)
        if unknown.size:
            line = rows.lines[first[np.searchsorted(unique, unknown[0])]]
            problems.append(f"line {line}: track {track} has no frame {unknown[0]} ({unknown.size} such row(s))")
        if ordered and not problems and not np.array_equal(rows.frames, frames):
            problems.append(f"track {track}: rows are not in the template's order")
    if ordered and not problems and list(got) != list(expected):
        problems.append("tracks are not in the template's order")
    if problems:
        shown = "\n  ".join(problems[:10])
        more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
        raise DataError(source, f"rows do not match the expected rows:\n  {shown}{more}")


def _rows(parts, path: Path) -> TrackRows:
    frames, values, lines = parts
    return TrackRows(
        np.asarray(frames, dtype=np.int64), np.asarray(values, dtype=np.float64), np.asarray(lines), path
    )


def _lines(data: bytes, path: Path) -> list[str]:
    lines = decode_lines(data, path)
    if not lines:
        raise DataError(path, "empty file")
    return lines


def _member_files(source: Path, suffix: str) -> list[tuple[str, bytes]]:
    """(name, bytes) of each ``*suffix`` file in a folder or flat zip."""
    if source.is_dir():
        files = [(p.name, read_bytes(p)) for p in sorted(source.glob(f"*{suffix}"))]
    elif zipfile.is_zipfile(source):
        with zipfile.ZipFile(source) as archive:
            files = []
            for name in sorted(archive.namelist()):
                if name.endswith(suffix):
                    if "/" in name.rstrip("/"):
                        raise DataError(source, f"zip member {name} is inside a folder; the zip must be flat")
                    files.append((name, archive.read(name)))
    else:
        raise DataError(source, f"expected a folder or zip of {suffix} files")
    if not files:
        raise DataError(source, f"no {suffix} files")
    return files
