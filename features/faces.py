"""Face detection on raw video: every displayed frame (or every ``frame_step``-th) of a video
through a registered detector, boxes in full-frame pixels.

The detector sees frames the decoder has already scaled down to ``detect_size`` (longest
side): on a CPU, MTCNN's cost grows with the pixels it scans, and batching frames barely helps
(benchmarks/bench_faces.py), so the size it sees and how many frames it sees are the levers.
Boxes and landmarks are mapped back to the full frame, and ``min_face_size`` is given in
full-frame pixels and scaled with the frame, so a setting means the same on every video.

Linking detections into identities is :mod:`features.tracking`; the faces stage of extraction
and ``abaw faces`` are :mod:`abaw.faces`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import torch

from features.media import MediaError, displayed_frames, frame_index

#: ``name -> detector class``: classes take ``(spec, device)`` and have ``detect(frames)``.
DETECTORS: dict[str, type] = {}


def register_detector(name: str) -> Callable[[type], type]:
    """Class decorator: make a detector available as ``DetectorSpec(name=...)``."""

    def decorate(cls: type) -> type:
        DETECTORS[name] = cls
        return cls

    return decorate


@dataclass(frozen=True)
class DetectorSpec:
    """Everything that changes which boxes a video gets.

    Attributes:
        name: registry entry (:data:`DETECTORS`).
        min_face_size: smallest face searched for, in full-frame pixels.
        thresholds: MTCNN's three stage thresholds (P-, R-, O-net).
        factor: scale step of the image pyramid.
        min_score: detections scoring below are dropped (the per-video ``threshold`` override).
        detect_size: longest side of the frames the detector sees (frames are scaled down to it,
            never up); None for the decoded size.
        frame_step: detect on every ``frame_step``-th frame; the tracker interpolates boxes
            between detected frames.
        batch_size: frames per detector call (speed only, not in the fingerprint).
    """

    name: str = "mtcnn"
    min_face_size: int = 20
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    factor: float = 0.709
    min_score: float = 0.8
    detect_size: int | None = 640
    frame_step: int = 1
    batch_size: int = 16

    def __post_init__(self) -> None:
        if self.name not in DETECTORS:
            raise ValueError(f"unknown face detector {self.name!r}; registered: {', '.join(sorted(DETECTORS))}")
        object.__setattr__(self, "thresholds", tuple(float(t) for t in self.thresholds))
        if len(self.thresholds) != 3:
            raise ValueError(f"detector thresholds: need three values (P-, R-, O-net), got {list(self.thresholds)}")
        if self.min_face_size < 1 or self.frame_step < 1 or self.batch_size < 1:
            raise ValueError("detector min_face_size, frame_step and batch_size must be positive integers")
        if self.detect_size is not None and self.detect_size < 32:
            raise ValueError(f"detector detect_size={self.detect_size}: too small to find a face (use >= 32 or null)")

    def numeric_fields(self) -> dict:
        """The fields that change the boxes (all but the batch size), and the detector's
        package version (its weights ship inside the wheel)."""
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k != "batch_size"}
        fields["package"] = DETECTORS[self.name].package_version()
        return fields

    def fingerprint(self) -> str:
        text = json.dumps(self.numeric_fields(), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass
class VideoDetections:
    """Every detection of one video.

    ``frames`` displayed frames of ``width`` x ``height`` pixels starting at ``times`` (frames,)
    float64 seconds: presentation times less the first displayed frame's, so 0 = the first
    displayed frame whatever time the container gives it (:class:`features.media.FrameIndex`); ``detected`` (frames,) bool marks the frames the detector ran on.
    Detection ``k`` is on frame ``frame[k]`` (0-based display order): ``boxes[k]`` = x0, y0,
    x1, y1 and ``landmarks[k]`` = five (x, y) points (eyes, nose, mouth corners), in full-frame
    pixels; ``scores[k]`` its probability.
    """

    width: int
    height: int
    times: np.ndarray
    detected: np.ndarray
    frame: np.ndarray
    boxes: np.ndarray
    landmarks: np.ndarray
    scores: np.ndarray

    @property
    def frames(self) -> int:
        return len(self.times)

    def on(self, index: int) -> np.ndarray:
        """Indices of the detections of frame ``index``."""
        lo, hi = np.searchsorted(self.frame, [index, index + 1])
        return np.arange(lo, hi)

    def kept(self, min_score: float) -> VideoDetections:
        """The detections scoring at least ``min_score``."""
        keep = self.scores >= min_score
        return dataclasses.replace(self, frame=self.frame[keep], boxes=self.boxes[keep],
                                   landmarks=self.landmarks[keep], scores=self.scores[keep])

    def save(self, path: Path) -> None:
        """Write to ``path`` (.npz) atomically."""
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, **{k: np.asarray(v) for k, v in dataclasses.asdict(self).items()})
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> VideoDetections:
        with np.load(path) as data:
            values = {f.name: data[f.name] for f in dataclasses.fields(cls)}
        return cls(**{**values, "width": int(values["width"]), "height": int(values["height"])})


def detect_video(path: str | Path, detector, spec: DetectorSpec) -> VideoDetections:
    """Run ``detector`` over the displayed frames of ``path`` (every ``spec.frame_step``-th),
    decoded in order and scaled to ``spec.detect_size`` by the decoder; raises
    :class:`features.media.MediaError` when the video cannot be read."""
    path = Path(path)
    index = frame_index(path)
    count = len(index.pts)
    if not count:
        raise MediaError(f"{path}: no video frames")
    rows = np.arange(0, count, spec.frame_step)
    frames_k, boxes_k, marks_k, scores_k = [], [], [], []
    width = height = 0
    batch: list[np.ndarray] = []
    batch_rows: list[int] = []
    scale = 1.0

    def flush() -> None:
        found = detector.detect(np.stack(batch), min_face_size=max(12.0, spec.min_face_size * scale))
        for row, (boxes, marks, scores) in zip(batch_rows, found):
            frames_k.append(np.full(len(scores), row))
            boxes_k.append(boxes / scale)
            marks_k.append(marks / scale)
            scores_k.append(scores)
        batch.clear()
        batch_rows.clear()

    for row, image, (width, height) in displayed_frames(path, index, rows, spec.detect_size):
        scale = image.shape[1] / width
        batch.append(image)
        batch_rows.append(row)
        if len(batch) == spec.batch_size:
            flush()
    if batch:
        flush()
    detected = np.zeros(count, bool)
    detected[rows] = True
    order = lambda parts, shape: np.concatenate(parts).astype(np.float32) if parts else np.zeros(shape, np.float32)
    return VideoDetections(
        width, height, index.stamps[:, 0].copy(), detected,
        np.concatenate(frames_k).astype(np.int64) if frames_k else np.zeros(0, np.int64),
        order(boxes_k, (0, 4)), order(marks_k, (0, 5, 2)), order(scores_k, (0,)))


@register_detector("mtcnn")
class MTCNNDetector:
    """facenet-pytorch's MTCNN (its P/R/O-net weights ship inside the wheel), on a batch of
    equal-size frames."""

    def __init__(self, spec: DetectorSpec, device: torch.device | str = "cpu") -> None:
        from facenet_pytorch import MTCNN

        self.model = MTCNN(keep_all=True, min_face_size=spec.min_face_size, thresholds=list(spec.thresholds),
                           factor=spec.factor, select_largest=False, device=torch.device(device))

    @staticmethod
    def package_version() -> str:
        return metadata.version("facenet-pytorch")

    def detect(self, frames: np.ndarray, min_face_size: float) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        """Per frame of uint8 ``(N, H, W, 3)``: boxes (k, 4), landmarks (k, 5, 2), scores (k,)."""
        self.model.min_face_size = min_face_size
        boxes, scores, marks = self.model.detect(frames, landmarks=True)
        out = []
        for b, s, m in zip(boxes, scores, marks):
            if b is None:
                out.append((np.zeros((0, 4)), np.zeros((0, 5, 2)), np.zeros(0)))
            else:
                out.append((np.asarray(b, np.float64).reshape(-1, 4), np.asarray(m, np.float64).reshape(-1, 5, 2),
                            np.asarray(s, np.float64).reshape(-1)))
        return out


def create_detector(spec: DetectorSpec, device: torch.device | str = "cpu"):
    """The registered detector of ``spec``, on ``device``."""
    return DETECTORS[spec.name](spec, device)
