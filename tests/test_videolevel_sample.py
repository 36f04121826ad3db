"""The EMI and A/H parts of the generated sample dataset: the documented layouts, read back
without a problem, the truth of the manifest recovered, the same bytes from the same seed."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest

from abaw.data import bah, load_tracks, present_tasks
from abaw.data.transcripts import read_transcript
from abaw.inspection import inspect_root
from abaw.tasks import AH, EMI
from features.media import probe


@pytest.fixture(scope="module")
def manifest(sample_root) -> dict:
    return json.loads((sample_root / "sample_manifest.json").read_text())


def test_both_parts_are_in_the_documented_layouts(sample_root):
    root = sample_root / "EMI"
    assert sorted(p.name for p in root.iterdir()) == ["raw", "test_split.csv", "train_split.csv", "valid_split.csv"]
    assert (root / "train_split.csv").read_text().splitlines()[0] == ",".join(EMI.submission_header)
    root = sample_root / "BAH"
    assert sorted(p.name for p in root.iterdir()) == ["Videos", "split", "transcription", bah.ANNOTATION_FILE]
    assert sorted(p.name for p in (root / "split").iterdir()) == ["test.txt", "train.txt", "val.txt"]
    videos = sorted(root.glob("Videos/*/Visite_1/*_Question_*_Video.mp4"))
    assert videos and all(v.parts[-3] == v.name.split("_")[0] for v in videos)
    assert {t.name for t in present_tasks(sample_root)} >= {"emi", "ah"}


def test_inspect_finds_no_problem_and_the_manifests_counts(sample_root, manifest):
    stats, problems = inspect_root(sample_root, tasks=[EMI, AH])
    assert problems == []
    counts = Counter(v["split"] for v in manifest["emi"]["videos"].values())
    assert {s: stats["emi"]["emi"][s]["tracks"] for s in counts} == dict(counts)
    participants = Counter(manifest["bah"]["participants"].values())
    assert {s: stats["bah"]["ah"][s]["participants"] for s in participants} == dict(participants)
    assert stats["emi"]["emi"]["train"]["fps"][0] > 0  # every video opened


def test_emi_labels_and_videos_are_the_manifests(sample_root, manifest):
    tracks = load_tracks(sample_root, EMI)
    truth = manifest["emi"]["videos"]
    assert len(tracks) == len(truth) == sum(manifest["emi"]["splits"].values())
    for track in tracks:
        expected = truth[track.id]
        assert track.split == expected["split"]
        if track.labels is not None:
            assert np.allclose(track.labels[0], expected["labels"], atol=1e-4)
        assert probe(track.video_path).frames == expected["frames"]
    labels = np.concatenate([t.labels for t in tracks if t.labels is not None])
    assert labels.min() >= 0 and labels.max() <= 1 and (labels.max(axis=0) > 0.6).all()  # each dimension shows


def test_ah_participants_own_several_videos_with_timed_transcripts(sample_root, manifest):
    tracks = load_tracks(sample_root, AH)
    truth = manifest["bah"]["videos"]
    per_participant = Counter(t.participant for t in tracks)
    assert min(per_participant.values()) >= 2 and len(per_participant) == len(manifest["bah"]["participants"])
    splits = {}
    for track in tracks:
        splits.setdefault(track.participant, set()).add(track.split)
        expected = truth[track.id]
        assert track.participant == expected["participant"] and track.split == expected["split"]
        if track.split != "test":
            assert track.labels[0, 0] == expected["label"]
            assert track.segments.tolist() == expected["segments"]
        segments = read_transcript(track.transcript)
        duration = expected["frames"] / expected["fps"]
        assert segments[0].start == 0 and duration - 0.2 < segments[-1].end <= duration + 0.01
        assert " ".join(s.text for s in segments) == track.transcript_text
        if expected["label"]:  # the hedges are spoken inside the A/H segments
            hedged = [s for s in segments if any(a <= s.start < b for a, b in expected["segments"])]
            assert hedged and all(s.text for s in hedged)
    assert all(len(s) == 1 for s in splits.values())  # split by participant
    for split in ("train", "validation"):
        labels = [truth[t.id]["label"] for t in tracks if t.split == split]
        assert np.mean(labels) >= 0.3


def test_same_seed_same_video_level_bytes(tmp_path):
    from abaw.sample.videos import write_video_datasets

    first, second = {}, {}
    write_video_datasets(tmp_path / "a", np.random.SeedSequence(5), first, lambda m: None)
    write_video_datasets(tmp_path / "b", np.random.SeedSequence(5), second, lambda m: None)
    assert first == second
    files = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files and all((tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes() for f in files)
