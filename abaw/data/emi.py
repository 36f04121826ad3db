"""Read a Hume-Vidmimic2 root (the EMI challenge) into video-level records.

Layout as public team code reads it (ABAW_FORMATS.md §6; unconfirmed in detail)::

    <root>/train_split.csv, valid_split.csv   Filename,Admiration,Amusement,Determination,
                                              Empathic Pain,Excitement,Joy  (one row per video)
    <root>/test_split.csv (when released)     Filename (the six columns may follow, empty)
    <root>/raw/<Filename>.mp4                 the video the person mimics on, with audio

Read leniently, because the details are unconfirmed: any ``<split>_split.csv`` with split
``train``/``training``, ``valid``/``val``/``validation`` or ``test``; the six columns in any
order (a submission copies the split file's header); a ``Filename`` with or without its
extension, zero-padded or not; videos in any folder when there is no ``raw/``. What differs from
the expected layout is a warning of :func:`layout_problems`, so ``abaw inspect`` names it.
Bad input is an error naming the file and line: a missing file, a wrong header, a value that
is not a number in [0, 1], a repeated video, a listed video with no file.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

import numpy as np

from abaw.data.annotations import read_lines
from abaw.data.records import DataError, Problem, VideoTrack
from abaw.data.videolevel import (Collector, find_dataset_root, refuse_relisted, split_file_problems, video_stem,
                                  video_track, wanted_files)
from abaw.tasks import EMI

SPLIT_WORDS = {"train": "train", "training": "train", "valid": "validation", "val": "validation",
               "validation": "validation", "test": "test"}
EXPECTED_FILES = {"train": "train_split.csv", "validation": "valid_split.csv", "test": "test_split.csv"}
HEADER = EMI.submission_header  # Filename, then the six intensities


def split_of(path: Path) -> str | None:
    """The split a ``<word>_split.csv`` file holds (None for any other file)."""
    name = path.name.lower()
    if not name.endswith("_split.csv"):
        return None
    return SPLIT_WORDS.get(name.removesuffix("_split.csv"))


def split_files(folder: Path) -> dict[Path, str]:
    """``{file: split}`` of the split CSVs directly in ``folder``, sorted by name (something else
    in a split file's place is kept, so that reading it names it)."""
    return {p: split for p in sorted(folder.iterdir()) if (split := split_of(p)) is not None}


def is_emi_root(folder: Path) -> bool:
    """True if ``folder`` holds a split CSV (``train_split.csv``, ``valid_split.csv``, ...)."""
    return bool(split_files(folder))


def find_root(root: str | Path) -> Path:
    """The folder holding the EMI split CSVs: ``root`` itself or a folder directly below it."""
    return find_dataset_root(root, is_emi_root, "EMI root (train_split.csv, valid_split.csv)")


def videos_folder(root: Path) -> Path:
    """Where the videos are looked for: ``raw/`` when there is one (the expected place), else
    anywhere under the root (what differs is :func:`layout_problems`' business)."""
    return root / "raw" if (root / "raw").is_dir() else root


def _video_key(name: str) -> str:
    """How a ``Filename`` and a video stem are matched (``00042``, ``42`` and ``42.mp4`` alike)."""
    return video_stem(name, numeric=True)


def read_header(path: Path, first: str, split: str) -> list[str]:
    """The column names of a split CSV (as written), checked: ``Filename`` and the six
    intensities in any order; a test split may hold ``Filename`` alone.

    Raises:
        DataError: naming line 1, what is missing and what is unexpected.
    """
    names = [name.strip() for name in next(csv.reader([first]))]
    lowered = [name.lower() for name in names]
    expected = [name.lower() for name in HEADER]
    if sorted(lowered) == sorted(expected) or (split == "test" and lowered == ["filename"]):
        return names
    missing = [n for n in HEADER if n.lower() not in lowered]
    unexpected = [n for n in names if n.lower() not in expected]
    detail = "; ".join(part for part in (f"missing {', '.join(missing)}" if missing else "",
                                         f"unexpected {', '.join(unexpected)}" if unexpected else "",
                                         "a column repeated" if len(set(lowered)) < len(lowered) else "") if part)
    raise DataError(path, f"header {first!r} does not name the expected columns {','.join(HEADER)} ({detail})", 1)


def parse_intensities(path: Path, line: int, fields: list[str]) -> np.ndarray:
    """(6,) intensities of one row, in ``EMI.labels`` order once the caller has reordered the
    fields; each a finite number in [0, 1]."""
    values = []
    for name, field in zip(EMI.labels, fields):
        try:
            value = float(field)
        except ValueError:
            raise DataError(path, f"{name}: {field.strip()!r} is not a number", line) from None
        if not math.isfinite(value) or not 0.0 <= value <= 1.0:
            raise DataError(path, f"{name}: {value:g} is outside [0, 1] (an intensity)", line)
        values.append(value)
    return np.asarray(values, dtype=np.float32)


def load_tracks(root: str | Path, splits: tuple[str, ...] = ("train", "validation", "test"),
                problems: list[Problem] | None = None) -> list[VideoTrack]:
    """Every video of the split CSVs of ``splits``, one label row each (none for test).

    With ``problems`` given, a bad file or row is recorded there and skipped; without it the
    first one raises DataError.
    """
    root = find_root(root)
    errors = Collector(problems)
    videos = {_video_key(stem): path for stem, path in errors.videos(videos_folder(root)).items()}
    seen: dict[str, tuple[Path, int]] = {}
    tracks: list[VideoTrack] = []
    for path, split in wanted_files(split_files(root), splits):
        try:
            lines = read_lines(path)
            if not lines:
                raise DataError(path, f"empty split file (expected the header {','.join(HEADER)})")
            names = read_header(path, lines[0], split)
        except DataError as e:
            errors.fail(e)
            continue
        order = [[n.lower() for n in names].index(label.lower()) for label in HEADER] if len(names) > 1 else [0]
        for index, text in enumerate(lines[1:]):
            number = index + 2
            if not text:
                continue
            try:
                fields = next(csv.reader([text]))
                if len(fields) != len(names):
                    raise DataError(path, f"expected {len(names)} comma-separated fields, got {len(fields)}", number)
                listed = fields[order[0]].strip()
                if not listed:
                    raise DataError(path, "empty Filename", number)
                key = _video_key(listed)
                refuse_relisted(seen, key, listed, path, number)
                labels = None
                if split != "test":
                    labels = parse_intensities(path, number, [fields[i] for i in order[1:]])
                if key not in videos:
                    raise DataError(path, f"listed video {listed} has no file ({root / 'raw'}/{listed}.mp4 "
                                          "or another video extension)", number)
            except DataError as e:
                errors.fail(e)
                continue
            seen[key] = (path, number)
            video = videos[key]
            tracks.append(video_track(EMI.name, split, video.stem, video.stem, video, path, labels, listed_as=listed))
    return tracks


def layout_problems(root: str | Path) -> list[Problem]:
    """What differs from the expected EMI layout, as warnings: split files under other names,
    a missing labelled split, videos outside ``raw/``, videos no split file lists."""
    root = find_root(root)
    problems = split_file_problems(split_files(root), EXPECTED_FILES, root)
    if not (root / "raw").is_dir():
        problems.append(Problem(root / "raw", "no raw/ folder: videos are looked for anywhere under the root",
                                severity="warning"))
    videos = Collector([]).videos(videos_folder(root))
    listed = {t.id for t in load_tracks(root, problems=[])}
    unlisted = sorted(set(videos) - listed)
    if unlisted:
        shown = ", ".join(unlisted[:5]) + (f" and {len(unlisted) - 5} more" if len(unlisted) > 5 else "")
        problems.append(Problem(videos[unlisted[0]].parent, f"{len(unlisted)} video(s) in no split file: {shown}",
                                severity="warning"))
    return problems
