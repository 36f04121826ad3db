"""Faces from raw video: ``abaw faces`` and the faces stage of ``abaw extract``.

Both run the same three steps per video: detect (:mod:`features.faces`, cached per video and
detector settings, so that changing only the tracking does not detect again), link into
identities (:mod:`features.tracking`), then choose and write.

- ``abaw faces VIDEO_OR_ROOT... --out DIR`` writes ``DIR/<video stem>.csv`` with
  ``frame,time,identity,x0,y0,x1,y1,score``: one row per kept face per frame, ``frame``
  1-based in display order, pixels of the full frame, identity 0 the person present longest;
  ``score`` is empty on frames whose box was interpolated. ``time`` is the frame's start in
  seconds counted from the first displayed frame: its presentation timestamp (from the
  container, never ``frame / fps``) less that of the first displayed frame (hidden encoder
  pre-roll not counted), so frame 1 is at 0.0000 even where the container shows it at, say,
  0.027 s; add that start time to get the container's own clock. Audio features are aligned
  on this same clock (:mod:`features.media`).
  ``DIR/faces.json`` records what each CSV was made from, so a rerun skips finished videos.
- ``abaw extract`` with a visual stream whose face source is ``detected`` first fills the
  faces stream: per annotation row (row i = displayed frame i + 1) the track's box
  (``features``), ``landmarks``, ``score`` and face-present mask (``valid``), in a feature
  store named by the detector's and tracker's fingerprint. The visual extractors then crop the
  raw frames around those boxes.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from abaw.data.affwild2 import video_files
from abaw.data.records import Problem
from abaw.runtime import Log, stderr_log
from features.containers import VIDEO_CONTAINERS
from features.faces import DetectorSpec, VideoDetections, create_detector, detect_video
from features.media import MediaError, frame_index
from features.specs import ExtractorSpec
from features.store import FeatureStore
from features.tracking import (Identity, Override, OverrideError, TrackerSpec, check_known, choose, identities,
                               override_for, read_overrides, side_of)

CSV_HEADER = "frame,time,identity,x0,y0,x1,y1,score"


@dataclass(frozen=True)
class FaceStreamSpec(ExtractorSpec):
    """The faces stream as a feature-store spec: its folder is named by the detector's and the
    tracker's settings (per-video overrides enter each track's recorded inputs instead)."""

    name: str = "faces"
    modality: str = "faces"
    detector: dict = field(default_factory=dict)
    tracker: dict = field(default_factory=dict)


class FaceFinder:
    """Detection (cached), linking and overrides for a set of videos; the detector is built on
    first use, on ``device``."""

    def __init__(self, detector: DetectorSpec, tracker: TrackerSpec, overrides: dict[str, Override],
                 cache: Path, device: torch.device | str = "cpu") -> None:
        self.spec, self.tracker, self.overrides, self.cache, self.device = detector, tracker, overrides, cache, device
        self._detectors: dict[DetectorSpec, object] = {}

    def detection_spec(self, entry: Override | None) -> DetectorSpec:
        """The detector settings of a video: the configured ones with its override's."""
        if entry is None or not entry.detection:
            return self.spec
        return dataclasses.replace(self.spec, **entry.detection)

    def detections(self, video: Path, key: str, entry: Override | None) -> VideoDetections:
        """All detections of ``video`` (named ``key`` in the cache), detected now or read back.
        A score threshold override filters the detections, it does not detect again."""
        spec = self.detection_spec(entry)
        raw = dataclasses.replace(spec, min_score=0.0)
        path = self.cache / f"{key.replace('/', '__')}-{raw.fingerprint()}.npz"
        if path.exists():
            found = VideoDetections.load(path)
        else:
            if raw not in self._detectors:
                self._detectors[raw] = create_detector(raw, self.device)
            found = detect_video(video, self._detectors[raw], raw)
            path.parent.mkdir(parents=True, exist_ok=True)
            found.save(path)
        return found.kept(spec.min_score)

    def identities(self, video: Path, key: str, entry: Override | None) -> tuple[VideoDetections | None, list[Identity]]:
        """The detections (None when an override skips detection) and identities of a video."""
        if entry is not None and (entry.no_face or entry.box is not None):
            return None, []
        found = self.detections(video, key, entry)
        return found, identities(found, self.tracker)


def _digest(*parts) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


# ----------------------------------------------------------------------------- abaw faces


