"""Read a BAH root (the A/H challenge) into video-level records, one per answered question.

Layout as public team code reads it (ABAW_FORMATS.md §6; unconfirmed in detail)::

    <root>/Videos/<pid>/Visite_1/<pid>_Question_<q>_..._Video.mp4
    <root>/split/{train,val,test}.txt          one video a line: <path>,<label 0/1>,<transcript>
                                               (path relative to Videos/, split by participant)
    <root>/video_annotation_transcript.yaml    per video: global_ah (0/1) and time_detailed_ah
                                               (the A/H segments)
    <root>/transcription/                      Whisper transcripts with timestamps, per video
    <root>/cropped-aligned-faces/              (may be present)

Read leniently: a split file may have a header line, leave out the transcript (or the label,
for test), name its videos relative to ``Videos/`` or to the root, or by file name alone;
``valid``/``validation`` for ``val``; the YAML may nest its entries or list them, name a video by
path, file name or stem, and give a segment as ``{start, end}`` (or ``begin``/``start_time``
...) or ``[start, end]`` in seconds or ``HH:MM:SS.mmm``. What differs from the expected layout
is a warning of :func:`layout_problems`. Bad input is an error naming the file and line: a
missing file, a label or ``global_ah`` that is not 0/1 (or the two disagreeing), a listed
video with no file, a malformed segment.

The participant of a video is the ``Videos/<pid>/`` folder it is under; ``VideoTrack.video``
is ``<pid>/<video stem>``, so that folds, which group by these names, keep a participant's
videos together (:func:`group_by_participant`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from abaw.data.annotations import read_bytes, read_lines
from abaw.data.records import DataError, Problem, VideoTrack
from abaw.data.transcripts import index_transcripts, parse_time
from abaw.data.videolevel import (Collector, find_dataset_root, refuse_relisted, split_file_problems, video_stem,
                                  video_track, wanted_files)
from abaw.tasks import AH

SPLIT_WORDS = {"train": "train", "training": "train", "val": "validation", "valid": "validation",
               "validation": "validation", "test": "test"}
EXPECTED_SPLIT_FILES = {"train": "train.txt", "validation": "val.txt", "test": "test.txt"}
ANNOTATION_FILE = "video_annotation_transcript.yaml"
_HEADER_WORDS = {"video_path", "path", "video", "file", "filename", "video_id", "id"}
_START, _END = ("start", "begin", "start_time", "begin_time", "onset"), ("end", "stop", "end_time", "offset")


def is_bah_root(folder: Path) -> bool:
    """True if ``folder`` holds BAH's ``split/`` folder of ``<split>.txt`` files."""
    return (folder / "split").is_dir() and bool(split_files(folder))


def find_root(root: str | Path) -> Path:
    """The folder holding ``split/`` (and ``Videos/``): ``root`` itself or a folder below it."""
    return find_dataset_root(root, is_bah_root, "BAH root (split/train.txt, split/val.txt)")


def split_files(root: Path) -> dict[Path, str]:
    """``{file: split}`` of ``split/<word>.txt`` (word: train, val, valid, validation, test)."""
    folder = root / "split"
    if not folder.is_dir():
        return {}
    return {p: SPLIT_WORDS[p.stem.lower()] for p in sorted(folder.iterdir())
            if p.suffix.lower() in (".txt", ".csv") and p.stem.lower() in SPLIT_WORDS}


def videos_folder(root: Path) -> Path:
    """``Videos/`` (any case) when there is one, else the root itself."""
    return next((p for p in sorted(root.iterdir()) if p.is_dir() and p.name.lower() == "videos"), root)


def participant_of(listed: str, video: Path, videos_root: Path) -> str:
    """The participant of a video: the first folder of its path below ``Videos/`` (as listed,
    else as found), else its name up to ``_Question`` (else up to its first ``_``)."""
    parts = [p for p in Path(listed).parts if p.lower() != "videos"]
    if len(parts) >= 2:
        return parts[0]
    try:
        relative = video.relative_to(videos_root).parts
    except ValueError:
        relative = ()
    if len(relative) >= 2:
        return relative[0]
    stem = video.stem
    return stem.split("_Question")[0] if "_Question" in stem else stem.split("_")[0]


