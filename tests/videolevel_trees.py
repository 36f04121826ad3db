"""Tiny hand-written EMI and BAH roots (text files and empty videos) for the video-level tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import yaml

from abaw.tasks import EMI

EMI_HEADER = ",".join(EMI.submission_header)


def write_emi_root(root: Path, train: int = 8, valid: int = 4, test: int = 3, seed: int = 0) -> Path:
    """An EMI root: ``train_split.csv`` / ``valid_split.csv`` with random intensities,
    ``test_split.csv`` with Filename alone, an empty ``raw/<id>.mp4`` per video."""
    rng = np.random.default_rng(seed)
    (root / "raw").mkdir(parents=True)
    number = 1
    for name, count, labelled in (("train_split.csv", train, True), ("valid_split.csv", valid, True),
                                  ("test_split.csv", test, False)):
        lines = [EMI_HEADER if labelled else "Filename"]
        for _ in range(count):
            (root / "raw" / f"{number}.mp4").write_bytes(b"")
            values = ",".join(f"{v:.4f}" for v in rng.random(6)) if labelled else None
            lines.append(f"{number},{values}" if labelled else f"{number}")
            number += 1
        (root / name).write_text("\n".join(lines) + "\n")
    return root


def bah_stem(pid: str, question: int) -> str:
    return f"{pid}_Question_{question}_Participant_Video"


def write_bah_root(root: Path, participants: dict[str, str] | None = None, questions: int = 3,
                   seed: int = 0) -> Path:
    """A BAH root: ``Videos/<pid>/Visite_1/<stem>.mp4`` (empty), ``split/<split>.txt`` lines
    ``<pid>/Visite_1/<stem>.mp4,<label>,<transcript>``, the annotation YAML with global_ah and
    segments, and a Whisper JSON transcript per video. ``participants``: pid -> split file stem."""
    import json

    rng = np.random.default_rng(seed)
    participants = participants or {f"{100 + i}": s for i, s in enumerate(
        ["train"] * 6 + ["val"] * 2 + ["test"] * 2)}
    annotations, lines = {}, {}
    (root / "transcription").mkdir(parents=True)
    for pid, split in participants.items():
        for q in range(1, questions + 1):
            stem = bah_stem(pid, q)
            relative = f"{pid}/Visite_1/{stem}.mp4"
            (root / "Videos" / pid / "Visite_1").mkdir(parents=True, exist_ok=True)
            (root / "Videos" / relative).write_bytes(b"")
            label = int(rng.random() < 0.4)
            text = "well I want to but maybe not" if label else "yes I will do it"
            lines.setdefault(split, []).append(f"{relative},{label},{text}" if split != "test" else f"{relative},,{text}")
            annotations[relative] = {"global_ah": label,
                                     "time_detailed_ah": [{"start": 0.5, "end": 1.5}] if label else []}
            (root / "transcription" / f"{stem}.json").write_text(json.dumps(
                {"text": text, "segments": [{"start": 0.0, "end": 1.0, "text": text[:8]},
                                            {"start": 1.0, "end": 2.0, "text": text[8:]}]}))
    (root / "split").mkdir()
    for split, rows in lines.items():
        (root / "split" / f"{split}.txt").write_text("\n".join(rows) + "\n")
    (root / "video_annotation_transcript.yaml").write_text(yaml.safe_dump(annotations, sort_keys=True))
    return root
