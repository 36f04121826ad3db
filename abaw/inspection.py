"""``abaw inspect``: validate a dataset root and summarise it per task and split."""

from __future__ import annotations

from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

from abaw.data import VIDEO_READERS, affwild2, dvd, testfiles
from abaw.data.records import DataError, Problem, Track, VideoTrack
from abaw.data.videolevel import has_root
from abaw.runtime import stderr_log
from abaw.tasks import AFFWILD2_TASKS, TASKS, VD, Task
from features.media import MediaError, VideoInfo, probe

SILENCE_NOTE = ("audio: a video without an audio stream is warned of below (not with --skip-videos); silent audio "
                "(all-zero samples) is only found at extraction, in its frame-accounting table (column audio)")


def _probed(tracks: list[Track], cache: dict[Path, VideoInfo | None], problems: list[Problem]) -> list[VideoInfo]:
    """The header facts of each track's raw video (read once per video into ``cache``); a video
    that does not open is an error in ``problems`` and has none."""
    infos = []
    for track in tracks:
        path = track.video_path
        if path is None:
            continue
        if path not in cache:
            try:
                cache[path] = probe(path)
            except MediaError as e:
                problems.append(Problem(path, str(e).removeprefix(f"{path}: ")))
                cache[path] = None
        if cache[path] is not None:
            infos.append(cache[path])
    return infos


def soundless_warnings(cache: dict[Path, VideoInfo | None]) -> list[Problem]:
    """One warning per probed video without an audio stream: every audio row of its tracks is
    invalid, so an audio stream (log-mel, wav2vec 2.0) says nothing about them."""
    return [Problem(path, "no audio stream: every audio row of its tracks is invalid (the audio features say "
                          "nothing about them)", severity="warning")
            for path, info in sorted(cache.items()) if info is not None and not info.has_audio]


def face_sources(track: Track) -> list[str]:
    """The face sources a track could use: ``crops`` (it has a ``cropped_aligned`` folder),
    ``detected`` (it has a raw video to detect faces in, or take whole frames from), or
    ``none`` (neither: every row is face-absent)."""
    sources = (["crops"] if track.crop_present is not None else []) + (["detected"] if track.video_path else [])
    return sources or ["none"]


def summarise(task: Task, tracks: list[Track], rates: list[float], soundless: int = 0) -> dict:
    """Counts of one task and split: tracks, lines, valid frames, rows without a crop, tracks
    per available face source (a track with crops and a raw video counts for both), fps range,
    tracks whose raw video has no audio stream (``soundless``), and the label summary (EXPR/VD
    class counts, VA means, AU positive rates)."""
    summary: dict = {"tracks": len(tracks), "lines": int(sum(t.num_frames for t in tracks))}
    if soundless:
        summary["no_audio"] = soundless
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


