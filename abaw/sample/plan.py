"""The plan of the sample's Aff-Wild2 part: which videos, people, splits, frame rates, quirks,
tasks and required classes (no pixels yet)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from fractions import Fraction

import numpy as np

from abaw.sample import render
from abaw.tasks import AFFWILD2_TASKS, EXPR_CLASSES

TEST_VIDEOS = 3
MIN_VIDEOS_PER_TASK = 5  # one recording (source) per fold of a grouped 5-fold CV
MIN_LINES = 40  # room for a visible segment of every class plus an invalid stretch
# Multiples of 16, kept so that a seed's videos stay what they were. Partial macroblock rows were
# once blamed for unreproducible encodes; with macroblock-tree rate control off (render)
# 30 regenerations at 256x150, 320x180 and 192x140 all matched.
SIZES = ((256, 144), (320, 176), (192, 144))
CLAIMED_SIZES = ("1280x720", "640x360", "1920x1080", "480x360", "640x480")
DELTAS, DELTA_SHARE = (-1, 0, -2, 1), (0.5, 0.36, 0.07, 0.07)  # decoded frames minus lines, as in the real data


@dataclass
class Person:
    track: str
    tasks: dict[str, str] = field(default_factory=dict)  # task name -> split
    required: set[int] = field(default_factory=set)  # EXPR classes the face must show
    invalid: dict[str, str] = field(default_factory=dict)  # task name -> which values are invalid
    occluded: bool = False
    style: render.FaceStyle | None = None  # fixed where the person is in several videos; None: drawn per video
    look: render.Look = field(default_factory=render.Look)  # resting appearance and voice, per person


@dataclass(eq=False)  # identity semantics: videos are compared and hashed as objects
class Video:
    name: str
    split: str
    fps: Fraction | None  # None: variable frame rate
    size: tuple[int, int] = (256, 144)
    lines: int = 0  # annotation lines T
    delta: int = 0  # decoded frames minus T
    audio: str = "sound"  # sound, silent or none
    suffix: str = ".mp4"
    folder: str = "batch1"
    persons: list[Person] = field(default_factory=list)
    source: str = ""  # the recording it was cut from: its own name unless it is one of several parts


def plan_affwild2(rng: np.random.Generator, tracks: int, seconds: float) -> list[Video]:
    """Decide names, splits, frame rates, quirks, tasks and required classes of every video."""
    splits = draw_splits(rng, tracks, max(1, round(0.3 * tracks)), TEST_VIDEOS)
    labelled = rng.permutation(tracks)
    # Every rate the real data shows, on labelled videos first; the rest common rates.
    common = (Fraction(30), Fraction(30), Fraction(30000, 1001), Fraction(25))
    rates: list[Fraction | None] = [common[rng.integers(len(common))] for _ in splits]
    for index, rate in zip(labelled, (None, Fraction(15, 2), Fraction(30000, 1001), Fraction(25), Fraction(30))):
        rates[index] = rate
    deltas = list(DELTAS) + list(rng.choice(DELTAS, size=len(splits) - 4, p=DELTA_SHARE))
    deltas = [int(d) for d in rng.permutation(deltas)]
    videos = []
    for index, (split, fps, delta) in enumerate(zip(splits, rates, deltas)):
        lines = draw_lines(rng, seconds, float(fps) if fps is not None else 24.0)
        size = SIZES[rng.integers(len(SIZES))]
        videos.append(Video("", split, fps, size, lines, delta, folder=f"batch{1 + index % 2}"))
    # avi: 30 fps, not VFR; cut: 25 fps, so that its name may carry a (true) rate.
    pair, silent, soundless, cut, avi = (videos[i] for i in labelled[:5])
    silent.audio, soundless.audio, avi.suffix = "silent", "none", ".avi"
    _name_videos(rng, videos, liar=avi, cut=cut)
    for video in videos:
        sides = ("_left", "_right") if video is pair else ("",)
        video.persons = [Person(video.name + side) for side in sides]
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


def draw_lines(rng: np.random.Generator, seconds: float, fps: float) -> int:
    """Annotation lines of one video: ±30 % around `seconds`, room for every class at least."""
    return max(MIN_LINES, round(seconds * rng.uniform(0.7, 1.3) * fps))


def _next_part(rng: np.random.Generator, first: Video, seconds: float) -> Video:
    """The next video cut from `first`'s recording, as Aff-Wild2 cuts `122-60-1920x1080-1` ... `-4`:
    the same person (colours, tasks, classes to show) in the same split, rate, size and folder."""
    style = render.FaceStyle.random(rng)
    part = int(first.name.removeprefix(f"{first.source}-")) + 1
    video = Video(f"{first.source}-{part}", first.split, first.fps, first.size, draw_lines(rng, seconds, float(first.fps)),
                   int(rng.choice(DELTAS, p=DELTA_SHARE)), folder=first.folder, source=first.source)
    for person in first.persons:
        person.style = style
        video.persons.append(replace(person, track=video.name, tasks=dict(person.tasks),
                                     required=set(person.required), invalid=dict(person.invalid)))
    return video


def draw_splits(rng: np.random.Generator, labelled: int, validation: int, test: int) -> list[str]:
    """Shuffled train/validation splits of `labelled` videos, then `test` test videos."""
    shuffled = rng.permutation(["validation"] * validation + ["train"] * (labelled - validation))
    return [str(s) for s in shuffled] + ["test"] * test


def _name_videos(rng: np.random.Generator, videos: list[Video], liar: Video, cut: Video) -> None:
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
        size = CLAIMED_SIZES[rng.integers(len(CLAIMED_SIZES))]
        full = f"{number}-{claim}-{size}"
        video.name, video.source = [(full, full), (f"{number}", f"{number}"),
                                    (f"video{number}_{rng.integers(1, 4)}", f"video{number}"),
                                    (f"{full}-{rng.integers(1, 6)}", full)][style]


def _assign_tasks(rng: np.random.Generator, videos: list[Video], pair: Video) -> None:
    """Each task on >= MIN_VIDEOS_PER_TASK labelled videos spanning both splits, and on a test video."""
    labelled = [v for v in videos if v.split != "test"]
    tests = [v for v in videos if v.split == "test"]
    count = min(len(labelled), max(MIN_VIDEOS_PER_TASK, math.ceil(0.75 * len(labelled))))
    chosen: dict[str, list[Video]] = {}
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


def _assign_required(rng: np.random.Generator, videos: list[Video]) -> None:
    """Every class shows on >= MIN_VIDEOS_PER_TASK labelled faces of each task (or all of them)."""
    for task in AFFWILD2_TASKS:
        faces = [p for v in videos if v.split != "test" for p in v.persons if task.name in p.tasks]
        for label in range(len(EXPR_CLASSES)):
            missing = MIN_VIDEOS_PER_TASK - sum(label in p.required for p in faces)
            spare = [p for p in faces if label not in p.required]
            for i in rng.permutation(len(spare))[:max(0, missing)]:
                spare[i].required.add(label)


def _assign_invalid(rng: np.random.Generator, videos: list[Video]) -> None:
    """Invalid stretches on about a third of the labelled faces per task; VA also one-sided ones."""
    for task in AFFWILD2_TASKS:
        faces = [p for v in videos if v.split != "test" for p in v.persons if task.name in p.tasks]
        picked = rng.permutation(len(faces))[:max(2, round(0.35 * len(faces)))]
        for k, i in enumerate(picked):
            kinds = ("valence", "both", "arousal") if task.kind == "regression" else ("rows",)  # VA per value
            faces[i].invalid[task.name] = kinds[k % len(kinds)]


