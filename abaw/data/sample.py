"""A procedural sample dataset in the real Aff-Wild2, DVD, EMI and BAH layouts, quirks included.

`generate` writes drawn faces whose expression parameters (eye and mouth opening, brow height
and slant, mouth curve, lip raise and press, cheek raise, head motion) evolve smoothly through
segments of expressions; the EXPR, VA and AU labels are derived from those same parameters, so
a model can learn them from the crops, and the audio follows arousal. DVD clips are scenes of
stick figures whose violent segments move fast and erratically. The files carry the traps of the
real data (ABAW_FORMATS.md): several and variable frame rates, frame counts that differ from the
annotation length, missing crops, invalid codes, a `_left`/`_right` pair, a recording cut into
two videos of the same person, silent and soundless videos, lying names. The returned manifest
records the truth a reader must recover. The video-level EMI and A/H parts are
`abaw.data.sample_videos`.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Callable

import numpy as np
from abaw.data import sample_render as render
from abaw.data.records import DataError
from abaw.tasks import AFFWILD2_TASKS, AU_NAMES, EXPR_CLASSES, VD, Task

DEFAULT_TRACKS = 10
DEFAULT_SECONDS = 6.0
TEST_VIDEOS = 3
DVD_TEST_VIDEOS = 2
MIN_VIDEOS_PER_TASK = 5  # one recording (source) per fold of a grouped 5-fold CV
MANIFEST = "sample_manifest.json"  # at the root of every generated dataset, and of no real one
_MIN_LINES = 40  # room for a visible segment of every class plus an invalid stretch
_TEMPLATE_WORD = {"expr": "Expr", "va": "VA", "au": "AU"}
_AFFWILD2_SPLIT_DIRS = {"train": "Train_Set", "validation": "Validation_Set"}
_DVD_SPLIT_DIRS = {"train": "Training", "validation": "Validation", "test": "Test"}

# Expression class -> deviation of each face parameter from rest, in render.PARAMS order
# (eye, brow, tilt, curve, open, raise, press, cheek). Other (last) mixes two of the others.
_TARGETS = np.array([
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # Neutral
    [-0.55, -0.6, 0.8, -0.15, 0.0, 0.0, 0.85, 0.0],  # Anger: brows low and in, lids and lips tight
    [-0.45, -0.35, 0.25, -0.35, 0.05, 0.9, 0.0, 0.0],  # Disgust: upper lip raised on one side
    [0.8, 0.6, -0.45, -0.2, 0.35, 0.0, 0.0, 0.0],  # Fear: eyes wide, brows up, mouth ajar
    [-0.2, 0.05, 0.0, 0.9, 0.2, 0.0, 0.0, 0.85],  # Happiness: corners up, cheeks raised
    [-0.3, -0.1, -0.8, -0.85, 0.0, 0.0, 0.1, 0.0],  # Sadness: corners down, inner brows up
    [0.9, 0.9, 0.0, 0.0, 0.85, 0.0, 0.0, 0.0],  # Surprise: eyes wide, brows up, jaw drop
    [0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0],  # Other
])
# Frame share of freely drawn segments and mean segment length: rare classes are short, so
# they stay rare even where a video is made to show every class.
_SHARE = np.array([0.27, 0.03, 0.02, 0.03, 0.14, 0.12, 0.06, 0.33])
_SEGMENT_SECONDS = np.array([1.2, 0.4, 0.35, 0.4, 0.9, 0.9, 0.6, 1.1])
_AGITATION = np.array([0.2, 0.9, 0.4, 0.8, 0.6, 0.15, 0.9, 0.4])
# Multiples of 16, kept so that a seed's videos stay what they were. Partial macroblock rows were
# once blamed for unreproducible encodes; with macroblock-tree rate control off (sample_render)
# 30 regenerations at 256x150, 320x180 and 192x140 all matched.
_SIZES = ((256, 144), (320, 176), (192, 144))
_CLAIMED_SIZES = ("1280x720", "640x360", "1920x1080", "480x360", "640x480")
_DELTAS, _DELTA_SHARE = (-1, 0, -2, 1), (0.5, 0.36, 0.07, 0.07)  # decoded frames minus lines, as in the real data


@dataclass
class _Person:
    track: str
    tasks: dict[str, str] = field(default_factory=dict)  # task name -> split
    required: set[int] = field(default_factory=set)  # EXPR classes the face must show
    invalid: dict[str, str] = field(default_factory=dict)  # task name -> which values are invalid
    occluded: bool = False
    style: render.FaceStyle | None = None  # fixed where the person is in several videos; None: drawn per video
    look: render.Look = field(default_factory=render.Look)  # resting appearance and voice, per person


@dataclass(eq=False)  # identity semantics: videos are compared and hashed as objects
class _Video:
    name: str
    split: str
    fps: Fraction | None  # None: variable frame rate
    size: tuple[int, int] = (256, 144)
    lines: int = 0  # annotation lines T
    delta: int = 0  # decoded frames minus T
    audio: str = "sound"  # sound, silent or none
    suffix: str = ".mp4"
    folder: str = "batch1"
    persons: list[_Person] = field(default_factory=list)
    source: str = ""  # the recording it was cut from: its own name unless it is one of several parts


@dataclass
class _Labels:
    expr: np.ndarray  # (N,) int class, -1 where annotators disagreed
    va: np.ndarray  # (N, 2) float in [-1, 1]
    au: np.ndarray  # (N, 12) int 0/1


def is_sample(root: str | Path) -> bool:
    """True if ``root`` is a dataset :func:`generate` wrote (it holds :data:`MANIFEST`)."""
    return (Path(root) / MANIFEST).is_file()


def generate(out: Path, seed: int = 0, tracks: int = DEFAULT_TRACKS, seconds: float = DEFAULT_SECONDS,
             progress: Callable[[str], None] | None = None) -> dict:
    """Write a complete sample dataset under `out`; return the manifest (also written to out/sample_manifest.json).

    `tracks` Aff-Wild2 recordings (one of them a `_left`/`_right` pair, one cut into two videos
    `<name>-k` and `<name>-(k+1)` of one person in one split) go to train and validation, plus
    TEST_VIDEOS test videos; DVD gets max(6, tracks * 2 // 3) train+validation clips plus
    DVD_TEST_VIDEOS test clips; EMI and BAH get their fixed-size parts of short videos
    (`abaw.data.sample_videos`). Durations vary ±30 % around `seconds`. The same seed gives
    identical label files and decoded frames. Refuses (DataError) an existing non-empty `out`
    and (ValueError) tracks < MIN_VIDEOS_PER_TASK or seconds <= 0; the dataset is built next to
    `out` and moved into place only when complete.
    """
    out = Path(out)
    if tracks < MIN_VIDEOS_PER_TASK:
        raise ValueError(f"tracks={tracks}: need at least {MIN_VIDEOS_PER_TASK} (one recording per CV fold)")
    if not seconds > 0:
        raise ValueError(f"seconds={seconds}: must be positive")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(out, "exists and is not an empty directory; choose a new output folder")
    say = progress or (lambda _message: None)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        # The video-level parts draw from a fourth child: the first three, and so the Aff-Wild2
        # and DVD parts, are the same as when there were three.
        plan_seed, affwild2_seed, dvd_seed, videos_seed = np.random.SeedSequence(seed).spawn(4)
        # "tracks" names the per-track truth, so the requested count goes under its own key.
        manifest = {"seed": seed, "tracks_requested": tracks, "seconds": seconds, "videos": {}, "tracks": {}}
        plan = _plan_affwild2(np.random.default_rng(plan_seed), tracks, seconds)
        _write_affwild2(tmp, plan, affwild2_seed, manifest, say)
        _write_dvd(tmp, np.random.default_rng(dvd_seed), max(6, tracks * 2 // 3), seconds, manifest, say)
        from abaw.data.sample_videos import write_video_datasets  # it builds on this module's helpers

        write_video_datasets(tmp, videos_seed, manifest, say)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    say(f"wrote {out}")
    return manifest


# ----------------------------------------------------------------------------- planning


def _plan_affwild2(rng: np.random.Generator, tracks: int, seconds: float) -> list[_Video]:
    """Decide names, splits, frame rates, quirks, tasks and required classes of every video."""
    splits = _splits(rng, tracks, max(1, round(0.3 * tracks)), TEST_VIDEOS)
    labelled = rng.permutation(tracks)
    # Every rate the real data shows, on labelled videos first; the rest common rates.
    common = (Fraction(30), Fraction(30), Fraction(30000, 1001), Fraction(25))
    rates: list[Fraction | None] = [common[rng.integers(len(common))] for _ in splits]
    for index, rate in zip(labelled, (None, Fraction(15, 2), Fraction(30000, 1001), Fraction(25), Fraction(30))):
        rates[index] = rate
    deltas = list(_DELTAS) + list(rng.choice(_DELTAS, size=len(splits) - 4, p=_DELTA_SHARE))
    deltas = [int(d) for d in rng.permutation(deltas)]
    videos = []
    for index, (split, fps, delta) in enumerate(zip(splits, rates, deltas)):
        lines = _lines(rng, seconds, float(fps) if fps is not None else 24.0)
        size = _SIZES[rng.integers(len(_SIZES))]
        videos.append(_Video("", split, fps, size, lines, delta, folder=f"batch{1 + index % 2}"))
    # avi: 30 fps, not VFR; cut: 25 fps, so that its name may carry a (true) rate.
    pair, silent, soundless, cut, avi = (videos[i] for i in labelled[:5])
    silent.audio, soundless.audio, avi.suffix = "silent", "none", ".avi"
    _name_videos(rng, videos, liar=avi, cut=cut)
    for video in videos:
        sides = ("_left", "_right") if video is pair else ("",)
        video.persons = [_Person(video.name + side) for side in sides]
    _assign_tasks(rng, videos, pair)
    _assign_required(rng, videos)
    _assign_invalid(rng, videos)
    persons = [p for v in videos for p in v.persons]
    for i in rng.choice(len(persons), size=max(2, round(0.35 * len(persons))), replace=False):
        persons[i].occluded = True
    # Last, after every other draw, so that the rest of a seed's dataset stays what it was.
    videos.append(_next_part(rng, cut, seconds))
    # People differ at rest more than many expressions differ: one look per person, shared by
    # the parts of a recording (drawn after everything else, for the same reason).
    looks: dict[tuple[str, str], render.Look] = {}
    for video in videos:
        for person in video.persons:
            key = (video.source or video.name, person.track.removeprefix(video.name))
            person.look = looks.setdefault(key, render.Look.random(rng))
    return videos


def _lines(rng: np.random.Generator, seconds: float, fps: float) -> int:
    """Annotation lines of one video: ±30 % around `seconds`, room for every class at least."""
    return max(_MIN_LINES, round(seconds * rng.uniform(0.7, 1.3) * fps))


def _next_part(rng: np.random.Generator, first: _Video, seconds: float) -> _Video:
    """The next video cut from `first`'s recording, as Aff-Wild2 cuts `122-60-1920x1080-1` ... `-4`:
    the same person (colours, tasks, classes to show) in the same split, rate, size and folder."""
    style = render.FaceStyle.random(rng)
    part = int(first.name.removeprefix(f"{first.source}-")) + 1
    video = _Video(f"{first.source}-{part}", first.split, first.fps, first.size, _lines(rng, seconds, float(first.fps)),
                   int(rng.choice(_DELTAS, p=_DELTA_SHARE)), folder=first.folder, source=first.source)
    for person in first.persons:
        person.style = style
        video.persons.append(replace(person, track=video.name, tasks=dict(person.tasks),
                                     required=set(person.required), invalid=dict(person.invalid)))
    return video


def _splits(rng: np.random.Generator, labelled: int, validation: int, test: int) -> list[str]:
    """Shuffled train/validation splits of `labelled` videos, then `test` test videos."""
    shuffled = rng.permutation(["validation"] * validation + ["train"] * (labelled - validation))
    return [str(s) for s in shuffled] + ["test"] * test


def _name_videos(rng: np.random.Generator, videos: list[_Video], liar: _Video, cut: _Video) -> None:
    """Real-style names and their sources; the middle number of `liar`'s name claims 60 fps,
    which it does not have; `cut` is named as a part (`<number>-<rate>-<size>-<k>`)."""
    numbers = rng.choice(np.arange(1, 400), size=len(videos), replace=False)
    for video, number in zip(videos, numbers):
        # Names with a rate in them only where it is roughly right, except for the liar.
        style = int(rng.integers(4)) if video.fps not in (None, Fraction(15, 2)) else 1 + int(rng.integers(2))
        claim = 30 if video.fps is None else round(float(video.fps))
        if video is liar:
            style, claim = 3, 60
        elif video is cut:
            style = 3
        size = _CLAIMED_SIZES[rng.integers(len(_CLAIMED_SIZES))]
        full = f"{number}-{claim}-{size}"
        video.name, video.source = [(full, full), (f"{number}", f"{number}"),
                                    (f"video{number}_{rng.integers(1, 4)}", f"video{number}"),
                                    (f"{full}-{rng.integers(1, 6)}", full)][style]


def _assign_tasks(rng: np.random.Generator, videos: list[_Video], pair: _Video) -> None:
    """Each task on >= MIN_VIDEOS_PER_TASK labelled videos spanning both splits, and on a test video."""
    labelled = [v for v in videos if v.split != "test"]
    tests = [v for v in videos if v.split == "test"]
    count = min(len(labelled), max(MIN_VIDEOS_PER_TASK, math.ceil(0.75 * len(labelled))))
    chosen: dict[str, list[_Video]] = {}
    for task in AFFWILD2_TASKS:
        first = []
        for split in ("train", "validation"):
            candidates = [v for v in labelled if v.split == split]
            first.append(candidates[rng.integers(len(candidates))])
        rest = [labelled[i] for i in rng.permutation(len(labelled))]
        chosen[task.name] = list(dict.fromkeys([pair, *first, *rest]))[:count]
    for video in labelled:  # every video is annotated for at least one task
        if not any(video in vs for vs in chosen.values()):
            chosen[AFFWILD2_TASKS[int(rng.integers(3))].name].append(video)
    for i, video in enumerate(tests):
        names = {AFFWILD2_TASKS[i % 3].name} | {t.name for t in AFFWILD2_TASKS if rng.random() < 0.5}
        for name in names:
            chosen[name].append(video)
    only_right = AFFWILD2_TASKS[int(rng.integers(3))].name
    for name, vs in chosen.items():
        for video in vs:
            for person in video.persons:
                if not (person.track.endswith("_left") and name == only_right):
                    person.tasks[name] = video.split


def _assign_required(rng: np.random.Generator, videos: list[_Video]) -> None:
    """Every class shows on >= MIN_VIDEOS_PER_TASK labelled faces of each task (or all of them)."""
    for task in AFFWILD2_TASKS:
        faces = [p for v in videos if v.split != "test" for p in v.persons if task.name in p.tasks]
        for label in range(len(EXPR_CLASSES)):
            missing = MIN_VIDEOS_PER_TASK - sum(label in p.required for p in faces)
            spare = [p for p in faces if label not in p.required]
            for i in rng.permutation(len(spare))[:max(0, missing)]:
                spare[i].required.add(label)


def _assign_invalid(rng: np.random.Generator, videos: list[_Video]) -> None:
    """Invalid stretches on about a third of the labelled faces per task; VA also one-sided ones."""
    for task in AFFWILD2_TASKS:
        faces = [p for v in videos if v.split != "test" for p in v.persons if task.name in p.tasks]
        picked = rng.permutation(len(faces))[:max(2, round(0.35 * len(faces)))]
        for k, i in enumerate(picked):
            kinds = ("valence", "both", "arousal") if task.name == "va" else ("rows",)
            faces[i].invalid[task.name] = kinds[k % len(kinds)]


# ----------------------------------------------------------------------------- face model


def _smooth(values: np.ndarray, width: int) -> np.ndarray:
    """Centred moving average along axis 0 of (N, ...) values, edges repeated."""
    if width <= 1:
        return values
    pad = [(width // 2, width - 1 - width // 2)] + [(0, 0)] * (values.ndim - 1)
    padded = np.pad(values, pad, mode="edge")
    cumulative = np.cumsum(np.concatenate([np.zeros_like(padded[:1]), padded]), axis=0)
    return (cumulative[width:] - cumulative[:-width]) / width


def _segment_lengths(n: int, weights: np.ndarray) -> np.ndarray:
    """Split n frames in proportion to weights, at least one frame each."""
    lengths = np.maximum(1, np.floor(weights / weights.sum() * n).astype(int))
    while lengths.sum() > n:
        lengths[np.argmax(lengths)] -= 1
    lengths[np.argmax(weights)] += n - lengths.sum()
    return lengths


def _expression_plan(rng: np.random.Generator, n: int, fps: float,
                     person: _Person) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-frame (N,) EXPR label (-1 inside an invalid stretch), (N, P) target and (N,) agitation."""
    labels = sorted(person.required)
    extra = max(0, min(n - len(labels) - 1, round(n / fps) - len(labels)))
    labels += [int(c) for c in rng.choice(len(_SHARE), size=extra, p=_SHARE)]
    if "expr" in person.invalid:
        labels.append(-1)
    labels = [labels[i] for i in rng.permutation(len(labels))]
    shown = [c if c >= 0 else int(rng.integers(len(_SHARE))) for c in labels]
    lengths = _segment_lengths(n, _SEGMENT_SECONDS[shown] * rng.uniform(0.6, 1.4, len(shown)))
    targets = []
    for c in shown:
        if c == len(EXPR_CLASSES) - 1:  # Other: a weak blend of two basic expressions
            a, b = rng.choice(np.arange(1, 7), size=2, replace=False)
            w = rng.uniform(0.3, 0.7)
            targets.append((w * _TARGETS[a] + (1 - w) * _TARGETS[b]) * rng.uniform(0.5, 0.8))
        else:
            targets.append(_TARGETS[c] * rng.uniform(0.75, 1.1))
    return np.repeat(labels, lengths), np.repeat(targets, lengths, axis=0), np.repeat(_AGITATION[shown], lengths)


def _head_motion(rng: np.random.Generator, agitation: np.ndarray, fps: float) -> np.ndarray:
    """(N, 3) damped random walk of head x, y and roll, livelier when agitated."""
    step = np.array([0.05, 0.03, 0.02]) * math.sqrt(30.0 / fps)
    motion = np.zeros((len(agitation), 3))
    position, velocity = np.zeros(3), np.zeros(3)
    for i, level in enumerate(agitation):
        velocity = 0.8 * velocity + rng.normal(0.0, 1.0, 3) * step * level
        position = 0.92 * position + velocity
        motion[i] = position
    return motion


def _simulate_face(rng: np.random.Generator, n: int, fps: float, person: _Person) -> tuple[render.Face, _Labels]:
    """Latent face parameters for n frames and the labels derived from them."""
    labels, target, agitation = _expression_plan(rng, n, fps, person)
    ramp = max(1, round(0.12 * fps))  # expressions blend over ~0.12 s
    params = _smooth(target, ramp) + _smooth(rng.normal(0.0, 0.12, target.shape), max(2, ramp))
    motion = _head_motion(rng, _smooth(agitation, ramp), fps)
    speed = np.linalg.norm(np.diff(motion[:, :2], axis=0, prepend=motion[:1, :2]), axis=1) * fps
    x = {name: params[:, i] for name, i in render.P.items()}
    valence = (0.75 * x["curve"] + 0.2 * x["cheek"] - 0.35 * np.maximum(x["tilt"], 0) - 0.3 * x["raise"]
               - 0.15 * x["press"])
    arousal = (-0.5 + 0.5 * x["open"] + 0.3 * np.abs(x["eye"]) + 0.25 * np.abs(x["brow"]) + 0.2 * x["press"]
               + 0.6 * np.clip(speed / 1.5, 0.0, 1.0))
    au = np.stack([
        (x["brow"] > 0.35) | (x["tilt"] < -0.4), x["brow"] > 0.45, (x["brow"] < -0.3) | (x["tilt"] > 0.4),
        x["cheek"] > 0.4, x["eye"] < -0.35, x["raise"] > 0.4, x["curve"] > 0.35, x["curve"] < -0.4,
        x["press"] > 0.4, (x["press"] > 0.5) & (x["open"] < 0.2), x["open"] > 0.15, x["open"] > 0.5,
    ], axis=1).astype(int)
    assert au.shape[1] == len(AU_NAMES)
    hidden = np.zeros(n, bool)
    if person.occluded:
        length = max(2, round(rng.uniform(0.1, 0.2) * n))
        start = int(rng.integers(0, n - length))
        hidden[start:start + length] = True
    va = np.clip(np.stack([valence, arousal], axis=1), -1.0, 1.0)
    return render.Face(params, motion, hidden, va[:, 1], person.style, person.look), _Labels(labels, va, au)


# ----------------------------------------------------------------------------- Aff-Wild2 files


def _rows(rng: np.random.Generator, task: Task, labels: _Labels, person: _Person, lines: int,
          decimals: int) -> list[str]:
    """Annotation body lines of one face for one task, invalid codes written where planned."""
    if task.name == "expr":
        return [str(int(c)) for c in labels.expr[:lines]]
    invalid = np.zeros(lines, bool)
    kind = person.invalid.get(task.name)
    if kind is not None:
        length = max(2, lines // 6)
        start = int(rng.integers(0, lines - length))
        invalid[start:start + length] = True
    if task.name == "au":
        invalid_row = ",".join(["-1"] * len(AU_NAMES))
        return [invalid_row if bad else ",".join(map(str, row)) for row, bad in zip(labels.au, invalid)]
    bad_v = invalid & (kind in ("both", "valence"))
    bad_a = invalid & (kind in ("both", "arousal"))

    def number(value: float, bad: bool) -> str:
        return "-5" if bad else f"{round(value, decimals) + 0.0:.{decimals}f}"  # + 0.0 turns -0.0 into 0.0

    return [f"{number(v, bv)},{number(a, ba)}" for (v, a), bv, ba in zip(labels.va[:lines], bad_v, bad_a)]


def _write_text(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="\n") as handle:
        handle.write("\n".join(lines) + "\n")


def _write_affwild2(tmp: Path, videos: list[_Video], seed: np.random.SeedSequence, manifest: dict,
                    say: Callable[[str], None]) -> None:
    """Videos, crops, annotations, test lists and templates under tmp/Aff-Wild2; fill the manifest."""
    root = tmp / "Aff-Wild2"
    stats: dict[str, dict[str, dict]] = {t.name: {} for t in AFFWILD2_TASKS}
    for index, (video, child) in enumerate(zip(videos, seed.spawn(len(videos)))):
        say(f"Aff-Wild2 video {index + 1}/{len(videos)}: {video.name}")
        rng = np.random.default_rng(child)
        average = float(video.fps) if video.fps is not None else 24.0
        length = max(video.lines, video.lines + video.delta)
        simulated = [_simulate_face(rng, length, average, p) for p in video.persons]
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
                    folder = root / "annotations" / task.annotation_dirs[0] / _AFFWILD2_SPLIT_DIRS[split]
                    _write_text(folder / f"{person.track}.txt", [",".join(task.labels), *rows])
                    _count_valid(task, rows, entry)
    _write_test_files(root, videos)
    manifest["affwild2"] = stats


def _write_true_faces(tmp: Path, video: _Video, boxes: list[np.ndarray]) -> str:
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
    _write_text(tmp / relative, lines)
    return relative


def _count_valid(task: Task, rows: list[str], entry: dict) -> None:
    """Add the valid counts (and EXPR class counts) of written rows to a manifest entry."""
    values = np.array([[float(v) for v in row.split(",")] for row in rows])
    invalid = values == task.invalid
    if task.name == "va":
        entry["valid"] = [a + int(b) for a, b in zip(entry.get("valid", [0, 0]), (~invalid).sum(axis=0))]
        return
    valid = ~invalid.all(axis=1)
    entry["valid"] = entry.get("valid", 0) + int(valid.sum())
    if task.name == "expr":
        counts = np.bincount(values[valid, 0].astype(int), minlength=len(EXPR_CLASSES))
        previous = entry.get("class_counts", [0] * len(EXPR_CLASSES))
        entry["class_counts"] = [a + int(b) for a, b in zip(previous, counts)]


def _write_test_files(root: Path, videos: list[_Video]) -> None:
    """Test-track lists and submission templates: one row per frame of every test track."""
    for task in AFFWILD2_TASKS:
        tests = [(p.track, v.lines) for v in videos for p in v.persons if p.tasks.get(task.name) == "test"]
        _write_text(root / "names_of_videos_in_each_test_set" / task.test_list, [t for t, _ in tests])
        empty = "," * task.columns  # the image location, then nothing in each label column
        rows = [f"{track}/{i:05d}.jpg{empty}" for track, lines in tests for i in range(1, lines + 1)]
        name = f"CVPR_6th_ABAW_{_TEMPLATE_WORD[task.name]}_test_set_example.txt"
        _write_text(root / "test_set_examples" / name, [",".join(task.submission_header), *rows])


# ----------------------------------------------------------------------------- DVD


def _write_dvd(tmp: Path, rng: np.random.Generator, labelled: int, seconds: float, manifest: dict,
               say: Callable[[str], None]) -> None:
    """DVD clips, per-frame annotations (Validation uses the Frame_Num header) and test templates."""
    splits = _splits(rng, labelled, max(2, round(labelled / 3)), DVD_TEST_VIDEOS)
    ids = sorted(int(i) for i in rng.choice(np.arange(1, 200), size=len(splits), replace=False))
    stats: dict[str, dict] = {}
    for index, (split, number) in enumerate(zip(splits, ids)):
        clip = f"{number:04d}"
        say(f"DVD clip {index + 1}/{len(splits)}: {clip}")
        fps = int(rng.choice([25, 30]))
        lines = _lines(rng, seconds, fps)
        violent = _violent_frames(rng, lines)
        folder = tmp / "DVD" / _DVD_SPLIT_DIRS[split]
        path = folder / "videos" / f"{clip}.mp4"
        frames = render.render_clip(path, violent, fps, _SIZES[rng.integers(len(_SIZES))], rng)
        manifest["videos"][clip] = {"path": path.relative_to(tmp).as_posix(), "dataset": "dvd",
                                    "fps": float(fps), "frames": frames, "audio": "sound", "source": clip}
        manifest["tracks"][f"{VD.name}/{clip}"] = {"split": split, "video": clip, "lines": lines}
        entry = stats.setdefault(split, {"tracks": 0, "lines": 0} | ({} if split == "test" else {"positives": 0}))
        entry["tracks"] += 1
        entry["lines"] += lines
        if split == "test":
            rows = [f"{i}," for i in range(1, lines + 1)]
            _write_text(folder / "templates" / f"{clip}.csv", [",".join(VD.submission_header), *rows])
        else:
            header = "Frame_Num,Label" if split == "validation" else ",".join(VD.submission_header)
            rows = [f"{i},{int(v)}" for i, v in enumerate(violent, 1)]
            _write_text(folder / "annotations" / f"{clip}.csv", [header, *rows])
            entry["positives"] += int(violent.sum())
    manifest["dvd"] = stats


def _violent_frames(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n,) bool: one or two violent segments covering 20-33 % of the clip, never at frame 1."""
    total = round(rng.uniform(0.2, 0.33) * n)
    pieces = [total] if rng.random() < 0.5 or total < 8 else [total // 2, total - total // 2]
    calm_before = np.sort(rng.choice(np.arange(1, n - total), size=len(pieces), replace=False))
    starts = calm_before + np.concatenate([[0], np.cumsum(pieces)[:-1]])
    violent = np.zeros(n, bool)
    for start, piece in zip(starts, pieces):
        violent[start:start + piece] = True
    return violent
