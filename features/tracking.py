"""From per-frame detections to identities: link, bridge, stitch, rank.

1. **Link.** Frame by frame, open tracklets (each box moved on at its last velocity) are
   matched to the frame's detections by Hungarian assignment (scipy's
   ``linear_sum_assignment``) on 1 − IoU, among the pairs that
   overlap by at least ``min_iou`` or whose centres are within ``max_shift`` box sides; an
   unmatched detection opens a tracklet, and one unseen for more than ``max_gap`` frames closes.
2. **Bridge.** Inside a tracklet, the frames between two detections get the linearly
   interpolated box and landmarks (no score) when the detector skipped them (``frame_step``
   > 1) or missed the face on at most ``bridge`` of them: a blurred frame is bridged, a hand
   over the face for longer is not.
3. **Drop** tracklets with fewer than ``min_detections`` detections: spurious boxes.
4. **Stitch.** A tracklet that starts after another ended, near where it ended (centres within
   ``stitch_shift`` box sides), continues it: one identity across an occlusion longer than
   ``max_gap``. The frames between stay face-absent.
5. **Rank.** Identities in decreasing number of frames with a box: identity 0 is the person
   present longest, the main face of a single-person video. In a two-person video
   (Aff-Wild2's ``_left``/``_right``) the two longest identities take the sides where they sit.

Per-video overrides (:func:`read_overrides`) choose another identity, a minimum face size or a
score threshold, fix a box, or say the video has no usable face.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.optimize import linear_sum_assignment

from features.faces import VideoDetections


class OverrideError(ValueError):
    """A faces override file that cannot be used: the message names the file and line."""


@dataclass(frozen=True)
class TrackerSpec:
    """Settings of the linking (see the module docstring); all change the boxes a track gets."""

    min_iou: float = 0.3
    max_shift: float = 0.5
    max_gap: int = 12
    bridge: int = 1
    min_detections: int = 5
    stitch_shift: float = 1.0

    def __post_init__(self) -> None:
        if self.max_gap < 1 or self.min_detections < 1 or self.bridge < 0:
            raise ValueError("tracker max_gap and min_detections must be positive integers, bridge >= 0")

    def fingerprint(self) -> str:
        text = json.dumps(dataclasses.asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]


@dataclass
class Identity:
    """One person through a video of N frames: ``boxes`` (N, 4) and ``landmarks`` (N, 5, 2) in
    full-frame pixels, NaN where the person has no box; ``scores`` (N,) the detector's, NaN on
    interpolated and absent frames."""

    boxes: np.ndarray
    landmarks: np.ndarray
    scores: np.ndarray

    @property
    def present(self) -> np.ndarray:
        return ~np.isnan(self.boxes[:, 0])

    @classmethod
    def empty(cls, frames: int) -> Identity:
        return cls(np.full((frames, 4), np.nan), np.full((frames, 5, 2), np.nan), np.full(frames, np.nan))

    @classmethod
    def fixed(cls, frames: int, box: list[float]) -> Identity:
        """The same box on every frame (an override), no landmarks, no score."""
        identity = cls.empty(frames)
        identity.boxes[:] = np.asarray(box, dtype=np.float64)
        return identity

    def centre_x(self) -> float:
        """Mean horizontal centre over the frames with a box."""
        boxes = self.boxes[self.present]
        return float(((boxes[:, 0] + boxes[:, 2]) / 2).mean())


def _iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) IoU of two sets of boxes."""
    x0 = np.maximum(a[:, None, 0], b[None, :, 0])
    y0 = np.maximum(a[:, None, 1], b[None, :, 1])
    x1 = np.minimum(a[:, None, 2], b[None, :, 2])
    y1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda c: (c[:, 2] - c[:, 0]) * (c[:, 3] - c[:, 1])
    return inter / np.maximum(area(a)[:, None] + area(b)[None, :] - inter, 1e-9)


def paired_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(N,) IoU of ``a[i]`` with ``b[i]`` for two (N, 4) box arrays (NaN where a box is NaN)."""
    x0, y0 = np.maximum(a[:, 0], b[:, 0]), np.maximum(a[:, 1], b[:, 1])
    x1, y1 = np.minimum(a[:, 2], b[:, 2]), np.minimum(a[:, 3], b[:, 3])
    inter = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    area = lambda c: (c[:, 2] - c[:, 0]) * (c[:, 3] - c[:, 1])
    return inter / (area(a) + area(b) - inter)


def _shift(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(len(a), len(b)) distance between box centres, in sides of the ``a`` box."""
    ca, cb = (a[:, :2] + a[:, 2:]) / 2, (b[:, :2] + b[:, 2:]) / 2
    side = np.maximum(a[:, 2] - a[:, 0], a[:, 3] - a[:, 1])
    return np.linalg.norm(ca[:, None] - cb[None], axis=-1) / np.maximum(side[:, None], 1e-9)


