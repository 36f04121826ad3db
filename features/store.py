"""The feature store: one folder per extractor spec, one set of ``.npy`` files per track.

```
<cache>/<dataset>/<extractor>-<fingerprint>/
    spec.json             the spec whose fingerprint names the folder
    <track>.npy           (T, D) float16 features, T = the track's annotation (or template) rows
    <track>.valid.npy     (T,) bool: False for rows with no input (no face, no audio, padding)
    <track>.<name>.npy    further (T, K) arrays, e.g. ``logits``
    <track>.json          written last: T, dims, sha256 of every file, frame accounting, and
                          the inputs the rows were computed from (video, face source, rows)
    manifest.json         spec, library versions and every track's record, merged at the end
```
A track counts as finished only when its ``.json`` exists and every file it lists still has
the recorded checksum, so a run killed half-way, or a file truncated later, is recomputed on
the next run and nothing else is. A finished track whose recorded inputs differ from the
current ones (:meth:`FeatureStore.changed_inputs`) is stale: extraction redoes it, training
refuses it. Every file is written to a temporary name and moved into
place. Reads are memory-mapped.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from features.specs import ExtractorSpec

LIBRARIES = ("torch", "transformers", "timm", "librosa", "decord", "av", "numpy")


def library_versions() -> dict[str, str | None]:
    """Versions of the libraries that can change the numbers, for the manifest."""
    versions: dict[str, str | None] = {"python": platform.python_version()}
    for name in LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = None
    return versions


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _atomic_bytes(path: Path, write) -> None:
    with tempfile.NamedTemporaryFile("wb", dir=path.parent, prefix=f".{path.name}.", suffix=".tmp", delete=False) as f:
        write(f)
        f.flush()
        os.fsync(f.fileno())
    os.replace(f.name, path)


class FeatureStore:
    """Read and write the per-track arrays of one extractor spec (see the module docstring)."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    @classmethod
    def for_spec(cls, cache: str | Path, dataset: str, spec: ExtractorSpec, create: bool = True) -> FeatureStore:
        """The store of ``spec`` for ``dataset`` (a dataset key, see ``abaw.data.dataset_key``)
        under ``cache``; created with its spec.json unless ``create`` is False."""
        store = cls(Path(cache) / dataset / spec.cache_name)
        if not create:
            return store
        store.folder.mkdir(parents=True, exist_ok=True)
        spec_file = store.folder / "spec.json"
        if not spec_file.exists():
            text = json.dumps({"fingerprint": spec.fingerprint(), **spec.numeric_fields()}, indent=1, default=str)
            _atomic_bytes(spec_file, lambda f: f.write(text.encode()))
        return store

    def file(self, track_id: str, array: str = "features") -> Path:
        """Path of one array of a track (``features``, ``valid`` or an extra name)."""
        suffix = ".npy" if array == "features" else f".{array}.npy"
        return self.folder / f"{track_id}{suffix}"

    def record(self, track_id: str) -> dict[str, Any] | None:
        """The finished track's record (its ``.json``), or None."""
        try:
            return json.loads((self.folder / f"{track_id}.json").read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None

    def is_complete(self, track_id: str, num_frames: int | None = None) -> bool:
        """True if the track is finished: its record exists, T matches ``num_frames`` (when
        given) and every file still has the recorded checksum."""
        record = self.record(track_id)
        if record is None or (num_frames is not None and record["frames"] != num_frames):
            return False
        try:
            return all(_sha256(self.folder / name) == digest for name, digest in record["files"].items())
        except FileNotFoundError:
            return False

    def changed_inputs(self, track_id: str, inputs: dict[str, Any]) -> list[str]:
        """What differs between the inputs recorded for a track and ``inputs``, one
        ``key: recorded -> now`` line each; empty when they agree or the track has no record."""
        record = self.record(track_id)
        if record is None:
            return []
        recorded = record.get("inputs", {})
        return [f"{key}: {recorded.get(key)!r} -> {inputs.get(key)!r}"
                for key in sorted(set(recorded) | set(inputs)) if recorded.get(key) != inputs.get(key)]

    def write(
        self, track_id: str, features: np.ndarray, valid: np.ndarray,
        extra: dict[str, np.ndarray] | None = None, accounting: dict[str, Any] | None = None,
        inputs: dict[str, Any] | None = None,
    ) -> None:
        """Store one track: features (T, D) as float16, valid (T,), extra (T, K) arrays, the
        frame accounting and the ``inputs`` the rows come from (JSON values); the record is
        written last and marks the track finished."""
        frames = len(features)
        arrays = {"features": np.asarray(features, dtype=np.float16), "valid": np.asarray(valid, dtype=bool)}
        for name, array in (extra or {}).items():
            arrays[name] = np.asarray(array, dtype=np.float16)
        for name, array in arrays.items():
            if len(array) != frames:
                raise ValueError(f"{track_id}: array {name} has {len(array)} rows, features have {frames}")
        files = {}
        for name, array in arrays.items():
            path = self.file(track_id, name)
            _atomic_bytes(path, lambda f, a=array: np.save(f, a))
            files[path.name] = _sha256(path)
        record = {
            "track": track_id, "frames": frames, "dims": {k: int(np.prod(v.shape[1:])) for k, v in arrays.items()},
            "valid_rows": int(arrays["valid"].sum()), "files": files, "accounting": accounting or {},
            "inputs": inputs or {},
        }
        text = json.dumps(record, indent=1)
        _atomic_bytes(self.folder / f"{track_id}.json", lambda f: f.write(text.encode()))

    def read(self, track_id: str, array: str = "features", mmap: bool = True) -> np.ndarray:
        """An array of a finished track, memory-mapped (or read into memory: small arrays)."""
        return np.load(self.file(track_id, array), mmap_mode="r" if mmap else None)

    def tracks(self) -> list[str]:
        """Ids of the tracks with a record (finished, unless a file was damaged since)."""
        return sorted(p.stem for p in self.folder.glob("*.json") if p.name not in ("manifest.json", "spec.json"))

    def write_manifest(self) -> dict[str, Any]:
        """Merge every track's record into ``manifest.json`` (after all writers finished)."""
        spec = json.loads((self.folder / "spec.json").read_text())
        manifest = {"spec": spec, "versions": library_versions(),
                    "tracks": {track: self.record(track) for track in self.tracks()}}
        text = json.dumps(manifest, indent=1)
        _atomic_bytes(self.folder / "manifest.json", lambda f: f.write(text.encode()))
        return manifest
