import json

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