def group_by_participant(videos) -> dict[str, list[str]]:
    """``{participant: sorted videos}`` of ``VideoTrack.video`` names (``<pid>/<stem>``)."""
    groups: dict[str, list[str]] = {}
    for video in sorted(set(videos)):
        groups.setdefault(video.split("/", 1)[0], []).append(video)
    return dict(sorted(groups.items()))


# ----------------------------------------------------------------------------- the annotation YAML


class _LineLoader(yaml.SafeLoader):
    """A safe loader that records each mapping's first line (1-based) under ``__line__``, so an
    error in a 1,000-video YAML can name its line."""

    def construct_mapping(self, node, deep=False):
        mapping = super().construct_mapping(node, deep=deep)
        mapping["__line__"] = node.start_mark.line + 1
        return mapping


def annotation_file(root: Path) -> Path | None:
    """``video_annotation_transcript.yaml``, else the one YAML file of the root, else None."""
    if (root / ANNOTATION_FILE).is_file():
        return root / ANNOTATION_FILE
    others = sorted(p for p in root.iterdir() if p.is_file() and p.suffix.lower() in (".yaml", ".yml"))
    return others[0] if len(others) == 1 else None


def read_annotations(path: Path) -> dict[str, dict]:
    """``{video stem: {"global_ah": 0/1 or None, "segments": (S, 2) seconds, "line": n}}`` of the
    annotation YAML: every mapping holding ``global_ah`` or ``time_detailed_ah`` is one video's
    entry, named by its ``video``/``video_path``/``path``/``name`` field or else by the key it
    sits under.

    Raises:
        DataError: unreadable or malformed YAML, a global_ah that is not 0/1, a malformed
            segment, a video with two entries; naming the file and line.
    """
    try:
        text = read_bytes(path).decode("utf-8-sig")
    except UnicodeDecodeError as e:
        raise DataError(path, f"not a UTF-8 text file ({e.reason})") from None
    try:
        data = yaml.load(text, Loader=_LineLoader)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        raise DataError(path, f"not valid YAML: {getattr(e, 'problem', e)}",
                        mark.line + 1 if mark is not None else None) from None
    entries: dict[str, dict] = {}

    def walk(value, name: str | None) -> None:
        if isinstance(value, dict):
            line = value.get("__line__")
            if "global_ah" in value or "time_detailed_ah" in value:
                own = next((value[k] for k in ("video", "video_path", "path", "name", "id") if k in value), name)
                if own is None:
                    raise DataError(path, "an entry with global_ah names no video", line)
                stem = video_stem(own)
                if stem in entries:
                    raise DataError(path, f"video {stem} has two entries (first at line {entries[stem]['line']})", line)
                entries[stem] = {"global_ah": _global_ah(path, value, line),
                                 "segments": _segments(path, value.get("time_detailed_ah"), line), "line": line}
                return
            for key, child in value.items():
                if key != "__line__":
                    walk(child, str(key))
        elif isinstance(value, list):
            for child in value:
                walk(child, None)

    walk(data, None)
    return entries


def _global_ah(path: Path, entry: dict, line: int | None) -> int | None:
    value = entry.get("global_ah")
    if value is None:
        return None
    if isinstance(value, bool) or str(value).strip() not in ("0", "1"):
        raise DataError(path, f"global_ah {value!r} is not 0 or 1", line)
    return int(str(value).strip())


