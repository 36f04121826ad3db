"""``abaw inspect``: validate a dataset root and summarise it per task and split."""

from __future__ import annotations

import sys
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from abaw.data import VIDEO_READERS, affwild2, dvd
from abaw.data.records import DataError, Problem, Track, VideoTrack
from abaw.data.videolevel import has_root
from abaw.tasks import AFFWILD2_TASKS, TASKS, VD, Task
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


def face_sources(track: Track) -> list[str]:
    """The face sources a track could use: ``crops`` (it has a ``cropped_aligned`` folder),
    ``detected`` (it has a raw video to detect faces in, or take whole frames from), or
    ``none`` (neither: every row is face-absent)."""
    sources = (["crops"] if track.crop_present is not None else []) + (["detected"] if track.video_path else [])
    return sources or ["none"]


def summarise(task: Task, tracks: list[Track], rates: list[float]) -> dict:
    """Counts of one task and split: tracks, lines, valid frames, rows without a crop, tracks
    per available face source (a track with crops and a raw video counts for both), fps range, and the label summary (EXPR/VD class counts, VA means, AU positive rates)."""
    summary: dict = {"tracks": len(tracks), "lines": int(sum(t.num_frames for t in tracks))}
    sources = Counter(source for t in tracks for source in face_sources(t))
    summary["face_sources"] = dict(sorted(sources.items()))
    # A track without a crop folder has no crop on any row; a dataset without crops (DVD) has no count.
    crops = [t.crop_present if t.crop_present is not None else np.zeros(t.num_frames, bool) for t in tracks]
    summary["missing_crops"] = int(sum((~c).sum() for c in crops)) if task.dataset == "affwild2" else None
    summary["fps"] = [min(rates), max(rates)] if rates else None
    videos = [t for t in tracks if isinstance(t, VideoTrack)]
    if videos:  # what a video-level head may read besides the frames: who, when, what was said
        if task.dataset == "bah":  # EMI has neither participants, nor segments, nor transcripts
            summary["participants"] = len({t.participant for t in videos})
            summary["segments"] = sum(t.segments is not None and len(t.segments) > 0 for t in videos)
            summary["transcripts"] = sum(t.transcript is not None for t in videos)
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
        return " ".join(f"mean_{n.replace(' ', '_')}={m:+.3f}" for n, m in zip(task.labels, summary["means"])
                        if m is not None)
    if "positive_rates" in summary:
        return " ".join(f"{n}={r:.2f}" for n, r in zip(task.labels, summary["positive_rates"]) if r is not None)
    return ""


def inspect_root(root: str | Path, log=None, probe_videos: bool = True,
                 tasks: list[Task] | None = None) -> tuple[dict, list[Problem]]:
    """Read every dataset found under ``root`` (only ``tasks``, when given) and return
    ``(stats, problems)``.

    ``stats`` is ``{"affwild2": {task: {split: summary} | None}, "dvd": {"vd": ... | None},
    "emi": {"emi": ...}, "bah": {"ah": ...}}``: a task whose dataset or annotations are absent
    maps to None (reported, not an error). An EMI or BAH root also gets the warnings of its
    reader's ``layout_problems``: what differs from the layout expected (ABAW_FORMATS.md §6). See
    :func:`summarise` for a summary. ``log`` receives progress lines. With ``probe_videos``
    every raw video's header is read for its frame rate (and must open).
    """
    log = log or (lambda message: None)
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "dataset root not found")
    wanted = list(tasks) if tasks else list(TASKS.values())
    problems: list[Problem] = []
    stats: dict = {}
    rates: dict[Path, float | None] | None = {} if probe_videos else None
    affwild2_tasks = [t for t in wanted if t.dataset == "affwild2"]
    layout = affwild2.find_layout(root) if affwild2_tasks and affwild2.has_layout(root) else None
    if affwild2_tasks:
        stats["affwild2"] = {t.name: None for t in affwild2_tasks}
    if layout is not None:
        problems.extend(layout.problems)
        known: set[str] = set()
        uncropped: set[str] = set()
        for task in affwild2_tasks:
            if layout.task_dir(task) is None and task.template_key not in layout.templates:
                continue
            log(f"reading {task.name.upper()} annotations, templates and crops ...")
            tracks = affwild2.load_tracks(layout, task, problems=problems,
                                          progress=lambda done, total: log(f"  {done}/{total} files"))
            known.update(t.id for t in tracks)
            uncropped.update(t.id for t in tracks if t.crop_present is None)
            stats["affwild2"][task.name] = _by_split(task, tracks, rates, problems)
            problems.extend(sources_in_both_splits(task, tracks, layout.task_dir(task) or layout.root))
        problems.extend(uncropped_warnings(layout, uncropped))
        if layout.crops is not None and len(affwild2_tasks) == len(AFFWILD2_TASKS):
            for folder in sorted(p for p in layout.crops.iterdir() if p.is_dir() and p.name not in known):
                problems.append(Problem(folder, "crop folder for a track that no annotation file, test list "
                                                "or template names"))
    if VD in wanted:
        stats["dvd"] = {VD.name: None}
        if dvd.is_dvd_root(root):
            log("reading DVD annotations and templates ...")
            stats["dvd"][VD.name] = _by_split(VD, dvd.load_tracks(root, problems=problems), rates, problems)
    for task in (t for t in wanted if t.level == "video"):
        stats[task.dataset] = {task.name: None}
        reader = VIDEO_READERS[task.dataset]
        if has_root(root, reader.find_root):
            log(f"reading the {task.name.upper()} split files and videos ...")
            problems.extend(reader.layout_problems(root))
            stats[task.dataset][task.name] = _by_split(task, reader.load_tracks(root, problems=problems), rates,
                                                       problems)
    if all(summary is None for by_task in stats.values() for summary in by_task.values()):
        raise DataError(root, f"none of the tasks {', '.join(t.name for t in wanted)} is here: neither an Aff-Wild2 "
                              "root (annotations/, cropped_aligned/) with their annotations or templates nor a DVD "
                              "root (Training/, Validation/, Test/) nor an EMI root (train_split.csv, "
                              "valid_split.csv) nor a BAH root (split/*.txt) was found here or one level down")
    return stats, problems