def find_videos(paths: list[str], log: Log | None = None) -> list[Path]:
    """The video files named or found (recursively) under the given paths, sorted; refuses a
    missing path and two videos with one stem (their CSVs would collide). A folder is searched
    as a dataset's video folder is (:func:`abaw.data.affwild2.video_files`): what was found
    there besides the known video containers, taken or skipped, is named to ``log`` (default:
    stderr)."""
    log = log or stderr_log
    videos: list[Path] = []
    for name in paths:
        path = Path(name)
        if path.is_dir():
            findings: list[Problem] = []
            videos += video_files(path, findings)
            for finding in findings:
                log(f"abaw faces: {finding}")
        elif path.is_file():
            videos.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such video or folder")
    stems: dict[str, Path] = {}
    for video in videos:
        if video.stem in stems and stems[video.stem] != video:
            raise ValueError(f"two videos named {video.stem}: {stems[video.stem]} and {video}; "
                             "their face files would collide, run them with separate --out folders")
        stems[video.stem] = video
    return list(stems.values())


def run_faces(paths: list[str], out: str | Path, detector: DetectorSpec | None = None,
              tracker: TrackerSpec | None = None, overrides: str | None = None, device: str = "auto",
              log: Log | None = None) -> int:
    """``abaw faces``: a CSV per video (see the module docstring) and a summary line each on
    stdout; a video that cannot be decoded is named and the others finish (exit code 1)."""
    log = log or stderr_log
    detector, tracker = detector or DetectorSpec(), tracker or TrackerSpec()
    videos = find_videos(paths, log)
    if not videos:
        raise FileNotFoundError(f"no video files in {', '.join(paths)} (known containers: "
                                f"{', '.join(VIDEO_CONTAINERS)}; files of other suffixes are opened to see)")
    entries = read_overrides(overrides) if overrides else {}
    check_known(entries, {v.stem for v in videos})
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    record_path = out / "faces.json"
    done = json.loads(record_path.read_text()) if record_path.exists() else {}
    from abaw.runtime import pick_device

    finder = FaceFinder(detector, tracker, entries, out / ".detections", pick_device(device))
    failed = 0
    for video in videos:
        entry = entries.get(video.stem)
        made_from = _digest(str(video.resolve()), video.stat().st_size, detector.fingerprint(), tracker.fingerprint(),
                            entry.fingerprint() if entry else None)
        csv = out / f"{video.stem}.csv"
        if done.get(video.stem, {}).get("made_from") == made_from and csv.exists():
            print(f"{video.stem}: already done ({done[video.stem]['summary']})", flush=True)
            continue
        try:
            summary = _write_video_csv(finder, video, entry, csv)
        except (MediaError, OSError) as e:
            log(f"abaw faces: {video}: {e}")
            failed += 1
            continue
        print(f"{video.stem}: {summary}", flush=True)
        done[video.stem] = {"video": str(video), "made_from": made_from, "summary": summary}
        _atomic_text(record_path, json.dumps(done, indent=1) + "\n")
    return 1 if failed else 0


def _write_video_csv(finder: FaceFinder, video: Path, entry: Override | None, csv: Path) -> str:
    found, people = finder.identities(video, video.stem, entry)
    times = found.times if found is not None else frame_index(video).stamps[:, 0]
    if entry is not None and entry.box is not None:
        people = [Identity.fixed(len(times), list(entry.box))]
    ranks = list(range(len(people)))
    if entry is not None and entry.identity is not None:
        choose(people, len(times), 0, None, entry.identity, entry.where)  # validates the rank
        ranks = [entry.identity]
    lines = [CSV_HEADER]
    for frame in range(len(times)):
        for rank in ranks:
            person = people[rank]
            if not person.present[frame]:
                continue
            box = ",".join(f"{v:.1f}" for v in person.boxes[frame])
            score = "" if np.isnan(person.scores[frame]) else f"{person.scores[frame]:.4f}"
            lines.append(f"{frame + 1},{times[frame]:.4f},{rank},{box},{score}")
    _atomic_text(csv, "\n".join(lines) + "\n")
    with_face = int(np.any([people[r].present for r in ranks], axis=0).sum()) if ranks else 0
    return f"{len(times)} frames, {with_face} with a face, {len(ranks)} identit{'y' if len(ranks) == 1 else 'ies'}"


def _atomic_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


# ----------------------------------------------------------------------------- extraction stage


@dataclass(frozen=True)
class FaceTrack:
    """A track to give faces: its id, annotation rows, video and the video's key in the cache
    (its path in the dataset folder)."""

    id: str
    rows: int
    video: Path
    key: str


def face_store(cache: str, dataset_key: str, detector: DetectorSpec, tracker: TrackerSpec,
               create: bool = False) -> FeatureStore:
    """The faces stream of a dataset for these detector and tracker settings."""
    spec = FaceStreamSpec(detector=detector.numeric_fields(), tracker=tracker.__dict__.copy())
    return FeatureStore.for_spec(cache, dataset_key, spec, create=create)


def track_inputs(track: FaceTrack, video_bytes: int, entry: Override | None) -> dict:
    """What a track's faces rows are made from: video, rows and its override entry."""
    return {"video": track.key, "video_bytes": video_bytes, "rows": track.rows,
            "override": entry.fingerprint() if entry else None}


