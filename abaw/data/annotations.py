"""Parsers for the per-frame text files of ABAW: annotation files and test templates.

The fast path parses a whole file with numpy; only when that fails does a line-by-line pass
run, so that a real-size Aff-Wild2 copy (millions of lines) reads in seconds while a bad file
still gets an error naming its exact line.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from abaw.data.records import DataError
from abaw.tasks import Task


def decode_lines(data: bytes, path: Path) -> list[str]:
    """Decode a text file's bytes into stripped lines (BOM, CRLF and trailing blank lines dropped)."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(path, f"not a UTF-8 text file ({e.reason})") from None
    lines = [line.strip() for line in text.splitlines()]
    while lines and not lines[-1]:
        lines.pop()
    return lines


def os_error(path: Path, error: OSError, expected: str = "file") -> DataError:
    """The DataError naming ``path`` for an OS-level failure on it; ``expected`` says what
    should be there (``file``, ``folder``, ``crop folder``), so the message tells what is wrong."""
    if isinstance(error, FileNotFoundError):
        return DataError(path, f"{expected} not found")
    if isinstance(error, IsADirectoryError):
        return DataError(path, f"a folder where a {expected} should be")
    # NotADirectoryError also comes from a file higher up the path; only name what is there.
    if isinstance(error, NotADirectoryError) and path.is_file():
        return DataError(path, f"a file where a {expected} should be")
    return DataError(path, f"cannot read this {expected}: {error.strerror or error}")


def read_bytes(path: Path) -> bytes:
    """The bytes of a dataset or submission file; any OS-level failure is a DataError naming it."""
    try:
        return path.read_bytes()
    except OSError as e:
        raise os_error(path, e) from None


def read_lines(path: Path) -> list[str]:
    """The stripped lines of a text file (see :func:`decode_lines`); DataError when unreadable."""
    return decode_lines(read_bytes(path), path)


def _is_non_finite(field: str) -> bool:
    """True for a field Python reads as nan or inf (``nan``, ``-inf``, ``1e999``, ...)."""
    try:
        return not math.isfinite(float(field))
    except ValueError:
        return False


def check_finite_fields(path: Path, line: int, fields: list[str]) -> None:
    """Refuse a template field that reads as nan or inf; other placeholder text is ignored, as
    the organisers' templates may leave the value columns empty or fill them with examples."""
    for field in fields:
        if field.strip() and _is_non_finite(field):
            raise DataError(path, line=line, message=f"value {field.strip()!r} is not a finite number")


def _header_names(line: str) -> list[str]:
    return [name.strip().lower() for name in line.split(",")]


def check_header(path: Path, line: str, expected: tuple[str, ...]) -> None:
    """Raise DataError unless ``line`` names exactly ``expected`` (case and spaces ignored)."""
    if _header_names(line) != [name.lower() for name in expected]:
        raise DataError(path, line=1, message=f"header {line!r} does not name the expected columns {','.join(expected)}"
        )


def parse_annotation(path: Path, task: Task) -> tuple[np.ndarray, np.ndarray]:
    """Read one Aff-Wild2 annotation file.

    Returns ``(labels, valid)``: labels (T, C) float32 as written (invalid codes kept), valid
    (T, C) bool, False where a value equals the task's invalid code. For VA the mask is per
    dimension; for AU a row of -1 masks all twelve.

    Raises:
        DataError: missing, unreadable or empty file, wrong header, a line with the wrong number
            of values, a non-numeric or non-finite value, or a value outside the task's range,
            naming file and line.
    """
    lines = read_lines(path)
    if not lines:
        raise DataError(path, message=f"empty annotation file (expected header {','.join(task.labels)})")
    # The EXPR header lists the class names although each line holds one class index.
    check_header(path, lines[0], task.labels)
    body = lines[1:]
    if not body:
        raise DataError(path, message="annotation file has a header but no frames")
    columns = task.columns
    try:
        values = np.asarray(",".join(body).split(","), dtype=np.float64)
        fast_ok = values.size == len(body) * columns
    except ValueError:
        fast_ok = False
    if not fast_ok:
        values = _parse_slowly(path, body, columns)
    labels = values.reshape(len(body), columns)
    valid = labels != task.invalid
    _check_values(path, labels, valid, task)
    return labels.astype(np.float32), valid


def _parse_slowly(path: Path, body: list[str], columns: int) -> np.ndarray:
    """Line-by-line parse that reports the first malformed line (file line = index + 2)."""
    rows = []
    for index, line in enumerate(body):
        fields = line.split(",")
        if len(fields) != columns:
            raise DataError(path, line=index + 2, message=f"expected {columns} comma-separated value(s), got {line!r}"
            )
        try:
            rows.append([float(field) for field in fields])
        except ValueError:
            raise DataError(path, line=index + 2, message=f"non-numeric value in {line!r}") from None
    return np.asarray(rows, dtype=np.float64)


