"""Read an Aff-Wild2 root as the organisers ship it, into Track records.

Accepted: every edition's task folder names (``EXPR_Recognition_Challenge``,
``EXPR_Classification_Challenge``, ``EXPR_Set``, ...), split folders ``Train_Set``/``Training_Set``
and ``Validation_Set``, an ``annotations`` or ``ABAW Annotations`` folder, raw videos under
``videos/`` or ``batch*/`` in any container the decoder reads (:mod:`features.containers`), test
lists in ``names_of_videos_in_each_test_set/`` and test templates in any folder whose name
mentions examples or templates, each named for its task (:mod:`abaw.data.testfiles`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from abaw.data import testfiles
from abaw.data.annotations import os_error, parse_annotation, parse_template, read_lines
from abaw.data.records import DataError, Problem, Track
from abaw.tasks import Task
from features.containers import is_video_container, video_file_verdict

SPLIT_FOLDERS = {"train_set": "train", "training_set": "train", "validation_set": "validation"}
_SIDE = re.compile(r"_(left|right)$")
# A part number after a resolution (122-60-1920x1080-3), or the M of videoN_M.
_PART = re.compile(r"(?P<source>.+-\d+x\d+)-\d+|(?P<numbered>video\d+)_\d+")


@dataclass
class AffWild2Layout:
    """Where each part of an Aff-Wild2 root lives (None when a part is absent).

    ``test_list_files`` and ``templates`` map ``Task.template_key`` to the file read;
    ``template_dirs`` are the folders templates were looked for in; ``unrecognised`` the
    ``.txt``/``.csv`` files there or in the lists folder that name no task (or several), and
    the files named for a task that lie elsewhere (:mod:`abaw.data.testfiles`).
    """

    root: Path
    annotations: Path | None
    crops: Path | None
    test_lists: Path | None
    videos: dict[str, Path] = field(default_factory=dict)
    templates: dict[str, Path] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    test_list_files: dict[str, Path] = field(default_factory=dict)
    template_dirs: list[Path] = field(default_factory=list)
    unrecognised: list[Path] = field(default_factory=list)

    def task_dir(self, task: Task) -> Path | None:
        """The annotation folder of ``task`` under any edition's name, or None."""
        if self.annotations is None:
            return None
        for name in task.annotation_dirs:
            if (self.annotations / name).is_dir():
                return self.annotations / name
        return None


def _listing(folder: Path) -> list[Path]:
    """The entries of ``folder``, sorted. An unreadable folder is a DataError naming it, where
    ``glob`` would yield nothing and make it look empty."""
    try:
        return sorted(folder.iterdir())
    except OSError as e:
        raise os_error(folder, e, "folder") from None


def child_dirs(folder: Path) -> list[Path]:
    return [p for p in _listing(folder) if p.is_dir()]


def is_affwild2_root(root: Path) -> bool:
    """True if ``root`` holds an annotations folder or a crop folder of Aff-Wild2."""
    return _find_annotations(root) is not None or (root / "cropped_aligned").is_dir()


def has_layout(root: str | Path) -> bool:
    """True if :func:`find_layout` finds an Aff-Wild2 root at ``root`` or one level down."""
    try:
        find_layout(root)
    except DataError:
        return False
    return True


def _find_annotations(root: Path) -> Path | None:
    for child in child_dirs(root):
        if child.name.lower() in ("annotations", "abaw annotations", "abaw_annotations"):
            return child
    return None


def find_layout(root: str | Path) -> AffWild2Layout:
    """Locate the parts of an Aff-Wild2 root.

    Raises:
        DataError: the root does not exist or has neither annotations nor crops.
    """
    given = Path(root)
    if not given.is_dir():
        raise DataError(given, message="dataset root not found")
    # A root holding both datasets (as the sample does) has Aff-Wild2 one level down.
    candidates = [given] + [d for d in child_dirs(given) if d.name.lower().replace("-", "") == "affwild2"]
    root = next((c for c in candidates if is_affwild2_root(c)), None)
    if root is None:
        raise DataError(given, message="no 'annotations' (or 'ABAW Annotations') or 'cropped_aligned' folder")
    layout = AffWild2Layout(
        root=root,
        annotations=_find_annotations(root),
        crops=root / "cropped_aligned" if (root / "cropped_aligned").is_dir() else None,
        test_lists=next((d for d in child_dirs(root) if testfiles.is_lists_folder(d.name)), None),
    )
    entries = _listing(root)
    for folder in (p for p in entries if p.is_dir()):
        name = folder.name.lower()
        if name in ("videos", "raw_videos") or name.startswith("batch"):
            _index_videos(folder, layout)
        elif testfiles.is_templates_folder(name):
            layout.template_dirs.append(folder)
            _index_test_files(folder, "template", layout.templates, layout)
        elif folder == layout.test_lists:
            _index_test_files(folder, "test list", layout.test_list_files, layout)
        elif folder not in (layout.annotations, layout.crops):
            _misplaced_test_files(folder, layout)  # a folder no part of the layout is read from
    testfiles.misplaced([p for p in entries if not p.is_dir()], layout.unrecognised, layout.problems)
    return layout