def inspect_root(root: str | Path, log=None, probe_videos: bool = True, tasks: list[Task] | None = None,
                 faces: set[str] | None = None, need_templates: bool = False) -> tuple[dict, list[Problem]]:
    """Read every dataset found under ``root`` (only ``tasks``, when given) and return
    ``(stats, problems)``.

    ``stats`` is ``{"affwild2": {task: {split: summary} | None}, "dvd": {"vd": ... | None},
    "emi": {"emi": ...}, "bah": {"ah": ...}}``: a task whose dataset or annotations are absent
    maps to None (reported, not an error). An Aff-Wild2 root adds ``"test_files": {task:
    {"test_list": Path | None, "template": Path | None}}``, the files read for each task present
    (relative to the Aff-Wild2 root).
    An EMI or BAH root also gets the warnings of its reader's ``layout_problems``: what differs
    from the layout expected (ABAW_FORMATS.md §6). See :func:`summarise` for a summary. ``log``
    receives progress lines. With ``probe_videos`` every raw video's header is read for its
    frame rate and audio stream (and must open).

    ``faces`` are the face sources a configuration takes Aff-Wild2 pixels from (None: no
    configuration, judged as the default ``crops`` with advice for ``detected``); missing crops
    are warned of only where ``crops`` is among them. With ``need_templates`` (a run that will
    predict the test set) a task with labelled tracks and no test template is an error.
    """
    log = log or (lambda message: None)
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "dataset root not found")
    wanted = list(tasks) if tasks else list(TASKS.values())
    problems: list[Problem] = []
    stats: dict = {}
    probed: dict[Path, VideoInfo | None] | None = {} if probe_videos else None
    affwild2_tasks = [t for t in wanted if t.dataset == "affwild2"]
    layout = affwild2.find_layout(root) if affwild2_tasks and affwild2.has_layout(root) else None
    if affwild2_tasks:
        stats["affwild2"] = {t.name: None for t in affwild2_tasks}
    if layout is not None:
        problems.extend(layout.problems)
        known: set[str] = set()
        uncropped: set[str] = set()
        videoless: set[str] = set()
        for task in affwild2_tasks:
            problems.extend(missing_test_files(layout, task, need_templates))
            known.update(_listed_alone(layout, task, problems))
            if layout.task_dir(task) is None and task.template_key not in layout.templates:
                continue
            log(f"reading {task.name.upper()} annotations, templates and crops ...")
            tracks = affwild2.load_tracks(layout, task, problems=problems,
                                          progress=lambda done, total: log(f"  {done}/{total} files"))
            known.update(t.id for t in tracks)
            uncropped.update(t.id for t in tracks if t.crop_present is None)
            videoless.update(t.id for t in tracks if t.video_path is None)
            stats["affwild2"][task.name] = _by_split(task, tracks, probed, problems)
            problems.extend(sources_in_both_splits(task, tracks, layout.task_dir(task) or layout.root))
        stats["test_files"] = {t.name: {"test_list": _relative(layout.test_list_files.get(t.template_key), layout),
                                        "template": _relative(layout.templates.get(t.template_key), layout)}
                               for t in affwild2_tasks if _holds(layout, t)}
        problems.extend(uncropped_warnings(layout, uncropped, faces))
        if faces is not None and "detected" in faces:
            problems.extend(videoless_warnings(layout, videoless))
        if layout.crops is not None and len(affwild2_tasks) == len(AFFWILD2_TASKS):
            for folder in sorted(p for p in layout.crops.iterdir() if p.is_dir() and p.name not in known):
                problems.append(Problem(folder, "crop folder for a track that no annotation file, test list "
                                                "or template names"))
    if VD in wanted:
        stats["dvd"] = {VD.name: None}
        if dvd.is_dvd_root(root):
            log("reading DVD annotations and templates ...")
            stats["dvd"][VD.name] = _by_split(VD, dvd.load_tracks(root, problems=problems), probed, problems)
    for task in (t for t in wanted if t.level == "video"):
        stats[task.dataset] = {task.name: None}
        reader = VIDEO_READERS[task.dataset]
        if has_root(root, reader.find_root):
            log(f"reading the {task.name.upper()} split files and videos ...")
            problems.extend(reader.layout_problems(root))
            stats[task.dataset][task.name] = _by_split(task, reader.load_tracks(root, problems=problems), probed,
                                                       problems)
    if all(summary is None for by_task in _datasets(stats).values() for summary in by_task.values()):
        raise DataError(root, f"none of the tasks {', '.join(t.name for t in wanted)} is here: neither an Aff-Wild2 "
                              "root (annotations/, cropped_aligned/) with their annotations or templates nor a DVD "
                              "root (Training/, Validation/, Test/) nor an EMI root (train_split.csv, "
                              "valid_split.csv) nor a BAH root (split/*.txt) was found here or one level down")
    if probed is not None:
        problems.extend(soundless_warnings(probed))
    return stats, problems


def _holds(layout: affwild2.AffWild2Layout, task: Task) -> bool:
    """True if the root holds anything of ``task``: annotations, a test list or a template."""
    return (layout.task_dir(task) is not None or task.template_key in layout.templates
            or task.template_key in layout.test_list_files)


def _listed_alone(layout: affwild2.AffWild2Layout, task: Task, problems: list[Problem]) -> list[str]:
    """The ids of ``task``'s test list when it has no template (the reader then reads no list):
    their crop folders are named by it."""
    path = layout.test_list_files.get(task.template_key)
    if path is None or task.template_key in layout.templates:
        return []
    try:
        return affwild2.read_test_list(path)
    except DataError as e:
        problems.append(e.problem)
        return []


def _relative(path: Path | None, layout: affwild2.AffWild2Layout) -> Path | None:
    return None if path is None else path.relative_to(layout.root)


def _datasets(stats: dict) -> dict:
    """The per-dataset part of ``stats`` (without ``test_files``)."""
    return {dataset: by_task for dataset, by_task in stats.items() if dataset != "test_files"}


def missing_test_files(layout: affwild2.AffWild2Layout, task: Task, need_templates: bool = False) -> list[Problem]:
    """Warnings for a task the root holds something of but whose test list or template was not
    found (the template an error with ``need_templates`` when the task has labelled tracks),
    naming where each was looked for and the candidate files not recognised."""
    if not _holds(layout, task):
        return []
    problems = []
    missing = affwild2.missing_template(layout, task)
    if missing is not None:
        labelled = layout.task_dir(task) is not None
        problems.append(Problem(layout.root, missing, severity="error" if need_templates and labelled else "warning"))
    if task.template_key not in layout.test_list_files:
        problems.append(Problem(layout.root, testfiles.missing_list(task, layout.root, layout.test_lists),
                                severity="warning"))
    return problems


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


