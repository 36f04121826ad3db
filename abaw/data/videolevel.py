"""What the two video-level readers (EMI, BAH) share: finding their folder under a root,
reporting a bad line or skipping it, and building the one-label-row record of a video."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from abaw.data.affwild2 import child_dirs, index_videos
from abaw.data.records import DataError, Problem, VideoTrack
from features.containers import is_video_container


def find_dataset_root(root: str | Path, is_root: Callable[[Path], bool], expected: str) -> Path:
    """``root`` itself or the first folder directly below it for which ``is_root`` holds (a
    root holding several datasets, as the sample does, has each one level down).

    Raises:
        DataError: ``root`` is missing, or neither it nor a folder below it is such a root;
            ``expected`` says what was looked for.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "dataset root not found")
    for candidate in [root, *child_dirs(root)]:
        if is_root(candidate):
            return candidate
    raise DataError(root, f"no {expected} here or one level down")


def has_root(root: str | Path, find: Callable[[Path], Path]) -> bool:
    """True if ``find(root)`` (one of the readers' ``find_root``) finds its dataset."""
    try:
        find(Path(root))
    except DataError:
        return False
    return True


class Collector:
    """Bad input while reading: raised at once without a problem list (a command that needs
    every file right), recorded and skipped with one (``abaw inspect``, which lists them all)."""

    def __init__(self, problems: list[Problem] | None) -> None:
        self.problems = problems

    def fail(self, error: DataError) -> None:
        if self.problems is None:
            raise error
        self.problems.append(error.problem)

    def warn(self, path: Path, message: str, line: int | None = None) -> None:
        if self.problems is not None:
            self.problems.append(Problem(path, message, line, severity="warning"))

    def videos(self, folder: Path) -> dict[str, Path]:
        """The video files under ``folder`` by stem (``affwild2.index_videos``), its findings reported."""
        videos: dict[str, Path] = {}
        found: list[Problem] = []
        index_videos(folder, videos, found)
        for problem in found:
            self.report(problem)
        return videos

    def report(self, problem: Problem) -> None:
        """A finding of a helper that lists problems (an error is failed, a warning kept)."""
        if problem.severity == "error":
            self.fail(DataError(problem.path, problem.message, problem.line))
        else:
            self.warn(problem.path, problem.message, problem.line)


def wanted_files(files: dict[Path, str], splits: tuple[str, ...]) -> list[tuple[Path, str]]:
    """The ``(split file, split)`` pairs of ``files`` whose split is one of ``splits``."""
    return [(path, split) for path, split in files.items() if split in splits]


def refuse_relisted(seen: dict[str, tuple[Path, int]], key: str, shown: str, path: Path, line: int) -> None:
    """DataError if video ``key`` (written ``shown``) was listed before, naming both places;
    ``seen`` maps each video read so far to its split file and line."""
    if key in seen:
        where, first = seen[key]
        raise DataError(path, f"video {shown} listed twice (first at {where}:{first})", line)


def video_track(task_name: str, split: str, video_id: str, video: str, path: Path, source: Path,
                labels: np.ndarray | None, **fields) -> VideoTrack:
    """A :class:`VideoTrack` with its one label row: ``labels`` (C,) or None (a test video)."""
    row = None if labels is None else np.asarray(labels, dtype=np.float32).reshape(1, -1)
    return VideoTrack(id=video_id, task=task_name, split=split, video=video, video_path=path, source=source,
                      frames=np.ones(1, dtype=np.int64), labels=row,
                      valid=None if row is None else np.ones_like(row, dtype=bool), **fields)


def video_stem(name: str, numeric: bool = False) -> str:
    """How a listed video name is matched to a file and to a submission row: its file name
    (folders dropped) without a video extension; with ``numeric`` (EMI's integer ids) leading
    zeros dropped too, so that ``00042.mp4``, ``42`` and ``raw/42.mp4`` name one video."""
    base = Path(str(name).strip()).name
    if is_video_container(base):
        base = Path(base).stem
    if numeric and base.isdigit():
        return base.lstrip("0") or "0"
    return base


def split_file_problems(files: dict[Path, str], expected: dict[str, str], folder: Path,
                        prefix: str = "") -> list[Problem]:
    """Warnings for split files read under another name than ``expected`` (split -> file name,
    shown after ``prefix``) and for a train or validation split with no file in ``folder``."""
    problems = [Problem(path, f"read as the {split} split (expected {prefix or 'the name '}{expected[split]})",
                        severity="warning") for path, split in files.items() if path.name != expected[split]]
    problems += [Problem(folder, f"no {expected[split]}: the {split} split is absent", severity="warning")
                 for split in ("train", "validation") if split not in files.values()]
    return problems
