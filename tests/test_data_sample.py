"""Tests of the procedural sample dataset: layout, formats, quirks, determinism, learnability."""

from __future__ import annotations

import json
import re
from fractions import Fraction
from pathlib import Path

import av
import decord
import numpy as np
import pytest
from PIL import Image

from abaw import sample
from abaw.data import affwild2
from abaw.sample import render as sample_render
from abaw.data.records import DataError
from abaw.tasks import AFFWILD2_TASKS, EXPR, EXPR_CLASSES, VD

SEED, TRACKS, SECONDS = 0, 5, 2.0
SPLIT_DIRS = {"train": "Train_Set", "validation": "Validation_Set"}


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    out = tmp_path_factory.mktemp("sample") / "data"
    return out, sample.generate(out, seed=SEED, tracks=TRACKS, seconds=SECONDS)


def annotation_files(root: Path, task) -> dict[str, Path]:
    """Track id -> annotation file of `task`, both labelled splits."""
    return {p.stem: p for split in SPLIT_DIRS.values()
            for p in (root / "Aff-Wild2/annotations" / task.annotation_dirs[0] / split).glob("*.txt")}


def body(path: Path) -> list[list[str]]:
    return [line.split(",") for line in path.read_text().split("\n")[1:] if line]


def decode_frames(path: Path) -> list[np.ndarray]:
    with av.open(str(path)) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


def test_layout(data):
    out, manifest = data
    root = out / "Aff-Wild2"
    for task in AFFWILD2_TASKS:
        for split in SPLIT_DIRS.values():
            assert list((root / "annotations" / task.annotation_dirs[0] / split).glob("*.txt")), (task.name, split)
        assert (root / "names_of_videos_in_each_test_set" / task.test_list).read_text().strip()
    for word in ("Expr", "VA", "AU"):
        assert (root / "test_set_examples" / f"CVPR_6th_ABAW_{word}_test_set_example.txt").is_file()
    assert list((root / "batch1").iterdir()) and list((root / "batch2").iterdir())
    assert [p.suffix for p in root.glob("batch*/*")].count(".avi") == 1
    crops = sorted((root / "cropped_aligned").glob("*/*.jpg"))
    assert crops and all(re.fullmatch(r"\d{5}\.jpg", p.name) for p in crops)
    assert Image.open(crops[0]).size == (112, 112) and Image.open(crops[0]).format == "JPEG"
    def count(folder: str, pattern: str) -> int:
        return len(list((out / "DVD" / folder).glob(pattern)))

    for split in ("Training", "Validation"):
        assert count(f"{split}/videos", "*.mp4") == count(f"{split}/annotations", "*.csv") > 0
    assert count("Test/videos", "*.mp4") == count("Test/templates", "*.csv") == sample.DVD_TEST_VIDEOS
    assert json.loads((out / "sample_manifest.json").read_text()) == manifest
    assert not list(out.parent.glob(".data.tmp-*"))  # the build folder was moved, not left behind
    for video in manifest["videos"].values():
        assert (out / video["path"]).is_file()


def test_headers_are_exact(data):
    out, manifest = data
    for task in AFFWILD2_TASKS:
        for path in annotation_files(out, task).values():
            assert path.read_text().split("\n")[0] == ",".join(task.labels), path
    for path in (out / "DVD/Training/annotations").glob("*.csv"):
        assert path.read_text().startswith(",".join(VD.submission_header) + "\n")
    for path in (out / "DVD/Validation/annotations").glob("*.csv"):
        assert path.read_text().startswith("Frame_Num,Label\n")
    for path in (out / "DVD/Test/templates").glob("*.csv"):
        lines = path.read_text().split("\n")
        assert lines[0] == ",".join(VD.submission_header)
        assert lines[1:-1] == [f"{i}," for i in range(1, len(lines) - 1)]


def test_test_lists_and_templates(data):
    out, manifest = data
    root = out / "Aff-Wild2"
    for task, word in zip(AFFWILD2_TASKS, ("Expr", "VA", "AU")):
        tracks = (root / "names_of_videos_in_each_test_set" / task.test_list).read_text().split()
        assert tracks and all(manifest["tracks"][f"{task.name}/{t}"]["split"] == "test" for t in tracks)
        lines = (root / "test_set_examples" / f"CVPR_6th_ABAW_{word}_test_set_example.txt").read_text().split("\n")
        assert lines[0] == ",".join(task.submission_header)
        expected = [f"{t}/{i:05d}.jpg" + "," * task.columns for t in tracks
                    for i in range(1, manifest["tracks"][f"{task.name}/{t}"]["lines"] + 1)]
        assert lines[1:-1] == expected and lines[-1] == ""
        assert not any((root / "annotations" / task.annotation_dirs[0] / s / f"{t}.txt").exists()
                       for t in tracks for s in SPLIT_DIRS.values())
        assert all((root / "cropped_aligned" / t).is_dir() for t in tracks)