def sources_in_both_splits(task: Task, tracks: list[Track], path: Path) -> list[Problem]:
    """One warning per source (``affwild2.source_name``: the parts of a cut recording, both
    sides of a two-person video) with tracks of ``task`` in both the train and the validation
    split: scores on the official validation split then count people the model trained on."""
    splits: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for track in tracks:
        if track.split != "test":
            splits[affwild2.source_name(track.video)][track.split].append(track.id)
    return [Problem(path, f"{task.name.upper()}: source {source} has tracks in both splits (train: "
                          f"{', '.join(sorted(by_split['train']))}; validation: "
                          f"{', '.join(sorted(by_split['validation']))}): the official validation score counts "
                          "people seen in training; grouped folds (abaw folds) keep them apart",
                    severity="warning")
            for source, by_split in sorted(splits.items()) if len(by_split) > 1]


def uncropped_warnings(layout: affwild2.AffWild2Layout, tracks: set[str]) -> list[Problem]:
    """Warnings for tracks without organiser crops: one per track when ``cropped_aligned/``
    exists (a folder missing there is easy to overlook), one in all when it does not."""
    if not tracks:
        return []
    advice = "face-absent unless extract.faces names another source (frame)"
    if layout.crops is None:
        return [Problem(layout.root, f"no cropped_aligned/ folder: the frames of all {len(tracks)} tracks are "
                                     f"{advice}", severity="warning")]
    return [Problem(layout.crops / track, f"no crop folder for track {track}: its frames are {advice}",
                    severity="warning") for track in sorted(tracks)]


ABSENT = {"affwild2": "no annotation folder ({dirs}) and no test template",
          "dvd": "no DVD root (Training/, Validation/, Test/) here or one level down",
          "emi": "no EMI root (train_split.csv, valid_split.csv, raw/) here or one level down",
          "bah": "no BAH root (split/train.txt, split/val.txt, Videos/) here or one level down"}


def _by_split(task: Task, tracks: list[Track], rates: dict | None, problems: list[Problem]) -> dict:
    by_split: dict[str, list[Track]] = defaultdict(list)
    for track in tracks:
        by_split[track.split].append(track)
    return {split: summarise(task, group, [] if rates is None else _frame_rates(group, rates, problems))
            for split, group in sorted(by_split.items())}


def format_report(stats: dict, problems: list[Problem]) -> str:
    """The table ``abaw inspect`` prints (absent tasks named, not counted as errors), followed
    by the problems as ``path:line: message``."""
    from abaw.tasks import get_task

    lines = [f"{'task':<5} {'split':<11} {'tracks':>6} {'lines':>9} {'valid':>15} {'no crop':>8} {'fps':>11}  "
             "faces / labels"]
    for dataset, tasks in stats.items():
        for name, splits in tasks.items():
            task = get_task(name)
            if splits is None:
                lines.append(f"{name.upper():<5} absent: " + ABSENT[dataset].format(dirs=", ".join(task.annotation_dirs)))
                continue
            for split, s in splits.items():
                valid = s.get("valid", "-")
                valid = "/".join(map(str, valid)) if isinstance(valid, list) else str(valid)
                fps = f"{s['fps'][0]:.2f}-{s['fps'][1]:.2f}" if s["fps"] else "-"
                crops = "-" if s["missing_crops"] is None else str(s["missing_crops"])
                faces = " ".join(f"{k}={v}" for k, v in s["face_sources"].items()) if dataset != "dvd" else ""
                extra = " ".join(f"{k}={s[k]}" for k in ("participants", "segments", "transcripts")
                                 if s.get(k) is not None)
                shown = " / ".join(x for x in (faces, _label_text(task, s), extra) if x)
                lines.append(f"{name.upper():<5} {split:<11} {s['tracks']:>6} {s['lines']:>9} {valid:>15} "
                             f"{crops:>8} {fps:>11}  {shown}")
    errors = [p for p in problems if p.severity == "error"]
    lines.append(f"{len(errors)} error(s), {len(problems) - len(errors)} warning(s)")
    lines.extend(str(p) for p in problems)
    return "\n".join(lines)


def main_inspect(root: str, probe_videos: bool = True, tasks: list[Task] | None = None) -> int:
    """Run the inspection, print the report; 1 if any problem is an error."""
    stats, problems = inspect_root(root, log=lambda message: print(message, file=sys.stderr),
                                   probe_videos=probe_videos, tasks=tasks)
    print(format_report(stats, problems))
    return 1 if any(p.severity == "error" for p in problems) else 0