def _index_videos(folder: Path, layout: AffWild2Layout) -> None:
    index_videos(folder, layout.videos, layout.problems)


def index_videos(folder: Path, videos: dict[str, Path], problems: list[Problem]) -> None:
    """Add every video file under ``folder`` (any depth, :func:`video_files`) to ``videos`` by
    its stem; a second file of the same stem is a warning (the first is kept). Findings are
    appended to ``problems``. Shared by every reader of raw videos (Aff-Wild2's ``batch*/``,
    EMI's ``raw/``, BAH's ``Videos/``, DVD's ``videos/``)."""
    for path in video_files(folder, problems):
        if path.stem in videos:
            problems.append(Problem(path, f"duplicate of video {videos[path.stem]}; using the first",
                                    severity="warning"))
            continue
        videos[path.stem] = path


def video_files(folder: Path, problems: list[Problem]) -> list[Path]:
    """The video files under ``folder`` (any depth), sorted: known video containers, and other
    files the decoder opens as a video of more than one frame
    (:func:`features.containers.video_file_verdict`). Appended to ``problems``: a warning for
    each file taken on such a look inside and for each skipped file that might have been a
    video (with the reason), an error for an unreadable folder or a folder named like a video.
    ``cropped_aligned`` folders are not searched: their JPEG crops are no videos."""
    found: list[Path] = []

    def unreadable(error: OSError) -> None:
        # os.walk (like rglob) skips a folder it cannot list; say so rather than lose its videos.
        problems.append(os_error(Path(error.filename), error, "folder").problem)

    for parent, folders, files in os.walk(folder, onerror=unreadable):
        problems.extend(Problem(Path(parent, name), "a folder where a video file should be")
                        for name in folders if is_video_container(name))
        # A JPEG crop opens as a one-frame video: crop folders are never searched.
        folders[:] = [name for name in folders if name.lower() != "cropped_aligned"]
        for name in files:
            path = Path(parent, name)
            is_video, note = video_file_verdict(path)
            if is_video:
                found.append(path)
            if note is not None:
                problems.append(Problem(path, note, severity="warning"))
    return sorted(found)


def _index_test_files(folder: Path, kind: str, found: dict[str, Path], layout: AffWild2Layout) -> None:
    try:
        entries = _listing(folder)
    except DataError as e:
        layout.problems.append(e.problem)
        return
    testfiles.sort_files(entries, kind, found, layout.unrecognised, layout.problems)


def _misplaced_test_files(folder: Path, layout: AffWild2Layout) -> None:
    # scandir, names first: such a folder may hold many files (frames), none of them read.
    try:
        with os.scandir(folder) as entries:
            files = [Path(e.path) for e in entries if Path(e.name).suffix.lower() in testfiles.SUFFIXES and e.is_file()]
    except OSError:
        return  # nothing is read from this folder: what it holds is only looked at for advice
    testfiles.misplaced(sorted(files), layout.unrecognised, layout.problems)


def video_name(track_id: str, videos: dict[str, Path]) -> str:
    """The raw video a track belongs to: the id itself if such a video exists, else without
    its ``_left``/``_right`` suffix (both sides of a two-person video share one file)."""
    if track_id in videos:
        return track_id
    return _SIDE.sub("", track_id)


def source_name(video: str) -> str:
    """The recording a video (or track) was cut from, as far as its name shows it.

    Aff-Wild2 cuts one source into several videos with the same people, and two-person videos
    into ``_left``/``_right`` tracks; anything grouped by person must group by this name. The
    side suffix goes first, then a part number after a ``<W>x<H>`` resolution or the ``_M`` of
    ``videoN_M``; other names are their own source:

    ``122-60-1920x1080-3`` -> ``122-60-1920x1080``; ``video45_3`` -> ``video45``;
    ``10-30-640x360_left`` -> ``10-30-640x360``; ``1-30-1280x720`` and ``102`` stay as they are.
    """
    name = _SIDE.sub("", video)
    match = _PART.fullmatch(name)
    if match is None:
        return name
    return match.group("source") or match.group("numbered")


def group_by_source(videos: Iterable[str]) -> dict[str, list[str]]:
    """``{source: sorted videos}`` of ``videos`` (see :func:`source_name`), sorted by source."""
    groups: dict[str, list[str]] = {}
    for video in sorted(set(videos)):
        groups.setdefault(source_name(video), []).append(video)
    return dict(sorted(groups.items()))