def test_annotation_values_and_invalid_codes(data):
    out, _ = data
    seen_invalid = {}
    for task in AFFWILD2_TASKS:
        for path in annotation_files(out, task).values():
            rows = body(path)
            assert all(len(row) == task.columns for row in rows), path
            values = np.array(rows, dtype=float)
            invalid = values == task.invalid
            if task.name == "expr":
                assert set(values.ravel()) <= set(range(-1, 8))
            elif task.name == "au":
                assert set(values.ravel()) <= {-1, 0, 1}
                assert np.array_equal(invalid.any(axis=1), invalid.all(axis=1))  # -1 only as whole rows
            else:
                assert np.all(invalid | (np.abs(values) <= 1))
                assert all(re.fullmatch(r"-5|-?\d\.\d{3,4}", v) for row in rows for v in row)
                one_sided = bool((invalid[:, 0] != invalid[:, 1]).any())
                seen_invalid["va_one_sided"] = seen_invalid.get("va_one_sided", False) or one_sided
            seen_invalid[task.name] = seen_invalid.get(task.name, False) or bool(invalid.any())
    assert seen_invalid == {"expr": True, "va": True, "au": True, "va_one_sided": True}


def test_manifest_counts_match_files(data):
    out, manifest = data
    root = out / "Aff-Wild2"
    for task in AFFWILD2_TASKS:
        for split, folder in SPLIT_DIRS.items():
            paths = sorted((root / "annotations" / task.annotation_dirs[0] / folder).glob("*.txt"))
            values = np.concatenate([np.array(body(p), dtype=float) for p in paths])
            valid = values != task.invalid
            missing = sum(not (root / "cropped_aligned" / p.stem / f"{i:05d}.jpg").exists()
                          for p in paths for i in range(1, len(body(p)) + 1))
            entry = manifest["affwild2"][task.name][split]
            assert (entry["tracks"], entry["lines"], entry["missing_crops"]) == (len(paths), len(values), missing)
            if task.name == "va":
                assert entry["valid"] == valid.sum(axis=0).tolist()
            else:
                assert entry["valid"] == int(valid.all(axis=1).sum())
            if task.name == "expr":
                assert entry["class_counts"] == np.bincount(values[valid].astype(int), minlength=8).tolist()
    for split, folder in (("train", "Training"), ("validation", "Validation")):
        labels = [int(r[1]) for p in (out / "DVD" / folder / "annotations").glob("*.csv") for r in body(p)]
        assert manifest["dvd"][split]["lines"] == len(labels) and manifest["dvd"][split]["positives"] == sum(labels)


def test_missing_crops(data):
    out, manifest = data
    lines = {key.split("/", 1)[1]: t["lines"] for key, t in manifest["tracks"].items() if not key.startswith("vd/")}
    with_gaps, mid_track = 0, False
    for track, count in lines.items():
        folder = out / "Aff-Wild2/cropped_aligned" / track
        present = np.array([(folder / f"{i:05d}.jpg").exists() for i in range(1, count + 1)])
        with_gaps += not present.all()
        mid_track |= bool(np.any(~present[:-1] & present[1:]))  # an occlusion, not just a short video
    assert with_gaps >= 2 and mid_track
    assert sum(entry["missing_crops"] for splits in manifest["affwild2"].values() for entry in splits.values()) > 0


def test_decoded_frames_differ_from_annotation_lines(data):
    out, manifest = data
    differences = set()
    for task_track, track in manifest["tracks"].items():
        video = manifest["videos"][track["video"]]
        if task_track.startswith("vd/"):
            continue
        differences.add(video["frames"] - track["lines"])
    assert differences <= {-2, -1, 0, 1} and 0 in differences and differences - {0}
    for name, video in manifest["videos"].items():
        assert len(decode_frames(out / video["path"])) == video["frames"], name


