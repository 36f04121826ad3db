"""Dataset readers: Aff-Wild2 and DVD as distributed, and the sample dataset generator."""

from __future__ import annotations

from pathlib import Path

from abaw.data import affwild2, dvd
from abaw.data.records import DataError, Problem, Track
from abaw.tasks import Task

__all__ = ["DataError", "Problem", "Track", "load_tracks"]


def load_tracks(
    root: str | Path,
    task: Task,
    splits: tuple[str, ...] = ("train", "validation", "test"),
    problems: list[Problem] | None = None,
) -> list[Track]:
    """Read the tracks of ``task`` (a :class:`abaw.tasks.Task`) from a dataset root.

    ``root`` may be the Aff-Wild2 or DVD folder itself or a folder holding both (as the sample
    dataset does). See :func:`abaw.data.affwild2.load_tracks` for ``problems``.
    """
    if task.dataset == "dvd":
        return dvd.load_tracks(root, splits, problems)
    layout = affwild2.find_layout(root)
    if problems is not None:
        problems.extend(layout.problems)
    return affwild2.load_tracks(layout, task, splits, problems)
