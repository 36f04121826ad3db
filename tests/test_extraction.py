"""abaw extract on the generated sample dataset: rows, masks, resume after a kill, failures,
and a 2-process Lightning Fabric run against a 1-process one."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from abaw.cli import main
from abaw.extraction import jobs_for
from features.extract import VideoFrames
from tests.conftest import EXTRACT_FEATURES as FEATURES
from tests.conftest import clip, config_of, store_of
from tests.conftest import write_extract_config as write_config

def run_cli(*args: str, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.run([sys.executable, "-m", "abaw", *args], env=env, capture_output=True, text=True,
                          timeout=600, **kwargs)


def test_rows_follow_the_annotation_and_masks_follow_the_media(sample_root, extracted):
    manifest = json.loads((sample_root / "sample_manifest.json").read_text())
    audio_of = {Path(v["path"]).stem: v["audio"] for v in manifest["videos"].values()}
    for dataset in ("affwild2", "dvd"):
        face, voice = store_of(sample_root, extracted, dataset, "face"), store_of(sample_root, extracted, dataset, "voice")
        assert (face.folder / "manifest.json").exists()
        for job in jobs_for(config_of(sample_root, extracted), dataset):
            features, valid = face.read(job.id), face.read(job.id, "valid")
            assert features.shape == (job.frames, 1280) and features.dtype == np.float16
            record = face.record(job.id)["accounting"]
            if job.present is not None:
                assert valid.tolist() == job.present.tolist()
                assert not np.asarray(features[~job.present]).any()  # no face: zero rows
            else:  # DVD: decoded frames, padded with invalid rows past the last one
                assert valid.sum() == min(job.frames, record["decoded_frames"])
            audio = audio_of[job.video.stem]
            voice_valid = np.asarray(voice.read(job.id, "valid"))
            assert voice.record(job.id)["accounting"]["audio"] == audio
            assert voice_valid.any() == (audio == "sound"), job.id
            assert record["annotation_rows"] == job.frames
            assert record["rows_padded"] == max(0, job.frames - record["decoded_frames"])


def test_variable_frame_rate_track_is_flagged(sample_root, extracted):
    manifest = json.loads((sample_root / "sample_manifest.json").read_text())
    vfr = {Path(v["path"]).stem for v in manifest["videos"].values() if v["dataset"] == "affwild2" and v["fps"] is None}
    store = store_of(sample_root, extracted, "affwild2", "face")
    flagged = {store.record(t)["accounting"]["variable_frame_rate"] for t in store.tracks() if t.startswith(tuple(vfr))}
    others = {store.record(t)["accounting"]["variable_frame_rate"] for t in store.tracks() if not t.startswith(tuple(vfr))}
    assert vfr and flagged == {True} and others == {False}


def test_killed_run_resumes_with_only_the_unfinished_tracks(sample_root, tmp_path):
    features = {"face": {**FEATURES["face"], "input_size": 112, "scales": [0.9, 1.2, 1.5]}}
    cache = tmp_path / "cache"
    config = write_config(tmp_path, sample_root, cache, features, tasks=("expr",))
    store = store_of(sample_root, cache, "affwild2", "face", features)
    process = subprocess.Popen([sys.executable, "-m", "abaw", "extract", "--config", str(config)],
                               env={**os.environ, "HF_HUB_OFFLINE": "1"}, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and (not store.folder.exists() or len(store.tracks()) < 2):
        time.sleep(0.05)
    process.send_signal(signal.SIGKILL)
    process.wait()
    total = len(jobs_for(config_of(sample_root, cache), "affwild2"))
    finished = {t: (store.folder / f"{t}.json").stat().st_mtime_ns for t in store.tracks()}
    assert 2 <= len(finished) < total, "the run must be killed half-way for this test to mean anything"
    # Rows go to temporary files while a track is extracted: the killed track's next writer
    # removes those the kill left.
    assert main(["extract", "--config", str(config)]) == 0
    assert len(store.tracks()) == total and not list(store.folder.glob(".*.tmp"))
    for track, mtime in finished.items():
        assert (store.folder / f"{track}.json").stat().st_mtime_ns == mtime, f"{track} was recomputed"
    assert all(store.is_complete(t) for t in store.tracks())


def test_corrupted_file_is_recomputed(sample_root, tmp_path, extracted):
    cache = tmp_path / "cache"
    shutil.copytree(extracted, cache)
    store = store_of(sample_root, cache, "dvd", "voice")
    damaged, intact = store.tracks()[:2]
    path = store.file(damaged)
    path.write_bytes(path.read_bytes()[:-64])
    intact_mtime = (store.folder / f"{intact}.json").stat().st_mtime_ns
    assert main(["extract", "--config", str(write_config(tmp_path, sample_root, cache, tasks=("vd",)))]) == 0
    assert store.is_complete(damaged) and store.read(damaged).shape[0] == store.record(damaged)["frames"]
    assert (store.folder / f"{intact}.json").stat().st_mtime_ns == intact_mtime


def test_failing_track_is_reported_and_the_others_finish(sample_root, tmp_path, capsys):
    root = tmp_path / "data"
    shutil.copytree(sample_root / "DVD", root / "DVD")
    broken = sorted((root / "DVD" / "Training" / "videos").glob("*.mp4"))[0]
    broken.write_bytes(b"not a video")
    cache = tmp_path / "cache"
    assert main(["extract", "--config", str(write_config(tmp_path, root, cache, tasks=("vd",)))]) == 1
    err = capsys.readouterr().err
    assert f"track {broken.stem} failed" in err and str(broken) in err
    store = store_of(root, cache, "dvd", "face")
    assert broken.stem not in store.tracks()
    assert len(store.tracks()) == len(jobs_for(config_of(root, cache), "dvd")) - 1


def test_two_fabric_processes_write_the_same_cache_as_one(sample_root, tmp_path, extracted):
    cache = tmp_path / "cache"
    result = run_cli("extract", "--config", str(write_config(tmp_path, sample_root, cache)), "--devices", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[rank 1]" in result.stderr
    for dataset in ("affwild2", "dvd"):
        for label in FEATURES:
            one, two = store_of(sample_root, extracted, dataset, label), store_of(sample_root, cache, dataset, label)
            assert one.folder.name == two.folder.name and one.tracks() == two.tracks()
            for track in one.tracks():
                assert np.array_equal(one.read(track, "valid"), two.read(track, "valid")), (dataset, label, track)
                a, b = (np.asarray(s.read(track), dtype=np.float32) for s in (one, two))
                if label == "voice":
                    assert np.array_equal(a, b), (dataset, label, track)
                else:
                    # Same batches, but each rank has fewer intra-op threads, so convolution sums
                    # may round differently: equal up to a float16 step.
                    assert np.allclose(a, b, rtol=1e-3, atol=2e-3), (dataset, label, track)
            assert json.loads((two.folder / "manifest.json").read_text())["tracks"].keys() == set(one.tracks())


def test_video_frames_read_in_batches_equal_one_pass():
    """The extraction's decord reader releases decord's queues after each batch (they keep every
    decoded frame alive otherwise); the next batch must still start at the right frame, across
    keyframes (this clip has one every 72 frames) and from a seek back to the start."""
    import decord

    path = clip("WolfgangLanger_Pexels.mp4")
    whole = decord.VideoReader(str(path), ctx=decord.cpu(0)).get_batch(list(range(472))).asnumpy()
    frames = VideoFrames()
    batches = [frames(path, np.arange(i, min(i + 32, 472))) for i in range(0, 472, 32)]
    np.testing.assert_array_equal(np.concatenate(batches), whole)
    np.testing.assert_array_equal(frames(path, np.array([100, 101, 300])), whole[[100, 101, 300]])


def test_ranks_started_by_torchrun_share_the_tracks_and_write_what_one_process_does(sample_root, tmp_path, extracted):
    """torchrun starts every rank with extract.devices left at 1: the ranks split the tracks
    (Fabric on the launcher's world) rather than each extracting everything into one cache."""
    features = {"voice": FEATURES["voice"]}
    cache = tmp_path / "cache"
    env = {k: v for k, v in os.environ.items() if k not in ("LOCAL_RANK", "NODE_RANK", "RANK", "WORLD_SIZE")}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
                             "-m", "abaw", "extract", "--config", str(write_config(tmp_path, sample_root, cache,
                                                                                   features))],
                            env={**env, "HF_HUB_OFFLINE": "1"}, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "[rank 1]" in result.stderr and result.stdout.count("frame accounting") == 2  # rank 0 reports, once
    for dataset in ("affwild2", "dvd"):
        one, two = store_of(sample_root, extracted, dataset, "voice"), store_of(sample_root, cache, dataset, "voice")
        assert one.tracks() == two.tracks()
        for track in one.tracks():
            assert np.array_equal(one.read(track), two.read(track)), (dataset, track)