def test_frame_rates_and_variable_rate_file(data):
    out, manifest = data
    rates = {v["fps"] for v in manifest["videos"].values() if v["dataset"] == "affwild2"}
    assert {30.0, 25.0, float(Fraction(30000, 1001)), 7.5, None} <= rates
    vfr = [v for v in manifest["videos"].values() if v["fps"] is None]
    assert len(vfr) == 1
    reader = decord.VideoReader(str(out / vfr[0]["path"]))
    steps = np.diff(reader.get_frame_timestamp(range(len(reader)))[:, 0])
    assert len(np.unique(np.round(steps, 3))) >= 2  # irregular intervals
    assert 20.0 <= 1.0 / steps.mean() <= 25.0
    for v in manifest["videos"].values():
        if v["fps"] is not None and v["path"].endswith(".mp4"):
            with av.open(str(out / v["path"])) as container:
                assert abs(float(container.streams.video[0].average_rate) - v["fps"]) < 1e-6


def test_audio_variants(data):
    out, manifest = data
    kinds = {}
    for name, video in manifest["videos"].items():
        with av.open(str(out / video["path"])) as container:
            if not container.streams.audio:
                kinds[name] = "none"
                continue
            samples = np.concatenate([f.to_ndarray().ravel() for f in container.decode(audio=0)])
        assert samples.size > 0
        kinds[name] = "sound" if np.any(samples) else "silent"
    assert kinds == {name: v["audio"] for name, v in manifest["videos"].items()}
    assert sorted(kinds.values()).count("none") == 1 and sorted(kinds.values()).count("silent") == 1


def test_pair_and_names(data):
    out, manifest = data
    root = out / "Aff-Wild2"
    sides = {key.split("/")[0]: [] for key in manifest["tracks"]}
    for key, track in manifest["tracks"].items():
        if key.endswith(("_left", "_right")):
            assert key.split("/")[1].startswith(track["video"]) and track["video"] in manifest["videos"]
            sides[key.split("/")[0]].append(key.rsplit("_", 1)[1])
    pair_video = {t["video"] for k, t in manifest["tracks"].items() if k.endswith("_right")}
    assert len(pair_video) == 1 and (root / "cropped_aligned" / f"{pair_video.pop()}_left").is_dir()
    assert any(s == ["right"] for s in sides.values())  # a task where only _right is annotated
    lies = [n for n, v in manifest["videos"].items()
            if re.fullmatch(r"\d+-(\d+)-\d+x\d+(-\d+)?", n) and int(n.split("-")[1]) != round(v["fps"] or 0)]
    assert lies


def test_a_recording_cut_into_two_videos(data):
    out, manifest = data
    videos = {name: v for name, v in manifest["videos"].items() if v["dataset"] == "affwild2"}
    # The name rule recovers the generator's truth on every name it wrote.
    assert all(affwild2.source_name(name) == v["source"] for name, v in videos.items())
    by_source: dict[str, list[str]] = {}
    for name, v in videos.items():
        by_source.setdefault(v["source"], []).append(name)
    (cut,) = [sorted(names) for names in by_source.values() if len(names) > 1]
    first, second = cut
    assert re.fullmatch(r"\d+-25-\d+x\d+-\d+", first) and second.rsplit("-", 1)[0] == first.rsplit("-", 1)[0]
    assert int(second.rsplit("-", 1)[1]) == int(first.rsplit("-", 1)[1]) + 1
    assert videos[first]["fps"] == videos[second]["fps"] == 25.0
    tracks = {name: {k.split("/")[0]: t["split"] for k, t in manifest["tracks"].items() if k.endswith("/" + name)}
              for name in cut}
    assert tracks[first] == tracks[second] and len(set(tracks[first].values())) == 1
    assert set(tracks[first].values()) <= {"train", "validation"}
    # One person: the same palette (the forehead's skin, which differs by more between people).
    skin = [np.asarray(Image.open(min((out / "Aff-Wild2/cropped_aligned" / name).glob("*.jpg"))))[14:22, 50:62]
            for name in cut]
    assert np.abs(skin[0].mean((0, 1)) - skin[1].mean((0, 1))).max() < 4