def _segments(path: Path, value, line: int | None) -> np.ndarray:
    """(S, 2) start and end seconds of ``time_detailed_ah``: a list of ``{start, end}`` mappings
    or ``[start, end]`` pairs (a single pair alone is one segment); None or [] gives none."""
    if value is None or value == []:
        return np.zeros((0, 2))
    items = [value] if isinstance(value, dict) or (isinstance(value, list) and len(value) == 2 and not any(
        isinstance(v, (list, dict)) for v in value)) else value
    if not isinstance(items, list):
        raise DataError(path, f"time_detailed_ah {value!r} is not a list of segments", line)
    rows = []
    for item in items:
        where = item.get("__line__", line) if isinstance(item, dict) else line
        if isinstance(item, dict):
            start = next((item[k] for k in _START if k in item), None)
            end = next((item[k] for k in _END if k in item), None)
        elif isinstance(item, (list, tuple)) and len(item) == 2:
            start, end = item
        else:
            start = end = None
        if start is None or end is None:
            shown = {k: v for k, v in item.items() if k != "__line__"} if isinstance(item, dict) else item
            raise DataError(path, f"segment {shown!r} is not {{start, end}} or [start, end]", where)
        start, end = parse_time(str(start), path, where), parse_time(str(end), path, where)
        if end < start:
            raise DataError(path, f"segment ends at {end:g} s before it starts at {start:g} s", where)
        rows.append((start, end))
    return np.asarray(rows, dtype=np.float64).reshape(-1, 2)


# ----------------------------------------------------------------------------- split files


def _split_lines(path: Path) -> list[tuple[int, str, str | None, str]]:
    """(line, listed path, label field or None, transcript) of each video line of a split
    file; a first line naming columns (``video_path,label,...``) is a header and skipped."""
    rows = []
    for index, text in enumerate(read_lines(path)):
        if not text:
            continue
        fields = text.split(",", 2)
        if index == 0 and fields[0].strip().lower() in _HEADER_WORDS and (
                len(fields) < 2 or fields[1].strip() not in ("0", "1")):
            continue
        label = fields[1].strip() if len(fields) > 1 else None
        rows.append((index + 1, fields[0].strip(), label, fields[2].strip() if len(fields) > 2 else ""))
    return rows


def load_tracks(root: str | Path, splits: tuple[str, ...] = ("train", "validation", "test"),
                problems: list[Problem] | None = None) -> list[VideoTrack]:
    """Every video of the split files of ``splits``, with its label (the split file's, else
    the YAML's ``global_ah``; none for test), participant, segments and transcript file.

    With ``problems`` given, a bad file or line is recorded there and skipped; without it the
    first one raises DataError.
    """
    root = find_root(root)
    errors = Collector(problems)
    videos_root = videos_folder(root)
    videos = errors.videos(videos_root)
    annotations: dict[str, dict] = {}
    yaml_path = annotation_file(root)
    if yaml_path is not None:
        try:
            annotations = read_annotations(yaml_path)
        except DataError as e:
            errors.fail(e)
    transcripts = index_transcripts(root / "transcription")
    seen: dict[str, tuple[Path, int]] = {}
    tracks: list[VideoTrack] = []
    for path, split in wanted_files(split_files(root), splits):
        try:
            rows = _split_lines(path)
        except DataError as e:
            errors.fail(e)
            continue
        for number, listed, label, text in rows:
            try:
                track = _track(root, videos_root, videos, annotations, yaml_path, path, split, number, listed, label,
                               seen)
            except DataError as e:
                errors.fail(e)
                continue
            track.transcript, track.transcript_text = transcripts.get(track.id), text
            seen[track.id] = (path, number)
            tracks.append(track)
    return tracks