def uncropped_warnings(layout: affwild2.AffWild2Layout, tracks: set[str],
                       faces: set[str] | None = None) -> list[Problem]:
    """Warnings for tracks without organiser crops: one per track when ``cropped_aligned/``
    exists (a folder missing there is easy to overlook), one in all when it does not. ``faces``
    are the configured face sources (None: not known); none unless ``crops`` is among them."""
    if not tracks or (faces is not None and "crops" not in faces):
        return []
    if faces is None:
        advice = ("face-absent if faces come from the crops (extract.faces.affwild2: crops, the default); "
                  "extract.faces.affwild2: detected finds faces in the raw videos instead (abaw inspect --config "
                  "CONFIG judges against a configuration)")
    else:
        advice = ("face-absent, as extract.faces.affwild2 is crops; extract.faces.affwild2: detected finds faces "
                  "in the raw videos instead")
    if layout.crops is None:
        return [Problem(layout.root, f"no cropped_aligned/ folder: the frames of all {len(tracks)} tracks are "
                                     f"{advice}", severity="warning")]
    return [Problem(layout.crops / track, f"no crop folder for track {track}: its frames are {advice}",
                    severity="warning") for track in sorted(tracks)]


def videoless_warnings(layout: affwild2.AffWild2Layout, tracks: set[str]) -> list[Problem]:
    """One warning for the tracks without a raw video when faces are detected in the raw videos:
    their rows have neither a face nor audio."""
    if not tracks:
        return []
    shown = ", ".join(sorted(tracks)[:5]) + (", ..." if len(tracks) > 5 else "")
    return [Problem(layout.root, f"{len(tracks)} track(s) have no raw video under videos/ or batch*/ ({shown}): "
                                 "with extract.faces.affwild2: detected their rows have no face, and no audio",
                    severity="warning")]


ABSENT = {"affwild2": "no annotation folder ({dirs}) and no test template",
          "dvd": "no DVD root (Training/, Validation/, Test/) here or one level down",
          "emi": "no EMI root (train_split.csv, valid_split.csv, raw/) here or one level down",
          "bah": "no BAH root (split/train.txt, split/val.txt, Videos/) here or one level down"}


def _by_split(task: Task, tracks: list[Track], probed: dict | None, problems: list[Problem]) -> dict:
    by_split: dict[str, list[Track]] = defaultdict(list)
    for track in tracks:
        by_split[track.split].append(track)
    summaries = {}
    for split, group in sorted(by_split.items()):
        infos = [] if probed is None else _probed(group, probed, problems)
        summaries[split] = summarise(task, group, [i.fps for i in infos if i.fps],
                                     soundless=sum(not i.has_audio for i in infos))
    return summaries


def format_report(stats: dict, problems: list[Problem]) -> str:
    """The table ``abaw inspect`` prints (absent tasks named, not counted as errors), followed
    by the problems as ``path:line: message``."""
    from abaw.tasks import get_task

    lines = [f"{'task':<5} {'split':<11} {'tracks':>6} {'lines':>9} {'valid':>15} {'no crop':>8} {'fps':>11}  "
             "faces / labels"]
    for dataset, tasks in _datasets(stats).items():
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
                extra = " ".join(f"{k}={s[k]}" for k in ("participants", "segments", "transcripts", "no_audio")
                                 if s.get(k) is not None)
                shown = " / ".join(x for x in (faces, _label_text(task, s), extra) if x)
                lines.append(f"{name.upper():<5} {split:<11} {s['tracks']:>6} {s['lines']:>9} {valid:>15} "
                             f"{crops:>8} {fps:>11}  {shown}")
    lines += files_read_lines(stats.get("test_files", {}))
    lines.append(SILENCE_NOTE)
    errors = [p for p in problems if p.severity == "error"]
    lines.append(f"{len(errors)} error(s), {len(problems) - len(errors)} warning(s)")
    lines.extend(str(p) for p in problems)
    return "\n".join(lines)


def files_read_lines(test_files: dict) -> list[str]:
    """Per Aff-Wild2 task, the file read as its test list and as its template (``none``: the
    warnings say where they were looked for)."""
    if not test_files:
        return []
    return ["test files read (relative to the Aff-Wild2 root):"] + [
        f"{name.upper():<5} test list: {files['test_list'] or 'none'}; template: {files['template'] or 'none'}"
        for name, files in test_files.items()]


def main_inspect(root: str | Path, probe_videos: bool = True, tasks: list[Task] | None = None,
                 faces: set[str] | None = None) -> int:
    """Run the inspection (``faces``: see :func:`inspect_root`), print the report; 1 if any
    problem is an error."""
    stats, problems = inspect_root(root, log=stderr_log,
                                   probe_videos=probe_videos, tasks=tasks, faces=faces)
    print(format_report(stats, problems))
    return 1 if any(p.severity == "error" for p in problems) else 0