def fill_face_store(store: FeatureStore, finder: FaceFinder, tracks: list[FaceTrack], log: Log,
                    known: set[str] | None = None) -> dict[str, str]:
    """Detect, track and write the faces rows of every track not yet complete in ``store``
    (both sides of a two-person video from one detection pass); returns failed track -> error.
    Overrides must name one of ``known`` (default: these tracks and their videos)."""
    check_known(finder.overrides, known or {t.id for t in tracks} | {t.video.stem for t in tracks})
    by_video: dict[Path, list[FaceTrack]] = {}
    for track in tracks:
        entry = override_for(finder.overrides, track.id, track.video.stem)
        inputs = track_inputs(track, track.video.stat().st_size, entry)
        if store.is_complete(track.id, track.rows) and not store.changed_inputs(track.id, inputs):
            continue
        by_video.setdefault(track.video, []).append(track)
    failed: dict[str, str] = {}
    start = last = time.monotonic()
    for number, (video, group) in enumerate(by_video.items(), 1):
        try:
            found: dict[Override | None, tuple] = {}
            for track in group:
                entry = override_for(finder.overrides, track.id, track.video.stem)
                key = entry.detection if entry else None
                cache_key = json.dumps(key, sort_keys=True)
                if cache_key not in found:
                    found[cache_key] = finder.identities(video, track.key, entry)
                detections, people = found[cache_key]
                _write_track(store, track, entry, detections, people, video)
        except (MediaError, OSError) as e:
            for track in group:
                failed[track.id] = f"{type(e).__name__}: {e}"
        if time.monotonic() - last >= 10.0 and number < len(by_video):  # progress on long runs only
            last = time.monotonic()
            log(f"  faces: {number}/{len(by_video)} videos, {last - start:.0f} s")
    if by_video:
        written = [t for group in by_video.values() for t in group if t.id not in failed]
        with_face = sum(store.record(t.id)["valid_rows"] for t in written)
        log(f"  faces: {len(by_video)} videos detected and tracked in {time.monotonic() - start:.0f} s: "
            f"{len(written)} tracks, a face on {with_face} of {sum(t.rows for t in written)} rows -> {store.folder}")
    return failed


def _write_track(store: FeatureStore, track: FaceTrack, entry: Override | None, detections: VideoDetections | None,
                 people: list[Identity], video: Path) -> None:
    frames = detections.frames if detections is not None else len(frame_index(video).pts)
    width = detections.width if detections is not None else 0
    if entry is not None and entry.box is not None:
        person = Identity.fixed(frames, list(entry.box))
    elif entry is not None and entry.no_face:
        person = Identity.empty(frames)
    else:
        side = side_of(track.id, video.stem)
        person = choose(people, frames, width, side, entry.identity if entry else None,
                        entry.where if entry else "")
    shared = min(frames, track.rows)
    boxes = np.zeros((track.rows, 4), np.float32)
    marks = np.zeros((track.rows, 10), np.float32)
    scores = np.zeros((track.rows, 1), np.float32)
    present = np.zeros(track.rows, bool)
    present[:shared] = person.present[:shared]
    boxes[:shared] = np.nan_to_num(person.boxes[:shared])
    marks[:shared] = np.nan_to_num(person.landmarks[:shared].reshape(shared, 10))
    scores[:shared, 0] = np.nan_to_num(person.scores[:shared])
    accounting = {"decoded_frames": frames, "annotation_rows": track.rows, "rows_with_face": int(present.sum()),
                  "identities": len(people), "detected_frames": int(detections.detected.sum()) if detections else 0}
    store.write(track.id, boxes, present, {"landmarks": marks, "score": scores}, accounting,
                track_inputs(track, video.stat().st_size, entry), dtype=np.float32)


def read_faces(store: FeatureStore, track_id: str) -> tuple[np.ndarray, np.ndarray] | None:
    """(boxes (T, 4), present (T,)) of a finished track of the faces stream, or None."""
    if store.record(track_id) is None:
        return None
    return np.asarray(store.read(track_id), np.float64), np.asarray(store.read(track_id, "valid"), bool)


def faces_hash(boxes: np.ndarray, present: np.ndarray) -> str:
    """Identity of a track's faces rows: which rows have a face and where (to 0.1 pixel)."""
    payload = np.packbits(present).tobytes() + np.round(boxes[present] * 10).astype(np.int64).tobytes()
    return hashlib.sha256(payload).hexdigest()[:12]


__all__ = ["FaceFinder", "FaceStreamSpec", "FaceTrack", "OverrideError", "fill_face_store", "face_store",
           "faces_hash", "find_videos", "read_faces", "run_faces"]
