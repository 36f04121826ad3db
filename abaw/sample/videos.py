"""The video-level parts of the sample dataset: EMI (Hume-Vidmimic2 layout) and A/H (BAH layout).

Each video shows one drawn person (``render.draw_face``, encoded with its voice by
``render.encode_faces``) and its labels follow what is drawn and heard:

- EMI: every video has six intensities in [0, 1]; the face is their mix of six expression
  targets, each with a feature of its own (Joy: corners up and cheeks; Amusement: the jaw
  open; Admiration: eyes wide; Determination: lips pressed, brows down and in; Empathic Pain:
  inner brows up, corners down; Excitement: brows up and a lively head), reached a moment after
  the start, as a person mimicking a clip does; the voice gets louder and higher with
  excitement and amusement. A few people mimic several clips each (Hume-Vidmimic2's do too),
  so that what differs between two videos of one person is what they mimic.
- A/H: a participant answers several questions; in a video with A/H the face swings between a
  smile and a frown while the head shakes, the voice stops and starts, and the transcript
  hedges ("I don't know", "maybe, but"), inside the frame-level segments the YAML gives; in a
  video without, one steady expression, an even voice and a plain answer. How often a
  participant shows A/H is their own, so participant-grouped folds matter.

Videos are short and small (a few seconds at a few frames per second) so that generating,
detecting faces and extracting features stay quick; no aligned crops are written (neither
dataset ships them: faces are detected in the raw video).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import numpy as np
import yaml

from abaw.sample import render
from abaw.sample.affwild2 import write_text
from abaw.sample.face import head_motion, smooth
from abaw.sample.plan import draw_splits
from abaw.tasks import EMI

EMI_VIDEOS = {"train": 24, "validation": 8, "test": 6}
EMI_PEOPLE = 8
BAH_PARTICIPANTS = {"train": 8, "validation": 3, "test": 3}
QUESTIONS = (2, 4)  # questions answered per participant, inclusive range
SIZE = (192, 144)
FPS = (Fraction(5), Fraction(6))
EMI_SECONDS, BAH_SECONDS = (2.0, 3.0), (2.5, 4.0)
AUDIO = render.AudioSpec(16000, 1)
MIN_POSITIVE = 0.3  # A/H share of the videos of every labelled split, at least

# Deviation of each face parameter (render.PARAMS order: eye, brow, tilt, curve, open, raise,
# press, cheek) at full intensity of each EMI dimension, in EMI.labels order. Each dimension
# has a parameter of its own, so that six intensities can be read back from one face:
# Admiration the eyes, Amusement the jaw, Determination pressed lips, Empathic Pain the inner
# brows and the corners down, Excitement the brows (and a lively head, a loud voice), Joy the
# corners up and the cheeks.
_EMI_TARGETS = np.array([
    [1.0, 0.2, 0.0, 0.1, 0.0, 0.0, 0.0, 0.0],   # Admiration
    [0.0, 0.0, 0.0, 0.3, 1.0, 0.0, 0.0, 0.0],   # Amusement
    [-0.2, -0.3, 0.6, 0.0, 0.0, 0.0, 1.0, 0.0],  # Determination
    [0.0, 0.1, -1.0, -0.7, 0.0, 0.0, 0.0, 0.0],  # Empathic Pain
    [0.2, 1.0, 0.0, 0.0, 0.2, 0.0, 0.0, 0.0],   # Excitement
    [-0.1, 0.0, 0.0, 0.9, 0.0, 0.0, 0.0, 1.0],   # Joy
])
_SMILE = np.array([-0.1, 0.1, 0.0, 0.8, 0.2, 0.0, 0.0, 0.6])
_FROWN = np.array([-0.3, -0.4, 0.6, -0.6, 0.0, 0.3, 0.5, 0.0])
_PLAIN = ("Yes, I want to do it.", "I am sure this will work for me.", "Definitely, I will start next week.",
          "I like the idea and I will try it.", "Yes, that is my plan.", "I have decided to change.")
_HEDGES = ("Um, I don't know.", "Maybe, but it is hard.", "I guess so, but I am not sure.",
           "Well, I want to, but...", "It depends, honestly.", "Part of me does, part of me doesn't.")
_OPENERS = ("So,", "Well,", "About that,", "Hmm,")


def write_video_datasets(out: Path, seed: np.random.SeedSequence, manifest: dict,
                         say: Callable[[str], None]) -> None:
    """Write ``out/EMI`` and ``out/BAH`` and record their truth under ``manifest["emi"]`` and
    ``manifest["bah"]`` (the frame-wise parts' entries are left as they are)."""
    emi_seed, bah_seed = seed.spawn(2)
    manifest["emi"] = _write_emi(out / "EMI", emi_seed, say)
    manifest["bah"] = _write_bah(out / "BAH", bah_seed, say)


def _encode(path: Path, rng: np.random.Generator, params: np.ndarray, motion: np.ndarray, arousal: np.ndarray,
            fps: Fraction, person: tuple[render.Look, render.FaceStyle] | None = None) -> int:
    """One person's video with their voice; no crops (``lines`` 0). Mono 16 kHz audio, the rate
    the audio extractors resample to anyway: AAC at 44.1/48 kHz stereo took most of the
    generation time. ``person``: the look and colours of someone in several videos (else drawn
    from ``rng``, as are the room and the rhythm of the voice). Returns the frames written."""
    look, style = person if person is not None else (render.Look.random(rng), None)
    face = render.Face(params, motion, np.zeros(len(params), bool), np.clip(arousal, -1.0, 1.0), style, look)
    frames, _, _ = render.encode_faces(path, SIZE, fps, len(params), [face], [path.with_suffix("")], 0, "sound", rng,
                                       audio_spec=AUDIO)
    return frames


def _frames(rng: np.random.Generator, seconds: tuple[float, float]) -> tuple[Fraction, int]:
    fps = FPS[int(rng.integers(len(FPS)))]
    return fps, max(8, round(rng.uniform(*seconds) * float(fps)))


# ----------------------------------------------------------------------------- EMI


def _intensities(rng: np.random.Generator) -> np.ndarray:
    """(6,) intensities: one or two dimensions dominate (a clip evokes a few emotions), the
    rest stay low; Joy and Amusement tend to come together, as raters' scores do."""
    values = rng.beta(1.0, 5.0, len(EMI.labels))
    for k in rng.choice(len(EMI.labels), size=int(rng.integers(1, 3)), replace=False):
        values[k] = rng.beta(5.0, 1.6)
    joy, amusement = EMI.labels.index("Joy"), EMI.labels.index("Amusement")
    values[[joy, amusement]] = np.maximum(values[[joy, amusement]], 0.5 * values[[amusement, joy]])
    return np.round(np.clip(values, 0.0, 1.0), 4)


def _write_emi(root: Path, seed: np.random.SeedSequence, say: Callable[[str], None]) -> dict:
    rng = np.random.default_rng(seed)
    splits = draw_splits(rng, EMI_VIDEOS["train"] + EMI_VIDEOS["validation"], EMI_VIDEOS["validation"], EMI_VIDEOS["test"])
    ids = sorted(int(i) for i in rng.choice(np.arange(1, 100000), size=len(splits), replace=False))
    rows: dict[str, list[str]] = {split: [] for split in EMI_VIDEOS}
    truth = {}
    children = seed.spawn(len(splits))
    # Hume-Vidmimic2's people each mimic many clips: a few people here, each in several videos
    # with their own look, colours and room (their own seed), so that what differs between two
    # videos of one person is what they mimic.
    people = seed.spawn(EMI_PEOPLE)
    who = rng.integers(EMI_PEOPLE, size=len(splits))
    for index, (split, number, child) in enumerate(zip(splits, ids, children)):
        video_rng = np.random.default_rng(child)
        person_rng = np.random.default_rng(people[who[index]])
        say(f"EMI video {index + 1}/{len(splits)}: {number}")
        labels = _intensities(video_rng)
        fps, n = _frames(video_rng, EMI_SECONDS)
        onset = smooth(np.clip((np.arange(n) - 0.2 * n) / (0.2 * n), 0.0, 1.0), 2)  # mimicry starts late
        params = onset[:, None] * (labels @ _EMI_TARGETS)[None] + smooth(video_rng.normal(0.0, 0.06, (n, 8)), 3)
        lively = labels[EMI.labels.index("Excitement")] + 0.5 * labels[EMI.labels.index("Amusement")]
        motion = head_motion(video_rng, np.full(n, 0.15 + 0.8 * lively), float(fps))
        arousal = -0.6 + 1.5 * onset * lively + video_rng.normal(0.0, 0.05, n)
        person = (render.Look.random(person_rng), render.FaceStyle.random(person_rng))
        frames = _encode(root / "raw" / f"{number}.mp4", person_rng, params, motion, arousal, fps, person)
        rows[split].append(f"{number}" if split == "test" else ",".join([str(number), *(f"{v:.4f}" for v in labels)]))
        truth[str(number)] = {"split": split, "path": f"EMI/raw/{number}.mp4", "fps": float(fps), "frames": frames,
                              "labels": labels.tolist(), "person": int(who[index])}
    header = ",".join(EMI.submission_header)
    for split, name in (("train", "train_split.csv"), ("validation", "valid_split.csv"), ("test", "test_split.csv")):
        write_text(root / name, ["Filename" if split == "test" else header, *rows[split]])
    return {"videos": truth, "splits": {split: len(r) for split, r in rows.items()}}


# ----------------------------------------------------------------------------- BAH


def _ah_segments(rng: np.random.Generator, duration: float) -> list[tuple[float, float]]:
    """One or two stretches of A/H covering 35-60 % of the answer, after its first 0.3 s."""
    total = rng.uniform(0.35, 0.6) * duration
    pieces = [total] if rng.random() < 0.6 else [total / 2, total / 2]
    free = duration - 0.3 - total - 0.2 * (len(pieces) - 1)
    gaps = np.sort(rng.uniform(0.0, free, len(pieces)))
    segments, start = [], 0.3
    for gap, previous, piece in zip(gaps, np.concatenate([[0.0], gaps[:-1]]), pieces):
        start += gap - previous
        segments.append((round(float(start), 2), round(float(start + piece), 2)))
        start += piece + 0.2
    return segments


def _answer(rng: np.random.Generator, n: int, fps: float, segments: list[tuple[float, float]]):
    """(N, P) face parameters, (N, 3) head motion and (N,) voice arousal of one answer."""
    times = np.arange(n) / fps
    inside = np.zeros(n, bool)
    for start, end in segments:
        inside |= (times >= start) & (times < end)
    steady = _SMILE * rng.uniform(0.2, 0.6) if rng.random() < 0.6 else _FROWN * rng.uniform(0.1, 0.3)
    swing = np.sign(np.sin(2.0 * math.pi * times / rng.uniform(0.6, 0.9) + rng.uniform(0, 6)))
    target = np.where(inside[:, None], np.where(swing[:, None] > 0, _SMILE, _FROWN), steady)
    params = smooth(target, 2) + smooth(rng.normal(0.0, 0.05, target.shape), 2)
    motion = head_motion(rng, np.full(n, 0.2), fps)
    motion[:, 0] += np.where(inside, 0.12 * np.sin(2.0 * math.pi * 2.0 * times), 0.0)  # the head shakes
    speaking = np.where(inside, np.sin(2.0 * math.pi * times / 0.7) > 0.2, True)  # stop and start
    arousal = np.where(speaking, rng.uniform(-0.1, 0.3), -1.0) + rng.normal(0.0, 0.05, n)
    return params, motion, arousal


def _transcript(rng: np.random.Generator, duration: float, segments: list[tuple[float, float]]) -> list[dict]:
    """Whisper-style segments over the answer: a hedge where A/H is, plain words elsewhere."""
    cuts = sorted({0.0, round(duration, 2), *(t for s in segments for t in s)})
    spoken = []
    for start, end in zip(cuts, cuts[1:]):
        if end - start < 0.15:
            continue
        hedging = any(a <= start < b for a, b in segments)
        words = _HEDGES if hedging else _PLAIN
        text = words[int(rng.integers(len(words)))]
        if not spoken and rng.random() < 0.5:
            first = text if text.startswith("I ") else text[0].lower() + text[1:]
            text = f"{_OPENERS[int(rng.integers(len(_OPENERS)))]} {first}"
        spoken.append({"id": len(spoken), "start": round(start, 2), "end": round(end, 2), "text": f" {text}"})
    return spoken


def _ah_labels(rng: np.random.Generator, splits: list[str], propensity: np.ndarray) -> list[int]:
    """0/1 per video, likelier where the participant's propensity is high; in every labelled
    split at least :data:`MIN_POSITIVE` of the videos are A/H (random draws of a few dozen
    videos can leave a split without any, which no score can be read from)."""
    labels = (rng.random(len(splits)) < 0.15 + 0.7 * propensity).astype(int)
    for split in ("train", "validation"):
        members = np.flatnonzero(np.array(splits) == split)
        missing = math.ceil(MIN_POSITIVE * len(members)) - int(labels[members].sum())
        negatives = members[labels[members] == 0]
        labels[rng.permutation(negatives)[:max(0, missing)]] = 1
    return labels.tolist()


def _write_bah(root: Path, seed: np.random.SeedSequence, say: Callable[[str], None]) -> dict:
    rng = np.random.default_rng(seed)
    counts = BAH_PARTICIPANTS
    splits = draw_splits(rng, counts["train"] + counts["validation"], counts["validation"], counts["test"])
    pids = [f"{int(p)}" for p in sorted(rng.choice(np.arange(1000, 10000), size=len(splits), replace=False))]
    propensity = rng.beta(1.5, 2.0, len(splits))  # how often each participant shows A/H
    questions = rng.integers(QUESTIONS[0], QUESTIONS[1] + 1, len(splits))
    files = {"train": "train.txt", "validation": "val.txt", "test": "test.txt"}
    lines: dict[str, list[str]] = {split: [] for split in files}
    annotations, truth = {}, {}
    plan = [(pid, split, int(q)) for pid, split, count in zip(pids, splits, questions)
            for q in rng.choice(np.arange(1, 9), size=int(count), replace=False)]
    labels = _ah_labels(rng, [split for _, split, _ in plan],
                        np.repeat(propensity, questions))
    children = seed.spawn(len(plan))
    # A participant is one person in one room in all their answers: their look, colours, room
    # and voice come from their own seed, so that who they are tells nothing about A/H.
    people = dict(zip(pids, seed.spawn(len(pids))))
    for index, ((pid, split, question), label, child) in enumerate(zip(plan, labels, children)):
        video_rng = np.random.default_rng(child)
        person_rng = np.random.default_rng(people[pid])  # the same draws for each of their videos
        stem = f"{pid}_Question_{question}_Participant_Video"
        relative = f"{pid}/Visite_1/{stem}.mp4"
        say(f"BAH video {index + 1}/{len(plan)}: {stem}")
        fps, n = _frames(video_rng, BAH_SECONDS)
        duration = n / float(fps)
        segments = _ah_segments(video_rng, duration) if label else []
        params, motion, arousal = _answer(video_rng, n, float(fps), segments)
        person = (render.Look.random(person_rng), render.FaceStyle.random(person_rng))
        frames = _encode(root / "Videos" / relative, person_rng, params, motion, arousal, fps, person)
        spoken = _transcript(video_rng, duration, segments)
        text = "".join(s["text"] for s in spoken).strip()
        write_text(root / "transcription" / f"{stem}.json",
                    [json.dumps({"text": f" {text}", "segments": spoken, "language": "en"})])
        lines[split].append(f"{relative},{'' if split == 'test' else label},{text}")
        if split != "test":  # the test labels are withheld
            annotations[relative] = {"global_ah": label, "time_detailed_ah": [{"start": a, "end": b} for a, b in segments],
                                     "transcript": text}
        truth[stem] = {"split": split, "participant": pid, "path": f"BAH/Videos/{relative}", "fps": float(fps),
                       "frames": frames, "label": label, "segments": [list(s) for s in segments]}
    for split, name in files.items():
        write_text(root / "split" / name, lines[split])
    write_text(root / "video_annotation_transcript.yaml",
                yaml.safe_dump(annotations, sort_keys=True, allow_unicode=True).splitlines())
    return {"videos": truth, "participants": dict(zip(pids, splits))}
