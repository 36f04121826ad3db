"""``abaw inspect``: validate a dataset root and summarise it per task and split."""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path

import numpy as np

from abaw.data import affwild2, dvd
from abaw.data.records import DataError, Problem, Track
from abaw.tasks import AFFWILD2_TASKS, VD, Task
from features.media import MediaError, probe


def _frame_rates(tracks: list[Track], cache: dict[Path, float | None], problems: list[Problem]) -> list[float]:
    rates = []
    for track in tracks:
        path = track.video_path
        if path is None:
            continue
        if path not in cache:
            try:
                cache[path] = probe(path).fps
            except MediaError as e:
                problems.append(Problem(path, str(e).removeprefix(f"{path}: ")))
                cache[path] = None
        if cache[path]:
            rates.append(cache[path])
    return rates


def summarise(task: Task, tracks: list[Track], rates: list[float]) -> dict:
    """Counts of one task and split: tracks, lines, valid frames, missing crops, fps range,
    and the label summary (EXPR/VD class counts, VA means, AU positive rates)."""
    summary: dict = {"tracks": len(tracks), "lines": int(sum(t.num_frames for t in tracks))}
    crops = [t.crop_present for t in tracks if t.crop_present is not None]
    summary["missing_crops"] = int(sum((~c).sum() for c in crops)) if crops else None
    summary["fps"] = [min(rates), max(rates)] if rates else None
    labelled = [t for t in tracks if t.labels is not None]
    if not labelled:
        return summary
    labels = np.concatenate([t.labels for t in labelled])
    valid = np.concatenate([t.valid for t in labelled])
    if task.kind in ("multiclass", "binary"):
        counts = np.bincount(labels[valid[:, 0], 0].astype(int), minlength=max(2, len(task.labels)))
        summary["valid"] = int(valid[:, 0].sum())
        summary["class_counts"] = counts.tolist()
    elif task.kind == "regression":
        summary["valid"] = valid.sum(axis=0).tolist()
        summary["means"] = [float(labels[valid[:, c], c].mean()) if valid[:, c].any() else None
                            for c in range(labels.shape[1])]
    else:
        row_valid = valid.all(axis=1)
        summary["valid"] = int(row_valid.sum())
        summary["positive_rates"] = (labels[row_valid].mean(axis=0).tolist() if row_valid.any()
                                     else [None] * labels.shape[1])
    return summary


def _label_text(task: Task, summary: dict) -> str:
    if "class_counts" in summary:
        names = task.labels if task.kind == "multiclass" else ("0", "1")
        return " ".join(f"{n}={c}" for n, c in zip(names, summary["class_counts"]))
    if "means" in summary:
        return " ".join(f"mean_{n}={m:+.3f}" for n, m in zip(task.labels, summary["means"]) if m is not None)
    if "positive_rates" in summary:
        return " ".join(f"{n}={r:.2f}" for n, r in zip(task.labels, summary["positive_rates"]) if r is not None)
    return ""


def inspect_root(root: str | Path, log=None, probe_videos: bool = True) -> tuple[dict, list[Problem]]:
    """Read every dataset found under ``root`` and return ``(stats, problems)``.

    ``stats`` is ``{"affwild2": {task: {split: summary}}, "dvd": {"vd": {split: summary}}}``
    for the datasets present (see :func:`summarise`). ``log`` receives progress lines. With
    ``probe_videos`` every raw video's header is read for its frame rate (and must open).
    """
    log = log or (lambda message: None)
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "dataset root not found")
    problems: list[Problem] = []
    stats: dict = {}
    rates: dict[Path, float | None] | None = {} if probe_videos else None
    try:
        layout = affwild2.find_layout(root)
    except DataError:
        layout = None
    if layout is not None:
        problems.extend(layout.problems)
        stats["affwild2"] = {}
        known: set[str] = set()
        for task in AFFWILD2_TASKS:
            log(f"reading {task.name.upper()} annotations, templates and crops ...")
            tracks = affwild2.load_tracks(layout, task, problems=problems,
                                          progress=lambda done, total: log(f"  {done}/{total} files"))
            known.update(t.id for t in tracks)
            stats["affwild2"][task.name] = _by_split(task, tracks, rates, problems)
        if layout.crops is not None:
            for folder in sorted(p for p in layout.crops.iterdir() if p.is_dir() and p.name not in known):
                problems.append(Problem(folder, "crop folder for a track that no annotation file, test list "
                                                "or template names"))
    if dvd.is_dvd_root(root):
        log("reading DVD annotations and templates ...")
        tracks = dvd.load_tracks(root, problems=problems)
        stats["dvd"] = {VD.name: _by_split(VD, tracks, rates, problems)}
    if not stats:
        raise DataError(root, "neither an Aff-Wild2 root (annotations/, cropped_aligned/) nor a DVD root "
                              "(Training/, Validation/, Test/) was found here or one level down")
    return stats, problems


def _by_split(task: Task, tracks: list[Track], rates: dict | None, problems: list[Problem]) -> dict:
    by_split: dict[str, list[Track]] = defaultdict(list)
    for track in tracks:
        by_split[track.split].append(track)
    return {split: summarise(task, group, [] if rates is None else _frame_rates(group, rates, problems))
            for split, group in sorted(by_split.items())}


def format_report(stats: dict, problems: list[Problem]) -> str:
    """The table ``abaw inspect`` prints, followed by the problems as ``path:line: message``."""
    from abaw.tasks import get_task

    lines = [f"{'task':<5} {'split':<11} {'tracks':>6} {'lines':>9} {'valid':>15} {'no crop':>8} {'fps':>11}  labels"]
    for dataset, tasks in stats.items():
        for name, splits in tasks.items():
            task = get_task(name)
            for split, s in splits.items():
                valid = s.get("valid", "-")
                valid = "/".join(map(str, valid)) if isinstance(valid, list) else str(valid)
                fps = f"{s['fps'][0]:.2f}-{s['fps'][1]:.2f}" if s["fps"] else "-"
                crops = "-" if s["missing_crops"] is None else str(s["missing_crops"])
                lines.append(f"{name.upper():<5} {split:<11} {s['tracks']:>6} {s['lines']:>9} {valid:>15} "
                             f"{crops:>8} {fps:>11}  {_label_text(task, s)}")
    errors = [p for p in problems if p.severity == "error"]
    lines.append(f"{len(errors)} error(s), {len(problems) - len(errors)} warning(s)")
    lines.extend(str(p) for p in problems)
    return "\n".join(lines)


def main_inspect(root: str, probe_videos: bool = True) -> int:
    """Run the inspection, print the report; 1 if any problem is an error."""
    stats, problems = inspect_root(root, log=lambda message: print(message, file=sys.stderr),
                                   probe_videos=probe_videos)
    print(format_report(stats, problems))
    return 1 if any(p.severity == "error" for p in problems) else 0