def _predicted(detections: VideoDetections, members: list[int], frame: int) -> np.ndarray:
    """Where a tracklet's box should be on ``frame``: its last box moved on at the velocity of
    its last two detections (two faces crossing keep their directions), or the last box."""
    last = detections.boxes[members[-1]]
    if len(members) < 2:
        return last
    previous = detections.boxes[members[-2]]
    f0, f1 = detections.frame[members[-2]], detections.frame[members[-1]]
    return last + (last - previous) * (frame - f1) / max(f1 - f0, 1)


def _link(detections: VideoDetections, spec: TrackerSpec) -> list[list[int]]:
    """Tracklets as lists of detection indices, in frame order."""
    tracklets: list[list[int]] = []
    open_ids: list[int] = []
    for frame in np.flatnonzero(detections.detected):
        found = detections.on(int(frame))
        open_ids = [t for t in open_ids if frame - detections.frame[tracklets[t][-1]] <= spec.max_gap]
        matched: set[int] = set()
        if open_ids and len(found):
            last = np.stack([_predicted(detections, tracklets[t], int(frame)) for t in open_ids])
            boxes = detections.boxes[found]
            iou, shift = _iou(last, boxes), _shift(last, boxes)
            allowed = (iou >= spec.min_iou) | (shift <= spec.max_shift)
            cost = np.where(allowed, 1.0 - iou + 0.01 * shift, 1e6)
            for r, c in zip(*linear_sum_assignment(cost)):
                if allowed[r, c]:
                    tracklets[open_ids[r]].append(int(found[c]))
                    matched.add(int(c))
        for c, index in enumerate(found):
            if c not in matched:
                tracklets.append([int(index)])
                open_ids.append(len(tracklets) - 1)
    return tracklets


def _bridged(detections: VideoDetections, members: list[int], spec: TrackerSpec) -> Identity:
    """The identity of one tracklet: its detections and the interpolated frames between."""
    identity = Identity.empty(detections.frames)
    frames = detections.frame[members]
    identity.boxes[frames] = detections.boxes[members]
    identity.landmarks[frames] = detections.landmarks[members]
    identity.scores[frames] = detections.scores[members]
    for (a, fa), (b, fb) in zip(zip(members, frames), zip(members[1:], frames[1:])):
        missed = int(detections.detected[fa + 1:fb].sum())  # frames the detector ran on, in vain
        if fb - fa > 1 and missed <= spec.bridge:
            w = ((np.arange(fa + 1, fb) - fa) / (fb - fa))[:, None]
            identity.boxes[fa + 1:fb] = (1 - w) * detections.boxes[a] + w * detections.boxes[b]
            identity.landmarks[fa + 1:fb] = ((1 - w[:, :, None]) * detections.landmarks[a]
                                             + w[:, :, None] * detections.landmarks[b])
    return identity


def _stitch(pieces: list[Identity], spec: TrackerSpec) -> list[Identity]:
    """Join each piece to the identity it continues (starts after it ended, near its last box)."""
    spans = sorted(pieces, key=lambda p: np.flatnonzero(p.present)[0])
    joined: list[Identity] = []
    for piece in spans:
        first = np.flatnonzero(piece.present)[0]
        best, best_shift = None, spec.stitch_shift
        for identity in joined:
            last = np.flatnonzero(identity.present)[-1]
            if last >= first:
                continue
            shift = float(_shift(identity.boxes[last][None], piece.boxes[first][None])[0, 0])
            if shift <= best_shift:
                best, best_shift = identity, shift
        if best is None:
            joined.append(piece)
        else:
            rows = piece.present
            best.boxes[rows], best.landmarks[rows], best.scores[rows] = (
                piece.boxes[rows], piece.landmarks[rows], piece.scores[rows])
    return joined


def identities(detections: VideoDetections, spec: TrackerSpec) -> list[Identity]:
    """The identities of a video, longest present first (see the module docstring)."""
    tracklets = [t for t in _link(detections, spec) if len(t) >= spec.min_detections]
    pieces = [_bridged(detections, members, spec) for members in tracklets]
    joined = _stitch(pieces, spec)
    return sorted(joined, key=lambda i: -int(i.present.sum()))


SIDES = ("_left", "_right")


def side_of(track: str, video: str) -> str | None:
    """``_left``/``_right`` when ``track`` is one side of a two-person ``video``, else None."""
    suffix = track[len(video):] if track.startswith(video) else ""
    return suffix if suffix in SIDES else None


def choose(found: list[Identity], frames: int, width: int, side: str | None, identity: int | None = None,
           where: str = "") -> Identity:
    """The identity a track follows: ``identity`` (a rank, from an override) when given; else
    for a side of a two-person video the one of the two longest identities sitting on that side
    (with one identity only, it belongs to the side of the frame it sits on); else the longest.
    An empty identity when there is none."""
    if identity is not None:
        if identity >= len(found):
            raise OverrideError(f"{where}identity {identity} does not exist: {len(found)} identities were found")
        return found[identity]
    if not found:
        return Identity.empty(frames)
    if side is None:
        return found[0]
    pair = found[:2]
    if len(pair) == 1:
        on_left = pair[0].centre_x() < width / 2
        return pair[0] if on_left == (side == "_left") else Identity.empty(frames)
    left, right = sorted(pair, key=Identity.centre_x)
    return left if side == "_left" else right


