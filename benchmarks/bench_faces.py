"""Face detection throughput: abaw's pipeline (decode + detect + track) vs the per-frame loop
teams write (decode each frame, ``mtcnn.detect(frame)``), side by side in one process.

Quality is measured in the same run, so that a faster setting is only counted when it finds
the same faces:
- on the real Pexels clip (640x360, 472 frames): the share of frames with a face, and the share
  whose main-identity box overlaps the per-frame loop's box at IoU >= 0.5;
- on a small generated sample dataset: the share of drawn faces found at IoU >= 0.5 (the test
  in tests/test_faces.py asks >= 90 %).
For each variant the table gives frames/s (wall, decode + detect + track), the ratio to the
loop, and the share of the wall time spent inside the detector.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_faces.py [--clip PATH] [--device cpu|cuda] [--quick]

(``--quick``: the 72-frame single_face.mp4 clip, two variants, a smaller sample.)
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import torch  # noqa: E402
from machine import cpu_mark, others  # noqa: E402

from features.faces import DetectorSpec, create_detector, detect_video  # noqa: E402
from features.tracking import TrackerSpec, identities  # noqa: E402
from features.tracking import paired_iou as iou  # noqa: E402

CLIP = ROOT.parent / "shared" / "fixtures" / "media" / "WolfgangLanger_Pexels.mp4"
VARIANTS = {  # label -> DetectorSpec overrides
    "pipeline, as decoded": {"detect_size": None},
    "pipeline, detect_size 480": {"detect_size": 480},
    "pipeline, detect_size 320": {"detect_size": 320},
    "pipeline, frame_step 2": {"detect_size": None, "frame_step": 2},
    "pipeline, 320 + step 2": {"detect_size": 320, "frame_step": 2},
}


class Timed:
    """A detector wrapper adding up the seconds spent inside ``detect``."""

    def __init__(self, detector) -> None:
        self.detector, self.seconds = detector, 0.0

    def detect(self, frames, min_face_size):
        start = time.perf_counter()
        try:
            return self.detector.detect(frames, min_face_size)
        finally:
            self.seconds += time.perf_counter() - start


def per_frame_loop(clip: Path, device: str) -> tuple[float, float, np.ndarray]:
    """(wall s, detector s, (N, 4) best box per frame, NaN where none): decode each frame with
    PyAV and call ``mtcnn.detect(frame)`` on it, as a notebook does."""
    import av
    from facenet_pytorch import MTCNN

    mtcnn = MTCNN(keep_all=True, device=torch.device(device))
    boxes, inside = [], 0.0
    start = time.perf_counter()
    with av.open(str(clip)) as container:
        for frame in container.decode(video=0):
            image = frame.to_ndarray(format="rgb24")
            t = time.perf_counter()
            found, scores = mtcnn.detect(image)
            inside += time.perf_counter() - t
            boxes.append(found[int(np.argmax(scores))] if found is not None else np.full(4, np.nan))
    return time.perf_counter() - start, inside, np.array(boxes, dtype=np.float64)


def pipeline(video: Path, spec: DetectorSpec, device: str, detector=None):
    """(wall s, detector s, identities) of one video through abaw's faces pipeline."""
    timed = Timed(detector or create_detector(spec, device))
    start = time.perf_counter()
    found = detect_video(video, timed, spec).kept(spec.min_score)
    people = identities(found, TrackerSpec())
    return time.perf_counter() - start, timed.seconds, people


def sample_quality(root: Path, spec: DetectorSpec, device: str, detector) -> float:
    """Share of the faces drawn in the sample (single-person videos) found at IoU >= 0.5."""
    manifest = json.loads((root / "sample_manifest.json").read_text())
    hits = drawn = 0
    for video in manifest["videos"].values():
        if video["dataset"] != "affwild2":
            continue
        truth = pd.read_csv(root / video["faces"])
        if truth.track.nunique() != 1:
            continue
        *_, people = pipeline(root / video["path"], spec, device, detector)
        visible = truth[~truth.x0.isna()]
        index = visible.frame.to_numpy() - 1
        if people:
            overlap = iou(people[0].boxes[index], visible[["x0", "y0", "x1", "y1"]].to_numpy())
            hits += int(np.nan_to_num(overlap >= 0.5).sum())
        drawn += len(visible)
    return hits / drawn


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clip", default=str(CLIP))
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    args = parser.parse_args()
    clip = CLIP.with_name("single_face.mp4") if args.quick and args.clip == str(CLIP) else Path(args.clip)
    variants = dict(list(VARIANTS.items())[:3:2]) if args.quick else VARIANTS
    torch.set_num_threads(os.cpu_count() or 1)
    from abaw import sample

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "sample"
        sample.generate(root, seed=3, tracks=5, seconds=1.0 if args.quick else 3.0)
        mark = cpu_mark()
        loop_wall, loop_inside, loop_boxes = per_frame_loop(clip, args.device)
        frames = len(loop_boxes)
        loop_found = ~np.isnan(loop_boxes[:, 0])
        print(f"{clip.name}: {frames} frames; device {args.device}, torch threads {torch.get_num_threads()}")
        print(f"{'variant':<28} {'frames/s':>9} {'vs loop':>8} {'in detector':>12} {'face found':>11} "
              f"{'IoU>=.5 vs loop':>16} {'sample IoU>=.5':>15}")
        print(f"{'per-frame loop (native)':<28} {frames / loop_wall:>9.1f} {1.0:>7.2f}x {loop_inside / loop_wall:>11.0%} "
              f"{loop_found.mean():>10.1%} {'-':>16} {'-':>15}")
        for label, settings in variants.items():
            spec = DetectorSpec(**settings)
            detector = create_detector(spec, args.device)
            wall, inside, people = pipeline(clip, spec, args.device, detector)
            main_face = people[0].boxes if people else np.full((frames, 4), np.nan)
            found = ~np.isnan(main_face[:, 0])
            both = found & loop_found
            agree = float((iou(main_face[both], loop_boxes[both]) >= 0.5).sum() / max(loop_found.sum(), 1))
            quality = sample_quality(root, spec, args.device, detector)
            print(f"{label:<28} {frames / wall:>9.1f} {loop_wall / wall:>7.2f}x {inside / wall:>11.0%} "
                  f"{found.mean():>10.1%} {agree:>15.1%} {quality:>14.1%}")
        print(f"({others(mark)})")


if __name__ == "__main__":
    main()
