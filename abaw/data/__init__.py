"""Dataset readers: Aff-Wild2 and DVD as distributed, and the sample dataset generator."""

from __future__ import annotations

import hashlib
from pathlib import Path

from abaw.data import affwild2, dvd
from abaw.data.records import DataError, Problem, Track
from abaw.tasks import AFFWILD2_TASKS, VD, Task, get_task

__all__ = ["DataError", "Problem", "Track", "dataset_folder", "dataset_key", "load_tracks", "present_tasks",
           "resolve_tasks"]


def load_tracks(
    root: str | Path,
    task: Task,
    splits: tuple[str, ...] = ("train", "validation", "test"),
    problems: list[Problem] | None = None,
) -> list[Track]:
    """Read the tracks of ``task`` (a :class:`abaw.tasks.Task`) from a dataset root.

    ``root`` may be the Aff-Wild2 or DVD folder itself or a folder holding both (as the sample
    dataset does). A task the root holds nothing of gives no tracks. See
    :func:`abaw.data.affwild2.load_tracks` for ``problems``.
    """
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
    if not present:
        raise DataError(root, "no task with train or validation annotations: neither an Aff-Wild2 root "
                              "(annotations/<task>/Train_Set or Validation_Set) nor a DVD root "
                              "(Training/ or Validation/ with annotation CSVs), here or one level down; "
                              "test templates alone train nothing")
    return present


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
    """The Aff-Wild2 or DVD folder of ``root`` (``root`` itself or the one below it)."""
    return affwild2.find_layout(root).root if dataset == "affwild2" else dvd.find_root(root)


def dataset_key(root: str | Path, dataset: str) -> str:
    """``<dataset>-<8 hex>``: a name for one dataset at one place, hashed from its resolved path.

    Caches and folds are kept under it, so two roots of one dataset kind never share an entry.
    """
    path = dataset_folder(root, dataset).resolve()
    return f"{dataset}-{hashlib.sha256(str(path).encode()).hexdigest()[:8]}"
