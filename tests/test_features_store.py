import io
import json
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from features.specs import ExtractorSpec
from features.store import FeatureStore




@pytest.fixture
def store(tmp_path):
    return FeatureStore.for_spec(tmp_path, "affwild2", ExtractorSpec(name="toy"))


def test_write_read_roundtrip_is_float16_and_memory_mapped(store):
    features = np.arange(12, dtype=np.float32).reshape(4, 3) / 7
    valid = np.array([True, False, True, True])
    store.write("t1", features, valid, extra={"logits": np.ones((4, 8))}, accounting={"padded": 1})
    read = store.read("t1")
    assert isinstance(read, np.memmap) and read.dtype == np.float16
    assert np.allclose(read, features, atol=1e-3)
    assert store.read("t1", "valid").tolist() == valid.tolist()
    assert store.read("t1", "logits").shape == (4, 8)
    assert store.is_complete("t1", 4) and not store.is_complete("t1", 5)
    assert store.record("t1")["accounting"] == {"padded": 1}


def test_truncated_or_corrupted_file_is_not_complete(store):
    store.write("t1", np.ones((50, 4)), np.ones(50, bool))
    store.write("t2", np.ones((50, 4)), np.ones(50, bool))
    path = store.file("t1")
    path.write_bytes(path.read_bytes()[:-10])
    data = bytearray(store.file("t2", "valid").read_bytes())
    data[-1] ^= 1
    store.file("t2", "valid").write_bytes(bytes(data))
    assert not store.is_complete("t1") and not store.is_complete("t2")


def test_track_without_record_is_unfinished_and_no_temp_files_remain(store):
    np.save(store.file("t3"), np.ones((2, 2)))  # arrays written, record never written (killed)
    assert not store.is_complete("t3")
    store.write("t4", np.ones((3, 2)), np.ones(3, bool))
    assert not list(store.folder.glob("*.tmp"))
    assert store.tracks() == ["t4"]


def test_rows_must_agree(store):
    with pytest.raises(ValueError, match="array valid has 2 rows, features have 3"):
        store.write("t", np.ones((3, 2)), np.ones(2, bool))


def test_manifest_merges_records_and_spec(store):
    store.write("a", np.ones((3, 2)), np.ones(3, bool), accounting={"decoded_frames": 4})
    manifest = store.write_manifest()
    on_disk = json.loads((store.folder / "manifest.json").read_text())
    assert on_disk == manifest
    assert manifest["tracks"]["a"]["accounting"]["decoded_frames"] == 4
    assert manifest["spec"]["name"] == "toy" and "torch" in manifest["versions"]


def test_folder_is_named_by_fingerprint(tmp_path):
    a = FeatureStore.for_spec(tmp_path, "dvd", ExtractorSpec(name="toy"))
    b = FeatureStore.for_spec(tmp_path, "dvd", ExtractorSpec(name="toy", batch_size=1))
    c = FeatureStore.for_spec(tmp_path, "dvd", ExtractorSpec(name="toy", modality="audio"))
    assert a.folder == b.folder != c.folder
    assert a.folder.name.startswith("toy-")


def test_writer_rows_in_any_order_give_the_files_write_gives(store):
    rng = np.random.default_rng(0)
    valid = np.array([True, False, True, True, False, True, True])
    features = np.where(valid[:, None], rng.standard_normal((7, 3)), 0.0)  # rows never put stay zero
    logits = np.where(valid[:, None], rng.standard_normal((7, 2)), 0.0)
    store.write("whole", features, valid, extra={"logits": logits}, accounting={"rows": 7}, inputs={"video": "v"})
    writer = store.writer("rows", 7, {"features": (3,), "logits": (2,)})
    for rows in (np.array([6, 0, 5]), np.array([2, 3])):  # out of order, with gaps
        writer.put(rows, {"features": features[rows], "logits": logits[rows], "valid": True})
    assert store.record("rows") is None and not store.file("rows").exists()  # nothing final before commit
    writer.commit({"rows": 7}, {"video": "v"})
    whole, rows = store.record("whole"), store.record("rows")
    assert list(rows["files"].values()) == list(whole["files"].values())  # byte-identical files
    assert {k: rows[k] for k in ("frames", "dims", "valid_rows", "accounting", "inputs")} == \
        {k: whole[k] for k in ("frames", "dims", "valid_rows", "accounting", "inputs")}
    assert store.is_complete("rows", 7) and not list(store.folder.glob("*.tmp"))
    buffer = io.BytesIO()
    np.save(buffer, np.asarray(features, np.float16))  # the format and checksums of np.save's files
    assert store.file("rows").read_bytes() == buffer.getvalue()


def test_cleared_writer_commits_zero_rows(store):
    writer = store.writer("t", 4, {"features": (2,)})
    writer.put(np.arange(4), {"features": np.ones((4, 2)), "valid": True})
    writer.clear()
    writer.commit()
    assert not np.asarray(store.read("t")).any() and store.record("t")["valid_rows"] == 0


def test_killed_writer_leaves_no_track_and_the_next_one_removes_its_files(store):
    code = ("import os, signal, sys, numpy as np; from features.store import FeatureStore; "
            f"w = FeatureStore({str(store.folder)!r}).writer('t', 100, {{'features': (4,)}}); "
            "w.put(np.arange(50), {'features': np.ones((50, 4)), 'valid': True}); "
            "os.kill(os.getpid(), signal.SIGKILL)")
    root = Path(__file__).resolve().parents[1]
    assert subprocess.run([sys.executable, "-c", code], cwd=root).returncode == -signal.SIGKILL
    left = sorted(p.name for p in store.folder.iterdir() if p.name != "spec.json")
    assert len(left) == 2 and all(name.startswith((".t.npy.", ".t.valid.npy.")) and name.endswith(".tmp")
                                  for name in left)
    assert store.tracks() == [] and store.record("t") is None and not store.is_complete("t")
    store.write("t", np.ones((100, 4)), np.ones(100, bool))
    assert store.is_complete("t", 100) and not list(store.folder.glob(".*"))
