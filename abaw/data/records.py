"""Typed records produced by the dataset readers, and the error they raise."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

SPLITS = ("train", "validation", "test")


@dataclass(frozen=True)
class Problem:
    """One finding of a dataset check, printed as ``path:line: message``."""

    path: Path
    message: str
    line: int | None = None
    severity: str = "error"  # "error" or "warning"

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line is not None else str(self.path)
        kind = "" if self.severity == "error" else f"{self.severity}: "
        return f"{where}: {kind}{self.message}"


class DataError(ValueError):
    """A dataset file is missing or malformed; ``problem`` names the file (and line)."""

    def __init__(self, path: str | Path, message: str, line: int | None = None) -> None:
        self.problem = Problem(Path(path), message, line)
        super().__init__(str(self.problem))


@dataclass
class Track:
    """One annotated sequence: a person in an Aff-Wild2 video, or a whole DVD video.

    Row ``i`` of every per-frame array is frame ``i + 1`` of the annotation file (or of the test
    template), which is the truth for the track's length: decoded video frames are padded or
    clipped to it downstream.

    Attributes:
        id: track name as the organisers write it (``video10_1_left``, ``0001``).
        task: task name (``expr``, ``va``, ``au``, ``vd``).
        split: ``train``, ``validation`` or ``test``.
        video: raw video id shared by ``_left``/``_right`` tracks (the suffix stripped).
        video_path: the raw video file, or None if it was not found.
        labels: (T, C) float32 labels, invalid codes kept as written; None for test tracks.
        valid: (T, C) bool, False where the label is the invalid code; None for test tracks.
        crop_present: (T,) bool, True where ``cropped_aligned/<id>/%05d.jpg`` exists; None if the
            dataset has no crops (DVD) or the crop folder is absent.
        source: the annotation file, or the template the test rows came from.
        frames: frame numbers (1-based) of the rows; ``arange(1, T + 1)`` for annotations.
        crop_dir: ``cropped_aligned/<id>`` (Aff-Wild2), or None where the track has no crop folder.
    """

    id: str
    task: str
    split: str
    video: str
    video_path: Path | None
    source: Path
    frames: np.ndarray
    labels: np.ndarray | None = None
    valid: np.ndarray | None = None
    crop_present: np.ndarray | None = None
    crop_dir: Path | None = None

    @property
    def num_frames(self) -> int:
        """T, the number of annotated (or template) rows."""
        return int(len(self.frames))


@dataclass
class VideoTrack(Track):
    """One video of a video-level task (EMI, A/H): one label row for the whole video.

    A :class:`Track` whose "rows" are its single label row: ``frames`` is ``[1]``, ``labels``
    and ``valid`` are (1, C). Folds, trivial baselines and metrics pool label rows over tracks,
    so they work on videos unchanged: N videos give the (N, C) arrays the video-level metrics
    are defined over. How many frames the video has is the media's business (the feature store
    records it), not the label's.

    Attributes (beyond :class:`Track`'s):
        listed_as: how the split file names the video (EMI's ``Filename``, BAH's relative
            video path): a submission names it the same way.
        participant: the person (BAH: the ``Videos/<pid>/`` folder); None for EMI, where every
            video is its own group.
        segments: (S, 2) float start and end seconds of the annotated A/H segments (BAH's
            ``time_detailed_ah``), or None when none are given.
        transcript: the Whisper transcript file of the video, or None.
        transcript_text: the transcript text the split file carries (BAH), or "".
    """

    listed_as: str = ""
    participant: str | None = None
    segments: np.ndarray | None = None
    transcript: Path | None = None
    transcript_text: str = ""