def _track(root: Path, videos_root: Path, videos: dict[str, Path], annotations: dict[str, dict],
           yaml_path: Path | None, path: Path, split: str, number: int, listed: str, label: str | None,
           seen: dict[str, tuple[Path, int]]) -> VideoTrack:
    """The record of one split-file line; DataError naming the line for anything wrong."""
    if not listed:
        raise DataError(path, "empty video path", number)
    stem = video_stem(listed)
    refuse_relisted(seen, stem, stem, path, number)
    candidates = [videos_root / listed, root / listed]
    video = next((c for c in candidates if c.is_file()), videos.get(stem))
    if video is None:
        raise DataError(path, f"listed video {listed} has no file (looked for {candidates[0]}, and for "
                              f"{stem}.* anywhere under {videos_root})", number)
    entry = annotations.get(stem)
    value = None
    if split != "test":
        if label not in (None, ""):
            if label not in ("0", "1"):
                raise DataError(path, f"label {label!r} of video {stem} is not 0 or 1", number)
            value = int(label)
        if entry is not None and entry["global_ah"] is not None:
            if value is not None and value != entry["global_ah"]:
                raise DataError(path, f"label {value} of video {stem} disagrees with global_ah "
                                      f"{entry['global_ah']} at {yaml_path}:{entry['line']}", number)
            value = entry["global_ah"]
        if value is None:
            raise DataError(path, f"video {stem} has no label: none on this line and no global_ah in "
                                  f"{yaml_path or ANNOTATION_FILE}", number)
    participant = participant_of(listed, video, videos_root)
    return video_track(AH.name, split, stem, f"{participant}/{stem}", video, path,
                       None if value is None else np.array([value]), listed_as=listed, participant=participant,
                       segments=None if entry is None else entry["segments"])


def layout_problems(root: str | Path) -> list[Problem]:
    """What differs from the expected BAH layout, as warnings: split files under other names
    or absent, no ``Videos/``, no annotation YAML, YAML entries for videos in no split file,
    listed train/validation videos without an entry, listed videos without a transcript, a
    participant in two splits."""
    root = find_root(root)
    problems = split_file_problems(split_files(root), EXPECTED_SPLIT_FILES, root / "split", "split/")
    if videos_folder(root) == root:
        problems.append(Problem(root / "Videos", "no Videos/ folder: videos are looked for anywhere under the root",
                                severity="warning"))
    tracks = load_tracks(root, problems=[])
    yaml_path = annotation_file(root)
    if yaml_path is None:
        problems.append(Problem(root / ANNOTATION_FILE, "not found: no A/H segments; video labels from the split "
                                                        "files alone", severity="warning"))
    elif yaml_path.name != ANNOTATION_FILE:
        problems.append(Problem(yaml_path, f"read as the annotation file (expected the name {ANNOTATION_FILE})",
                                severity="warning"))
    if yaml_path is not None:
        try:
            extra = sorted(set(read_annotations(yaml_path)) - {t.id for t in tracks})
        except DataError:
            extra = []  # load_tracks reports the error itself
        if extra:
            problems.append(Problem(yaml_path, f"entries for {len(extra)} video(s) in no split file, e.g. "
                                               f"{', '.join(extra[:3])}", severity="warning"))
        # Test videos have none where the test labels are withheld.
        _count(problems, yaml_path, [t for t in tracks if t.segments is None and t.split != "test"],
               "no entry (no segments)")
    if not (root / "transcription").is_dir():
        problems.append(Problem(root / "transcription", "no transcription/ folder: no timed transcripts",
                                severity="warning"))
    else:
        _count(problems, root / "transcription", [t for t in tracks if t.transcript is None], "no transcript file")
    splits: dict[str, set[str]] = {}
    for track in tracks:
        splits.setdefault(track.participant, set()).add(track.split)
    for participant, names in sorted(splits.items()):
        if len(names) > 1:
            problems.append(Problem(root / "split", f"participant {participant} has videos in several splits "
                                                    f"({', '.join(sorted(names))}); BAH splits by participant",
                                    severity="warning"))
    return problems


def _count(problems: list[Problem], path: Path, tracks: list[VideoTrack], what: str) -> None:
    if tracks:
        problems.append(Problem(path, f"{len(tracks)} listed video(s) with {what}, e.g. "
                                      f"{', '.join(t.id for t in tracks[:3])}", severity="warning"))
