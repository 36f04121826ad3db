"""Grouped, label-balanced, seeded K-fold splits over train ∪ validation, persisted as JSON.

A fold is a set of sources: every video cut from one Aff-Wild2 recording (named like
``122-60-1920x1080-1`` ... ``-4`` or ``video45_3``, see ``affwild2.source_name``), both sides of a
two-person video, and every task's tracks of those videos land in the same fold, so no person
or scene is in training and held-out data at once. A BAH participant's videos are one source
(``bah.group_by_participant``); every DVD and EMI video is its own. Sources are assigned greedily, largest
first, each to the fold whose label counts it brings closest to an even share of every task's
label counts, which balances the label distribution and the frame count together.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from abaw.data import affwild2, bah
from abaw.data.records import DataError, Track
from abaw.tasks import Task

# Real-valued labels are balanced on the quarters of their range ([-1, 1] for VA, [0, 1] for EMI).
VALUE_BINS = 4


def label_counts(task: Task, track: Track) -> tuple[np.ndarray, np.ndarray]:
    """Label counts of one track and what they are proportions of.

    Returns ``(counts, totals)`` of equal length: EXPR frames per class / valid frames;
    VA frames per quarter of [-1, 1], valence then arousal / valid frames of that dimension
    (EMI: videos per quarter of [0, 1], per intensity); AU positive frames per AU / valid rows;
    VD frames per class / frames (A/H: the video's class).
    """
    labels, valid = track.labels, track.valid
    if task.kind in ("multiclass", "binary"):
        num_classes = len(task.labels) if task.kind == "multiclass" else 2
        counts = np.bincount(labels[valid[:, 0], 0].astype(np.int64), minlength=num_classes).astype(float)
        return counts, np.full(num_classes, counts.sum())
    if task.kind == "regression":
        bins = np.linspace(*task.value_range, VALUE_BINS + 1)
        parts = [np.histogram(labels[valid[:, c], c], bins=bins)[0] for c in range(labels.shape[1])]
        counts = np.concatenate(parts).astype(float)
        return counts, np.repeat([p.sum() for p in parts], VALUE_BINS).astype(float)
    counts = np.where(valid, labels, 0).sum(axis=0).astype(float)
    return counts, valid.sum(axis=0).astype(float)


def video_sources(dataset: str, videos: Iterable[str]) -> dict[str, list[str]]:
    """``{source: sorted videos}``: Aff-Wild2 videos grouped by the recording their names show
    they were cut from, BAH videos (``<pid>/<stem>``) by participant; DVD and EMI ids carry no
    such sign, so each is its own source."""
    if dataset == "affwild2":
        return affwild2.group_by_source(videos)
    if dataset == "bah":
        return bah.group_by_participant(videos)
    return {video: [video] for video in sorted(set(videos))}


@dataclass(frozen=True)
class Folds:
    """Fold index of every raw video of one dataset (all videos of a source share one)."""

    k: int
    seed: int
    dataset: str
    videos: dict[str, int]

    @property
    def merged_sources(self) -> dict[str, list[str]]:
        """``{source: videos}`` of the sources cut into several videos, each kept in one fold."""
        return {s: vs for s, vs in video_sources(self.dataset, self.videos).items() if len(vs) > 1}

    def fold_of(self, track: Track, source: Path | None = None) -> int:
        """The fold of ``track``; DataError if its video was not in the data the folds were built on."""
        try:
            return self.videos[track.video]
        except KeyError:
            raise DataError(
                source or Path("folds.json"),
                f"video {track.video} (track {track.id}) has no fold: the folds were built on other "
                f"data; rebuild them with abaw folds --task {track.task} --rebuild <dataset root>",
            ) from None


def grouped_counts(task: Task, tracks: list[Track], group_of: Callable[[Track], int], groups: int) -> np.ndarray | None:
    """(groups, 2C) :func:`label_counts` of the train and validation ``tracks`` summed per group
    (``group_of(track)`` its index): the C counts, then the C totals. None without such tracks."""
    summed = None
    for track in tracks:
        if track.split == "test":
            continue
        counts, totals = label_counts(task, track)
        if summed is None:
            summed = np.zeros((groups, 2 * len(counts)))
        summed[group_of(track)] += np.concatenate([counts, totals])
    return summed


def build_folds(tracks_by_task: dict[Task, list[Track]], k: int = 5, seed: int = 0) -> Folds:
    """Assign every raw video of the given train/validation tracks to one of ``k`` folds, the
    videos of one source (:func:`video_sources`) to the same fold.

    All tasks must belong to one dataset. Raises ValueError if there are fewer sources than folds.
    """
    datasets = {task.dataset for task in tracks_by_task}
    if len(datasets) != 1:
        raise ValueError(f"folds are built per dataset, got tasks of {sorted(datasets)}")
    dataset = datasets.pop()
    videos = {t.video for tracks in tracks_by_task.values() for t in tracks if t.split != "test"}
    sources = video_sources(dataset, videos)
    if len(sources) < k:
        raise ValueError(f"{len(sources)} sources ({len(videos)} videos) cannot fill {k} folds")
    index = {video: i for i, members in enumerate(sources.values()) for video in members}
    blocks = []
    for task, tracks in tracks_by_task.items():
        block = grouped_counts(task, tracks, lambda track: index[track.video], len(sources))
        if block is not None:
            # Each task weighs the same however many frames it has.
            blocks.append(block / np.maximum(block.sum(axis=0), 1.0))
    weights = np.concatenate(blocks, axis=1)
    target = weights.sum(axis=0) / k
    rng = np.random.default_rng(seed)
    order = np.lexsort((rng.random(len(sources)), -weights.sum(axis=1)))
    members = list(sources.values())
    fold_sums = np.zeros((k, weights.shape[1]))
    assignment: dict[str, int] = {}
    for i in order:
        cost = ((fold_sums + weights[i] - target) ** 2).sum(axis=1) - ((fold_sums - target) ** 2).sum(axis=1)
        fold = int(np.argmin(cost))
        fold_sums[fold] += weights[i]
        assignment.update(dict.fromkeys(members[i], fold))
    return Folds(k=k, seed=seed, dataset=dataset, videos=dict(sorted(assignment.items())))


def save_folds(folds: Folds, path: str | Path, key: str | None = None) -> None:
    """Write ``folds`` to ``path`` atomically under ``key`` (a dataset key, see
    ``abaw.data.dataset_key``; default the dataset's kind); other entries are kept."""
    path = Path(path)
    data = _read_json(path) if path.exists() else {"version": 1, "datasets": {}}
    data["datasets"][key or folds.dataset] = {"k": folds.k, "seed": folds.seed, "videos": folds.videos}
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", dir=path.parent, prefix=f".{path.name}.", delete=False) as f:
        json.dump(data, f, indent=1)
    os.replace(f.name, path)


def load_folds(path: str | Path, dataset: str, key: str | None = None) -> Folds | None:
    """The folds of ``dataset`` saved in ``path`` under ``key`` (default the dataset's kind),
    or None if the file or the entry is absent."""
    path = Path(path)
    if not path.exists():
        return None
    entry = _read_json(path).get("datasets", {}).get(key or dataset)
    if entry is None:
        return None
    return Folds(k=int(entry["k"]), seed=int(entry["seed"]), dataset=dataset, videos=dict(entry["videos"]))


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(path, f"not valid JSON: {e.msg}", e.lineno) from None


def fold_distributions(task: Task, tracks: list[Track], folds: Folds) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-fold label distribution of ``task`` and its L2 distance to the pooled one.

    Returns ``(per_fold, pooled, distance)``: (k, L) proportions (see :func:`label_counts`),
    (L,) pooled proportions, (k,) Euclidean distances.
    """
    counts = totals = None
    for track in tracks:
        if track.split == "test":
            continue
        c, t = label_counts(task, track)
        if counts is None:
            counts, totals = np.zeros((folds.k, len(c))), np.zeros((folds.k, len(c)))
        fold = folds.fold_of(track)
        counts[fold] += c
        totals[fold] += t
    per_fold = counts / np.maximum(totals, 1.0)
    pooled = counts.sum(axis=0) / np.maximum(totals.sum(axis=0), 1.0)
    return per_fold, pooled, np.linalg.norm(per_fold - pooled, axis=1)


def distribution_names(task: Task) -> list[str]:
    """The name of each entry of :func:`label_counts`: the class names (EXPR), ``<label>=0`` and
    ``<label>=1`` (VD, A/H), the AU names, or each quarter of a dimension's range
    (``valence[-1,-0.5)``; EMI's names with ``_`` for spaces)."""
    if task.kind == "multiclass":
        return list(task.labels)
    if task.kind == "binary":
        return [f"{task.labels[0]}=0", f"{task.labels[0]}=1"]
    if task.kind == "regression":
        edges = np.linspace(*task.value_range, VALUE_BINS + 1)
        return [f"{name.replace(' ', '_')}[{lo:g},{hi:g}{']' if i == VALUE_BINS - 1 else ')'}"
                for name in task.labels for i, (lo, hi) in enumerate(zip(edges[:-1], edges[1:]))]
    return list(task.labels)


def absent_from_training(task: Task, folds: Folds, tracks: list[Track]) -> dict[int, list[str]]:
    """``{fold: names}`` of the classes of each fold's held-out tracks that never occur in its
    training part (the other folds): its model cannot learn them, and its score counts them
    as missed. Classes of EXPR, ``<label>=0``/``=1`` of VD and A/H, AUs with a held-out
    positive and no training positive; nothing for regression tasks (VA, EMI). Folds with
    nothing absent are left out. Test tracks are ignored."""
    if task.kind == "regression":
        return {}
    both = grouped_counts(task, tracks, folds.fold_of, folds.k)
    if both is None:
        return {}
    counts = both[:, :both.shape[1] // 2]
    names = distribution_names(task)
    absent = {}
    for fold in range(folds.k):
        training = counts.sum(axis=0) - counts[fold]
        missing = [names[i] for i in range(len(names)) if counts[fold, i] > 0 and training[i] == 0]
        if missing:
            absent[fold] = missing
    return absent


def absent_lines(task: Task, absent: dict[int, list[str]]) -> list[str]:
    """One warning line per fold of :func:`absent_from_training` (keys may be JSON strings)."""
    what = "positives" if task.kind == "multilabel" else "frames" if task.level == "frame" else "videos"
    return [f"warning: {task.name.upper()} fold {fold}: {', '.join(names)} occur(s) in its held-out {what} but "
            "never in its training part (the other folds): its model cannot learn them, and its score for them is "
            "0 (a class needs tracks of at least two sources, one to train on and one to hold out)"
            for fold, names in sorted(absent.items(), key=lambda item: int(item[0]))]


def ensure_folds(
    root: str | Path, dataset: str, path: str | Path, k: int = 5, seed: int = 0, rebuild: bool = False
) -> tuple[Folds, dict[Task, list[Track]]]:
    """Folds of ``dataset`` at ``root``: read from ``path`` when saved there for this root
    (under its dataset key: two roots never share folds) with the same k, seed and videos, else
    built and saved. Returns them with the train/validation tracks per task.

    Raises:
        DataError: ``path`` holds folds with another k or seed, or for other videos, or folds
            that split a source's videos (saved before sources were grouped), and ``rebuild``
            is False (silently changing a team's folds would invalidate its CV runs).
    """
    from abaw.data import dataset_key, load_tracks
    from abaw.tasks import AFFWILD2_TASKS, VD, dataset_tasks

    if dataset == "affwild2":
        layout = affwild2.find_layout(root)
        tasks = [t for t in AFFWILD2_TASKS if layout.task_dir(t) is not None]
        tracks = {t: affwild2.load_tracks(layout, t, splits=("train", "validation")) for t in tasks}
    else:  # one task per dataset: VD, EMI or A/H
        tracks = {t: load_tracks(root, t, splits=("train", "validation")) for t in dataset_tasks(dataset)}
    videos = {t.video for group in tracks.values() for t in group}
    key = dataset_key(root, dataset)
    saved = None if rebuild else load_folds(path, dataset, key)
    if saved is not None:
        task = next(iter(tracks), VD).name
        advice = (f"rebuild them with abaw folds --task {task} --k {k} --seed {seed} --out {path} --rebuild "
                  f"{root} (cross-validation runs made with the old folds are then out of date)")
        if (saved.k, saved.seed) != (k, seed) or set(saved.videos) != videos:
            raise DataError(
                Path(path),
                f"saved folds of {root} (k={saved.k}, seed={saved.seed}, {len(saved.videos)} videos) do not "
                f"match the request (k={k}, seed={seed}, {len(videos)} videos); {advice}",
            )
        divided = [f"{source} ({', '.join(f'{v}: {saved.videos[v]}' for v in members)})"
                   for source, members in saved.merged_sources.items()
                   if len({saved.videos[v] for v in members}) > 1]
        if divided:
            raise DataError(
                Path(path),
                f"saved folds of {root} put videos of one source in different folds, so cross-validation "
                f"holds out people it trained on: {'; '.join(divided)}; {advice}",
            )
        return saved, tracks
    folds = build_folds(tracks, k=k, seed=seed)
    save_folds(folds, path, key)
    return folds, tracks