def crop_mask(crop_dir: Path, frames: np.ndarray) -> np.ndarray:
    """(T,) bool: whether ``crop_dir/%05d.jpg`` exists for each frame number in ``frames``.

    An absent folder means no crops (all False); DataError naming ``crop_dir`` when it is a file
    or cannot be listed, since its crops cannot be told apart from missing ones then.
    """
    try:
        present = {entry.name for entry in os.scandir(crop_dir)}
    except FileNotFoundError:
        return np.zeros(len(frames), dtype=bool)
    except OSError as e:
        raise os_error(crop_dir, e, "crop folder") from None
    return np.fromiter((f"{int(f):05d}.jpg" in present for f in frames), dtype=bool, count=len(frames))


def read_test_list(path: Path) -> list[str]:
    """Track ids of a test-set release list, one per line (blank lines ignored).

    Raises:
        DataError: the list cannot be read or is not UTF-8 text.
    """
    return [line for line in read_lines(path) if line]


def load_tracks(
    layout: AffWild2Layout,
    task: Task,
    splits: tuple[str, ...] = ("train", "validation", "test"),
    problems: list[Problem] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> list[Track]:
    """Read every track of ``task`` in ``splits``.

    With ``problems`` given, a bad file is recorded there and skipped; without it the first bad
    file raises DataError. Crop masks are filled when the root has ``cropped_aligned``.
    ``progress(done, total)`` is called every 100 annotation files.
    """

    def fail(error: DataError) -> None:
        if problems is None:
            raise error
        problems.append(error.problem)

    tracks: list[Track] = []
    task_dir = layout.task_dir(task)
    # A root without this task's annotation folder simply has no labelled tracks of it: teams
    # often hold one task alone. `abaw inspect` reports which tasks are present.
    try:
        split_dirs = child_dirs(task_dir) if task_dir is not None else []
    except DataError as e:
        fail(e)
        split_dirs = []
    for split_dir in split_dirs:
        split = SPLIT_FOLDERS.get(split_dir.name.lower())
        if split is None:
            if problems is not None:
                problems.append(Problem(split_dir, "unknown split folder; expected Train_Set, "
                                        "Training_Set or Validation_Set", severity="warning"))
            continue
        if split not in splits:
            continue
        try:
            files = [p for p in _listing(split_dir) if p.name.endswith(".txt")]
        except DataError as e:
            fail(e)
            continue
        for done, path in enumerate(files, 1):
            if progress is not None and done % 100 == 0:
                progress(done, len(files))
            try:
                labels, valid = parse_annotation(path, task)
                track = _track(layout, task, split, path.stem, path, np.arange(1, len(labels) + 1), labels, valid)
            except DataError as e:
                fail(e)
                continue
            tracks.append(track)
    if "test" in splits:
        tracks.extend(_test_tracks(layout, task, fail))
    return tracks


def missing_template(layout: AffWild2Layout, task: Task) -> str | None:
    """Why ``task`` has no test template in ``layout`` (where it was looked for, under which
    names, the candidates not recognised), or None when it has one."""
    if task.template_key in layout.templates:
        return None
    return testfiles.missing_template(task, layout.root, layout.template_dirs, layout.unrecognised)


def _test_tracks(layout: AffWild2Layout, task: Task, fail) -> list[Track]:
    """Test tracks: ids from the release list, rows (T) from the task's template."""
    template = layout.templates.get(task.template_key)
    if template is None:
        return []
    try:
        rows = parse_template(template)
    except DataError as e:
        fail(e)
        return []
    listed = None
    # A folder in the list's place is kept by the index: reading it reports it, not taken for no list.
    test_list = layout.test_list_files.get(task.template_key)
    if test_list is not None:
        try:
            listed = read_test_list(test_list)
        except DataError as e:
            fail(e)
        for track_id in sorted(set(listed or ()) - set(rows)):
            fail(DataError(test_list, message=f"test track {track_id} has no rows in the template {template}"))
    tracks = []
    for track_id, frames in rows.items():
        if listed is not None and track_id not in listed:
            fail(DataError(template, message=f"rows for track {track_id}, which is not in the test list "
                           f"{test_list.name}"))
        try:
            track = _track(layout, task, "test", track_id, template, frames, None, None)
        except DataError as e:
            fail(e)
            continue
        if track.video_path is None and layout.videos:
            fail(DataError(template, message=f"template rows for track {track_id}, but no raw video "
                           f"{track.video} was found"))
        tracks.append(track)
    return tracks


def _track(layout, task, split, track_id, source, frames, labels, valid) -> Track:
    video = video_name(track_id, layout.videos)
    crop_dir = layout.crops / track_id if layout.crops is not None else None
    if crop_dir is not None and not crop_dir.exists():
        crop_dir = None  # no folder: this track has no organiser crops (something else there is an error)
    return Track(
        id=track_id, task=task.name, split=split, video=video, video_path=layout.videos.get(video),
        source=source, frames=frames, labels=labels, valid=valid, crop_dir=crop_dir,
        crop_present=crop_mask(crop_dir, frames) if crop_dir is not None else None,
    )