def test_class_support_for_cross_validation(data):
    _, manifest = data
    for task in AFFWILD2_TASKS:
        sources = {manifest["videos"][t["video"]]["source"] for k, t in manifest["tracks"].items()
                   if k.startswith(task.name + "/") and t["split"] != "test"}
        assert len(sources) >= sample.MIN_VIDEOS_PER_TASK, task.name  # grouped folds need sources
    counts = np.add(*(manifest["affwild2"]["expr"][s]["class_counts"] for s in ("train", "validation")))
    assert np.all(counts > 0)
    rare = counts[[EXPR_CLASSES.index(c) for c in ("Anger", "Disgust", "Fear")]].sum()
    assert rare < counts[[EXPR_CLASSES.index(c) for c in ("Neutral", "Other")]].sum()
    dvd = [manifest["dvd"][s] for s in ("train", "validation")]
    assert sum(d["tracks"] for d in dvd) >= 5
    assert 0.15 < sum(d["positives"] for d in dvd) / sum(d["lines"] for d in dvd) < 0.4


def _expr_crops(root: Path, folder: str) -> tuple[np.ndarray, np.ndarray]:
    """(n, 576) crops at 24x24 grey, centred per track to remove identity, and (n,) labels."""
    features, labels = [], []
    for path in sorted((root / "annotations" / EXPR.annotation_dirs[0] / folder).glob("*.txt")):
        rows = []
        for i, (label,) in enumerate(body(path), 1):
            crop = root / "cropped_aligned" / path.stem / f"{i:05d}.jpg"
            if int(label) >= 0 and crop.exists():
                rows.append(np.asarray(Image.open(crop).convert("L").resize((24, 24)), np.float32).ravel())
                labels.append(int(label))
        features.append(np.array(rows) - np.mean(rows, axis=0))
    return np.concatenate(features), np.array(labels)


def test_expressions_are_learnable_from_crops(data):
    out, _ = data
    train_x, train_y = _expr_crops(out / "Aff-Wild2", "Train_Set")
    val_x, val_y = _expr_crops(out / "Aff-Wild2", "Validation_Set")
    classes = np.unique(train_y)
    centroids = np.stack([train_x[train_y == c].mean(axis=0) for c in classes])
    predicted = classes[np.argmin(((val_x[:, None] - centroids[None]) ** 2).sum(-1), axis=1)]
    recall = [np.mean(predicted[val_y == c] == c) for c in classes if np.any(val_y == c)]
    assert np.mean(recall) > 2.0 / len(EXPR_CLASSES)  # twice chance for a nearest-centroid model


def test_same_seed_same_data_other_seed_other_data(data, tmp_path, capsys):
    out, manifest = data
    again = tmp_path / "again"
    again.mkdir()  # an existing empty folder is accepted
    assert sample.generate(again, seed=SEED, tracks=TRACKS, seconds=SECONDS) == manifest
    assert capsys.readouterr() == ("", "")  # silent without a progress callback
    texts = [p.relative_to(out) for p in sorted(out.rglob("*")) if p.suffix in (".txt", ".csv", ".json")]
    assert texts and all((out / p).read_bytes() == (again / p).read_bytes() for p in texts)
    for video in list(manifest["videos"].values())[:3]:
        first, second = decode_frames(out / video["path"]), decode_frames(again / video["path"])
        assert len(first) == len(second) and all(np.array_equal(a, b) for a, b in zip(first, second))
    messages: list[str] = []
    other = sample.generate(tmp_path / "other", seed=SEED + 1, tracks=TRACKS, seconds=SECONDS,
                            progress=messages.append)
    assert len(messages) > TRACKS and any("DVD" in m for m in messages)
    assert other["tracks"] != manifest["tracks"]

    def labels(root: Path) -> list[bytes]:
        return [p.read_bytes() for p in sorted(root.glob("Aff-Wild2/annotations/*/*/*.txt"))]

    assert labels(tmp_path / "other") != labels(again) == labels(out)


def test_refuses_non_empty_output_and_bad_sizes(tmp_path):
    out = tmp_path / "busy"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(DataError, match="busy"):
        sample.generate(out, tracks=TRACKS, seconds=SECONDS)
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    with pytest.raises(ValueError, match="tracks"):
        sample.generate(tmp_path / "few", tracks=sample.MIN_VIDEOS_PER_TASK - 1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["busy"]


def test_failed_run_leaves_no_partial_dataset(tmp_path, monkeypatch):
    calls = []

    def fail_on_second(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("killed")
        return real(*args, **kwargs)

    real = sample_render.encode_faces
    monkeypatch.setattr(sample_render, "encode_faces", fail_on_second)
    with pytest.raises(RuntimeError, match="killed"):
        sample.generate(tmp_path / "out", tracks=TRACKS, seconds=SECONDS)
    assert list(tmp_path.iterdir()) == []
