"""Dataset readers: Aff-Wild2, DVD, EMI (Hume-Vidmimic2) and BAH as distributed, and the sample
dataset generator."""

from __future__ import annotations

import hashlib
from pathlib import Path

from abaw.data import affwild2, bah, dvd, emi
from abaw.data.records import DataError, Problem, Track, VideoTrack
from abaw.data.videolevel import has_root
from abaw.tasks import AFFWILD2_TASKS, AH, EMI, VD, Task, get_task

__all__ = ["DataError", "Problem", "Track", "VideoTrack", "dataset_folder", "dataset_key", "frame_level",
           "load_tracks", "present_tasks", "resolve_tasks"]

# The readers of the video-level datasets, by dataset name: each has find_root, load_tracks and
# layout_problems with the same signatures.
VIDEO_READERS = {"emi": emi, "bah": bah}


def load_tracks(
    root: str | Path,
    task: Task,
    splits: tuple[str, ...] = ("train", "validation", "test"),
    problems: list[Problem] | None = None,
) -> list[Track]:
    """Read the tracks of ``task`` (a :class:`abaw.tasks.Task`) from a dataset root.

    ``root`` may be the Aff-Wild2, DVD, EMI or BAH folder itself or a folder holding them (as
    the sample dataset does). A task the root holds nothing of gives no tracks. See
    :func:`abaw.data.affwild2.load_tracks` for ``problems``. EMI and A/H give
    :class:`VideoTrack` records, one label row per video.
    """
    if task.dataset in VIDEO_READERS:
        return VIDEO_READERS[task.dataset].load_tracks(root, splits, problems)
    if task.dataset == "dvd":
        return dvd.load_tracks(root, splits, problems)
    layout = affwild2.find_layout(root)
    if problems is not None:
        problems.extend(layout.problems)
    return affwild2.load_tracks(layout, task, splits, problems)


def present_tasks(root: str | Path) -> list[Task]:
    """The tasks ``root`` holds train or validation annotations of, in TASKS order: the tasks a
    head can be trained and cross-validated on.

    A task with only a test template (and test list) is not present: training it would find no
    labelled track. Extraction still covers its test tracks (``abaw.extraction.jobs_for`` reads
    every annotation and template of a dataset it extracts).

    Raises:
        DataError: ``root`` is missing, or holds no task's train or validation annotations.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "dataset root not found")
    present = []
    if affwild2.has_layout(root):
        layout = affwild2.find_layout(root)
        present += [t for t in AFFWILD2_TASKS if _labelled(layout.task_dir(t), affwild2.SPLIT_FOLDERS, "*.txt")]
    if dvd.is_dvd_root(root) and _labelled(dvd.find_root(root), dvd.SPLIT_FOLDERS, "*.csv"):
        present.append(VD)
    present += [task for task in (EMI, AH) if _labelled_videos(root, task.dataset)]
    if not present:
        raise DataError(root, "no task with train or validation annotations: neither an Aff-Wild2 root "
                              "(annotations/<task>/Train_Set or Validation_Set) nor a DVD root "
                              "(Training/ or Validation/ with annotation CSVs) nor an EMI root (train_split.csv, "
                              "valid_split.csv) nor a BAH root (split/train.txt, split/val.txt), here or one "
                              "level down; test templates alone train nothing")
    return present


def _labelled_videos(root: Path, dataset: str) -> bool:
    """True if the EMI or BAH root under ``root`` has a train or validation split file with a
    video line (EMI's first line is its header). Lines are only counted, as :func:`_labelled`
    looks at names only: the reader checks them (an unreadable file counts, so it is reported)."""
    reader = VIDEO_READERS[dataset]
    if not has_root(root, reader.find_root):
        return False
    needed = 2 if dataset == "emi" else 1

    def lines(path: Path) -> int:
        try:
            return len(path.read_bytes().strip().splitlines())
        except OSError:
            return needed

    files = reader.split_files(reader.find_root(root))
    return any(split in ("train", "validation") and lines(path) >= needed for path, split in files.items())


def frame_level(tasks: list[Task]) -> list[Task]:
    """The frame-wise tasks of ``tasks``: what the frame-wise extraction, training and
    cross-validation handle (EMI and A/H label videos and have their own path)."""
    return [task for task in tasks if task.level == "frame"]


def _labelled(folder: Path | None, split_folders: dict[str, str], pattern: str) -> bool:
    """True if a train or validation split folder of ``folder`` (named as ``split_folders``
    maps them) holds a file matching ``pattern``, at any depth. Only names are looked at: the
    readers parse the files (and report bad ones) when the tracks are loaded."""
    if folder is None:
        return False
    return any(split_folders.get(child.name.lower()) in ("train", "validation") and next(child.rglob(pattern), None)
               for child in folder.iterdir() if child.is_dir())


def resolve_tasks(root: str | Path, requested: list[str] | tuple[str, ...] | None) -> list[Task]:
    """The tasks a command trains or cross-validates: ``requested`` (names), or every task with
    train or validation annotations under ``root`` (:func:`present_tasks`) when empty.

    Raises:
        DataError: a requested task has no train or validation annotations under ``root``.
    """
    present = present_tasks(root)
    if not requested:
        return present
    tasks = [get_task(name) for name in requested]
    absent = [t.name for t in tasks if t not in present]
    if absent:
        raise DataError(Path(root), f"task(s) {', '.join(absent)} requested but absent from this root: no train or "
                                    f"validation annotations (present: {', '.join(t.name for t in present)}); set "
                                    "tasks=[...] to those present")
    return tasks


def dataset_folder(root: str | Path, dataset: str) -> Path:
    """The Aff-Wild2, DVD, EMI or BAH folder of ``root`` (``root`` itself or the one below it)."""
    if dataset in VIDEO_READERS:
        return VIDEO_READERS[dataset].find_root(root)
    return affwild2.find_layout(root).root if dataset == "affwild2" else dvd.find_root(root)


def dataset_key(root: str | Path, dataset: str) -> str:
    """``<dataset>-<8 hex>``: a name for one dataset at one place, hashed from its resolved path.

    Caches and folds are kept under it, so two roots of one dataset kind never share an entry.
    """
    path = dataset_folder(root, dataset).resolve()
    return f"{dataset}-{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
