"""Read a DVD (fine-grained violence detection) root into Track records.

Layout: ``{Training,Validation}/videos/<id>.mp4`` with ``{Training,Validation}/annotations/<id>.csv``
(columns frame, label), and ``Test/videos/<id>.mp4`` with one template CSV per video anywhere
else under ``Test/``; a video may be in any container the decoder reads
(:mod:`features.containers`). The root may be the ``DVD`` folder itself or its parent.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from abaw.data.affwild2 import index_videos
from abaw.data.annotations import parse_frame_csv
from abaw.data.records import DataError, Problem, Track
from abaw.tasks import VD

SPLIT_FOLDERS = {"training": "train", "train": "train", "validation": "validation", "test": "test"}


def find_root(root: str | Path) -> Path:
    """The folder holding DVD's split folders: ``root`` itself or ``root/DVD``.

    Raises:
        DataError: neither holds a Training, Validation or Test folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise DataError(root, "dataset root not found")
    for candidate in (root, root / "DVD"):
        if candidate.is_dir() and any(
            child.is_dir() and child.name.lower() in SPLIT_FOLDERS for child in candidate.iterdir()
        ):
            return candidate
    raise DataError(root, "no DVD split folder (Training, Validation or Test)")


def is_dvd_root(root: Path) -> bool:
    """True if ``root`` or ``root/DVD`` holds DVD split folders."""
    try:
        find_root(root)
    except DataError:
        return False
    return True


def load_tracks(
    root: str | Path,
    splits: tuple[str, ...] = ("train", "validation", "test"),
    problems: list[Problem] | None = None,
) -> list[Track]:
    """Read every DVD video of ``splits`` as a track (id = video id).

    With ``problems`` given, a bad file is recorded there and skipped; without it the first bad
    file raises DataError.
    """
    root = find_root(root)
    tracks: list[Track] = []
    for split_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        split = SPLIT_FOLDERS.get(split_dir.name.lower())
        if split is None or split not in splits:
            continue
        videos = _videos(split_dir / "videos", problems)
        csvs = sorted(p for p in split_dir.rglob("*.csv") if "videos" not in p.relative_to(split_dir).parts)
        for path in csvs:
            try:
                frames, labels = parse_frame_csv(path, require_labels=split != "test")
                if path.stem not in videos:
                    raise DataError(path, f"no video {path.stem} in {split_dir / 'videos'}")
            except DataError as e:
                if problems is None:
                    raise
                problems.append(e.problem)
                continue
            track = Track(
                id=path.stem, task=VD.name, split=split, video=path.stem, video_path=videos[path.stem],
                source=path, frames=frames,
            )
            if labels is not None:
                track.labels = labels.astype(np.float32)[:, None]
                track.valid = np.ones_like(track.labels, dtype=bool)
            tracks.append(track)
        if problems is not None:
            for stem in sorted(set(videos) - {p.stem for p in csvs}):
                problems.append(Problem(videos[stem], "video has no annotation or template CSV", severity="warning"))
    return tracks


def _videos(folder: Path, problems: list[Problem] | None) -> dict[str, Path]:
    """The videos of a split's ``videos`` folder by stem (none when it is absent); what
    :func:`abaw.data.affwild2.index_videos` finds is recorded in ``problems``, or, without
    them, an error is raised."""
    videos: dict[str, Path] = {}
    if not folder.is_dir():
        return videos
    found: list[Problem] = []
    index_videos(folder, videos, found)
    for problem in found:
        if problems is not None:
            problems.append(problem)
        elif problem.severity == "error":
            raise DataError(problem.path, problem.message, problem.line)
    return videos
