"""The sample's Aff-Wild2 files: annotations, crops, raw videos, test lists and templates."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from abaw.sample import render
from abaw.sample.face import Labels, simulate_face
from abaw.sample.plan import Person, Video
from abaw.tasks import AFFWILD2_TASKS, AU_NAMES, EXPR_CLASSES, Task

TEMPLATE_WORD = {"expr": "Expr", "va": "VA", "au": "AU"}
AFFWILD2_SPLIT_DIRS = {"train": "Train_Set", "validation": "Validation_Set"}


def _rows(rng: np.random.Generator, task: Task, labels: Labels, person: Person, lines: int,
          decimals: int) -> list[str]:
    """Annotation body lines of one face for one task, invalid codes written where planned."""
    if task.kind == "multiclass":  # EXPR
        return [str(int(c)) for c in labels.expr[:lines]]
    invalid = np.zeros(lines, bool)
    kind = person.invalid.get(task.name)
    if kind is not None:
        length = max(2, lines // 6)
        start = int(rng.integers(0, lines - length))
        invalid[start:start + length] = True
    if task.kind == "multilabel":  # AU
        invalid_row = ",".join(["-1"] * len(AU_NAMES))
        return [invalid_row if bad else ",".join(map(str, row)) for row, bad in zip(labels.au, invalid)]
    bad_v = invalid & (kind in ("both", "valence"))
    bad_a = invalid & (kind in ("both", "arousal"))

    def number(value: float, bad: bool) -> str:
        return "-5" if bad else f"{round(value, decimals) + 0.0:.{decimals}f}"  # + 0.0 turns -0.0 into 0.0

    return [f"{number(v, bv)},{number(a, ba)}" for (v, a), bv, ba in zip(labels.va[:lines], bad_v, bad_a)]


def write_text(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="\n") as handle:
        handle.write("\n".join(lines) + "\n")


def write_affwild2(tmp: Path, videos: list[Video], seed: np.random.SeedSequence, manifest: dict,
                    say: Callable[[str], None]) -> None:
    """Videos, crops, annotations, test lists and templates under tmp/Aff-Wild2; fill the manifest."""
    root = tmp / "Aff-Wild2"
    stats: dict[str, dict[str, dict]] = {t.name: {} for t in AFFWILD2_TASKS}
    for index, (video, child) in enumerate(zip(videos, seed.spawn(len(videos)))):
        say(f"Aff-Wild2 video {index + 1}/{len(videos)}: {video.name}")
        rng = np.random.default_rng(child)
        average = float(video.fps) if video.fps is not None else 24.0
        length = max(video.lines, video.lines + video.delta)
        simulated = [simulate_face(rng, length, average, p) for p in video.persons]
        frames, present, boxes = render.encode_faces(
            root / video.folder / f"{video.name}{video.suffix}", video.size, video.fps, video.lines + video.delta,
            [face for face, _ in simulated], [root / "cropped_aligned" / p.track for p in video.persons],
            video.lines, video.audio, rng)
        manifest["videos"][video.name] = {
            "path": f"Aff-Wild2/{video.folder}/{video.name}{video.suffix}", "dataset": "affwild2",
            "fps": None if video.fps is None else float(video.fps), "frames": frames, "audio": video.audio,
            "source": video.source, "faces": _write_true_faces(tmp, video, boxes),
            "looks": {p.track: {"rest": dict(zip(render.PARAMS, np.round(p.look.rest, 3).tolist())),
                                "width": round(p.look.width, 3), "pitch": round(p.look.pitch, 1)}
                      for p in video.persons}}
        decimals = int(rng.integers(3, 5))
        for person, (_, labels), mask in zip(video.persons, simulated, present):
            for task in AFFWILD2_TASKS:
                split = person.tasks.get(task.name)
                if split is None:
                    continue
                track = {"split": split, "video": video.name, "lines": video.lines}
                manifest["tracks"][f"{task.name}/{person.track}"] = track
                entry = stats[task.name].setdefault(split, {"tracks": 0, "lines": 0, "missing_crops": 0})
                entry["tracks"] += 1
                entry["lines"] += video.lines
                entry["missing_crops"] += int((~mask).sum())
                if split != "test":
                    rows = _rows(rng, task, labels, person, video.lines, decimals)
                    folder = root / "annotations" / task.annotation_dirs[0] / AFFWILD2_SPLIT_DIRS[split]
                    write_text(folder / f"{person.track}.txt", [",".join(task.labels), *rows])
                    _count_valid(task, rows, entry)
    _write_test_files(root, videos)
    manifest["affwild2"] = stats


def _write_true_faces(tmp: Path, video: Video, boxes: list[np.ndarray]) -> str:
    """Where every face of `video` was drawn, for measuring detection and tracking:
    ``sample_faces/<video>.csv`` with ``frame,track,x0,y0,x1,y1`` (frame 1-based in display
    order, one row per face per frame, no box where a hand hides the face). Returns its path
    relative to the dataset root."""
    lines = ["frame,track,x0,y0,x1,y1"]
    for frame in range(len(boxes[0])):
        for person, box in zip(video.persons, boxes):
            values = ",".join("" if np.isnan(v) else f"{v:.1f}" for v in box[frame])
            lines.append(f"{frame + 1},{person.track},{values}")
    relative = f"sample_faces/{video.name}.csv"
    write_text(tmp / relative, lines)
    return relative


def _count_valid(task: Task, rows: list[str], entry: dict) -> None:
    """Add the valid counts (and EXPR class counts) of written rows to a manifest entry."""
    values = np.array([[float(v) for v in row.split(",")] for row in rows])
    invalid = values == task.invalid
    if task.kind == "regression":  # VA: a valid count per dimension
        entry["valid"] = [a + int(b) for a, b in zip(entry.get("valid", [0, 0]), (~invalid).sum(axis=0))]
        return
    valid = ~invalid.all(axis=1)
    entry["valid"] = entry.get("valid", 0) + int(valid.sum())
    if task.kind == "multiclass":  # EXPR
        counts = np.bincount(values[valid, 0].astype(int), minlength=len(EXPR_CLASSES))
        previous = entry.get("class_counts", [0] * len(EXPR_CLASSES))
        entry["class_counts"] = [a + int(b) for a, b in zip(previous, counts)]


def _write_test_files(root: Path, videos: list[Video]) -> None:
    """Test-track lists and submission templates: one row per frame of every test track."""
    for task in AFFWILD2_TASKS:
        tests = [(p.track, v.lines) for v in videos for p in v.persons if p.tasks.get(task.name) == "test"]
        write_text(root / "names_of_videos_in_each_test_set" / task.test_list, [t for t, _ in tests])
        empty = "," * task.columns  # the image location, then nothing in each label column
        rows = [f"{track}/{i:05d}.jpg{empty}" for track, lines in tests for i in range(1, lines + 1)]
        name = f"CVPR_6th_ABAW_{TEMPLATE_WORD[task.name]}_test_set_example.txt"
        write_text(root / "test_set_examples" / name, [",".join(task.submission_header), *rows])