# ----------------------------------------------------------------------------- overrides

OVERRIDE_KEYS = {"identity", "min_face_size", "threshold", "box", "no_face"}


@dataclass(frozen=True)
class Override:
    """One entry of an overrides file, for a video (all its tracks) or one track."""

    key: str
    line: int
    path: str
    identity: int | None = None
    min_face_size: int | None = None
    threshold: float | None = None
    box: tuple[float, float, float, float] | None = None
    no_face: bool = False

    @property
    def where(self) -> str:
        return f"{self.path}:{self.line}: {self.key}: "

    def fingerprint(self) -> str:
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k not in ("line", "path")}
        return hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()[:12]

    @property
    def detection(self) -> dict:
        """The detector settings this entry changes (``DetectorSpec`` fields)."""
        out = {}
        if self.min_face_size is not None:
            out["min_face_size"] = self.min_face_size
        if self.threshold is not None:
            out["min_score"] = self.threshold
        return out


def read_overrides(path: str | Path) -> dict[str, Override]:
    """Parse a faces overrides file (YAML): a mapping from a video stem (all its tracks) or a
    track id (``<video>_left``) to settings::

        "10-60-1280x720": {min_face_size: 40, threshold: 0.95}
        "10-60-1280x720_right": {identity: 2}   # the third-longest identity
        "121": {box: [10, 20, 110, 120]}        # this box on every frame, no detection
        "video5": {no_face: true}               # every frame face-absent

    Raises :class:`OverrideError` naming the file and line of anything it cannot use.
    """
    import yaml

    path = Path(path)
    try:
        root = yaml.compose(path.read_text())
    except FileNotFoundError as e:
        raise OverrideError(f"{path}: faces overrides file not found") from e
    except yaml.YAMLError as e:
        raise OverrideError(f"{path}: not valid YAML: {e}") from e
    if root is None:
        return {}
    if not isinstance(root, yaml.MappingNode):
        raise OverrideError(f"{path}:{root.start_mark.line + 1}: expected a mapping of video or track -> settings")
    entries: dict[str, Override] = {}
    for key_node, value_node in root.value:
        key, line = str(key_node.value), key_node.start_mark.line + 1
        where = f"{path}:{line}: {key}: "
        if key in entries:
            raise OverrideError(f"{where}listed twice (first on line {entries[key].line})")
        value = yaml.safe_load(yaml.serialize(value_node))
        if not isinstance(value, dict) or not value:
            raise OverrideError(f"{where}expected settings such as {{identity: 1}}, got {value!r}")
        unknown = sorted(set(value) - OVERRIDE_KEYS)
        if unknown:
            raise OverrideError(f"{where}unknown setting {', '.join(unknown)}; valid: {', '.join(sorted(OVERRIDE_KEYS))}")
        entries[key] = _override(key, line, str(path), value, where)
    return entries


def _override(key: str, line: int, path: str, value: dict, where: str) -> Override:
    def number(name: str, kind: type, low: float, high: float | None = None):
        if name not in value:
            return None
        v = value[name]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or (kind is int and not float(v).is_integer()):
            raise OverrideError(f"{where}{name} must be {'an integer' if kind is int else 'a number'}, got {v!r}")
        if v < low or (high is not None and v > high):
            raise OverrideError(f"{where}{name}={v} is outside [{low}, {high if high is not None else 'inf'}]")
        return kind(v)

    box = value.get("box")
    if box is not None:
        if (not isinstance(box, list) or len(box) != 4
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in box)):
            raise OverrideError(f"{where}box must be [x0, y0, x1, y1] in pixels, got {box!r}")
        if box[2] <= box[0] or box[3] <= box[1]:
            raise OverrideError(f"{where}box {box} is empty: need x1 > x0 and y1 > y0")
        box = tuple(float(v) for v in box)
    no_face = value.get("no_face", False)
    if not isinstance(no_face, bool):
        raise OverrideError(f"{where}no_face must be true or false, got {no_face!r}")
    if sum([box is not None, no_face, "identity" in value]) > 1:
        raise OverrideError(f"{where}choose one of identity, box and no_face")
    return Override(key, line, path, identity=number("identity", int, 0), min_face_size=number("min_face_size", int, 1),
                    threshold=number("threshold", float, 0.0, 1.0), box=box, no_face=no_face)


def override_for(overrides: dict[str, Override], track: str, video: str) -> Override | None:
    """The entry of a track: its own, else its video's."""
    return overrides.get(track) or overrides.get(video)


def check_known(overrides: dict[str, Override], names: set[str]) -> None:
    """Refuse entries naming neither a known video nor a known track."""
    for entry in overrides.values():
        if entry.key not in names:
            raise OverrideError(f"{entry.where}no such video or track among the {len(names)} being processed")