def _check_values(path: Path, labels: np.ndarray, valid: np.ndarray, task: Task) -> None:
    # NaN compares false with both range bounds, so it needs its own test (numpy reads 'nan').
    _refuse_first_row(path, labels, ~np.isfinite(labels), "is not finite (nan and inf are not labels)")
    low, high = task.value_range
    bad = valid & ((labels < low) | (labels > high))
    if task.kind in ("multiclass", "multilabel", "binary"):
        bad |= valid & (labels != np.round(labels))
    invalid = "" if task.invalid is None else f" or the invalid code {task.invalid:g}"
    _refuse_first_row(path, labels, bad, f"out of range for {task.name.upper()} "
                      f"(expected {'integers ' if task.kind != 'regression' else ''}in [{low:g}, {high:g}]{invalid})")


def _refuse_first_row(path: Path, labels: np.ndarray, bad: np.ndarray, reason: str) -> None:
    """DataError naming the first row with a ``bad`` value (file line = row + 2), if any."""
    if bad.any():
        row = int(np.argwhere(bad)[0][0])
        shown = ",".join(f"{v:g}" for v in labels[row])
        raise DataError(path, line=row + 2, message=f"value {shown} {reason}")


def parse_frame_csv(path: Path, require_labels: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Read a DVD per-frame CSV (annotation or template): column 1 frame number, column 2 label.

    The frame column is read by position because releases call it ``Frame_Number`` or
    ``Frame_Num`` (see :func:`check_frame_header`). Every row has exactly two fields; a template
    may leave the second empty. Frames must run 1, 2, ... without gaps or repeats.

    Returns ``(frames, labels)``: frames (T,) int64; labels (T,) int64 0/1, or None when
    ``require_labels`` is False (templates carry no labels).
    """
    lines = read_lines(path)
    if len(lines) < 2:
        raise DataError(path, message="no frames (expected a header and one row per frame)")
    check_frame_header(path, lines[0])
    frames = np.empty(len(lines) - 1, dtype=np.int64)
    labels = np.empty(len(lines) - 1, dtype=np.int64)
    for index, line in enumerate(lines[1:]):
        number = index + 2
        fields = [field.strip() for field in line.split(",")]
        if len(fields) != 2:
            raise DataError(path, line=number, message=f"expected 2 comma-separated values (frame, label), "
                            f"got {line!r}")
        try:
            frames[index] = int(fields[0])
        except ValueError:
            raise DataError(path, line=number, message=f"frame number {fields[0]!r} is not an integer") from None
        if frames[index] != index + 1:
            raise DataError(path, line=number, message=f"expected frame {index + 1}, found {frames[index]} "
                "(frames must run 1, 2, ... without gaps or repeats)"
            )
        if require_labels:
            if fields[1] not in ("0", "1"):
                raise DataError(path, line=number, message=f"label must be 0 or 1, got {line!r}")
            labels[index] = int(fields[1])
        else:
            check_finite_fields(path, number, fields[1:])
    return frames, (labels if require_labels else None)


def check_frame_header(path: Path, line: str) -> None:
    """Raise DataError unless ``line`` names a frame column then a label column, nothing else:
    ``Frame_Number,Label`` or, as some releases spell it, ``Frame_Num,Label`` (case and spaces
    ignored). Columns are read by position, so swapped or extra columns would be misread."""
    names = _header_names(line)
    if len(names) != 2 or names[0] not in ("frame_number", "frame_num") or names[1] != "label":
        raise DataError(path, line=1, message=f"header {line!r} is not 'Frame_Number,Label' (or 'Frame_Num,Label')")


def parse_template(path: Path) -> dict[str, np.ndarray]:
    """Read an Aff-Wild2 test template (or a one-file submission) into rows per track.

    Each row's first column is ``<track>/<frame:05d>.jpg``. Returns ``{track: frames}`` with
    tracks in order of first appearance and frames (T,) int64 in file order.
    """
    lines = read_lines(path)
    if not lines:
        raise DataError(path, message="empty template")
    if _header_names(lines[0])[0] != "image_location":
        raise DataError(path, line=1, message=f"header {lines[0]!r} does not start with image_location")
    rows: dict[str, list[int]] = {}
    for index, line in enumerate(lines[1:]):
        location, _, values = line.partition(",")
        track, frame = split_image_location(location, path, index + 2)
        if values.strip(", "):  # templates mostly leave the values empty: skip parsing those
            check_finite_fields(path, index + 2, values.split(","))
        rows.setdefault(track, []).append(frame)
    return {track: np.asarray(frames, dtype=np.int64) for track, frames in rows.items()}


def split_image_location(location: str, path: Path, line: int) -> tuple[str, int]:
    """``'video10_1_left/00042.jpg'`` -> ``('video10_1_left', 42)``; DataError naming the line."""
    track, slash, name = location.strip().rpartition("/")
    stem = name.rsplit(".", 1)[0]
    if not slash or not track or not stem.isdigit():
        raise DataError(path, line=line, message=f"image location {location!r} is not <track>/<frame>.jpg")
    return track, int(stem)
