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
refuses it. Every file is written to a temporary name (``.<name>.<random>.tmp``, which no
reader takes for a track's file) and moved into place. Extraction fills a track's files row by
row as rows are computed (:class:`TrackWriter`), so a long track is never held in memory; a
whole track in memory goes through :meth:`FeatureStore.write`, with the same guarantees. Reads
are memory-mapped.
"""

from __future__ import annotations

import glob
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
        inputs: dict[str, Any] | None = None, dtype: type = np.float16,
    ) -> None:
        """Store one track: features (T, D) as ``dtype`` (float16: embeddings; float32 for
        pixel coordinates, which float16 rounds to 2 px past 2048), valid (T,), extra (T, K)
        arrays, the frame accounting and the ``inputs`` the rows come from (JSON values); the
        record is written last and marks the track finished."""
        frames = len(features)
        arrays = {"features": features, "valid": valid, **(extra or {})}
        for name, array in arrays.items():
            if len(array) != frames:
                raise ValueError(f"{track_id}: array {name} has {len(array)} rows, features have {frames}")
        writer = self.writer(track_id, frames, {name: np.shape(a)[1:] for name, a in arrays.items() if name != "valid"},
                             dtype)
        try:
            writer.put(np.arange(frames), arrays)
            writer.commit(accounting, inputs)
        finally:
            writer.discard()

    def writer(self, track_id: str, frames: int, shapes: dict[str, tuple[int, ...]],
               dtype: type = np.float16) -> TrackWriter:
        """An incremental writer of one track of ``frames`` rows: ``dtype`` arrays of per-row
        ``shapes`` (``features`` among them) and the valid mask, rows put as they come."""
        return TrackWriter(self, track_id, frames, shapes, dtype)

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


class TrackWriter:
    """One track's arrays filled row by row in temporary files of the store folder, then
    finished as :meth:`FeatureStore.write` finishes a track: each file fsynced, renamed into
    place and checksummed, the record written last.

    Rows are written with ``pwrite``, not through a memory map, so they go to the page cache
    without staying in the process's resident memory: a long track costs no more memory than a
    short one. Rows never put stay zero (and invalid). Temporary files are named
    ``.<final name>.<random>.tmp``, which no reader takes for a track's file; opening a writer
    removes those a killed run left for the same track. One process per track (the
    extraction's ranks split the tracks).
    """

    def __init__(self, store: FeatureStore, track_id: str, frames: int, shapes: dict[str, tuple[int, ...]],
                 dtype: type = np.float16) -> None:
        if "features" not in shapes:
            raise ValueError(f"{track_id}: a track needs a features array")
        self.store, self.track_id, self.frames = store, track_id, frames
        # The record lists files in this order, as FeatureStore.write always has.
        layout = {"features": (np.dtype(dtype), tuple(shapes["features"])), "valid": (np.dtype(bool), ())}
        layout.update((name, (np.dtype(dtype), tuple(shape))) for name, shape in shapes.items())
        _remove_stale(store.folder / f"{track_id}.json")
        self._files: dict[str, _TempArray] = {}
        try:
            for name, (dtype, shape) in layout.items():
                self._files[name] = _TempArray(store.file(track_id, name), dtype, (frames, *shape))
        except OSError:
            self.discard()
            raise

    def put(self, rows: np.ndarray, arrays: dict[str, np.ndarray | bool]) -> None:
        """Write ``arrays[name][i]`` at row ``rows[i]`` for each named array (a scalar fills
        every row given, e.g. ``{"valid": True}``); rows in any order."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if not len(rows):
            return
        if rows.min() < 0 or rows.max() >= self.frames:
            raise IndexError(f"{self.track_id}: rows outside 0..{self.frames - 1}")
        order = np.argsort(rows, kind="stable") if np.any(np.diff(rows) < 0) else None
        if order is not None:
            rows = rows[order]
        # One pwrite per run of consecutive rows.
        breaks = np.flatnonzero(np.diff(rows) != 1) + 1
        runs = list(zip(np.r_[0, breaks].tolist(), np.r_[breaks, len(rows)].tolist()))
        for name, values in arrays.items():
            target = self._files[name]
            values = np.broadcast_to(np.asarray(values, dtype=target.dtype), (len(rows), *target.shape[1:]))
            if order is not None:
                values = values[order]
            for start, end in runs:
                target.write(int(rows[start]), values[start:end])

    def commit(self, accounting: dict[str, Any] | None = None, inputs: dict[str, Any] | None = None) -> None:
        """Finish the track: every file synced, moved into place and checksummed, then its
        record (with the frame ``accounting`` and ``inputs``), which marks it finished."""
        valid_rows = int(self._files["valid"].read().sum())
        files, dims = {}, {}
        for name in list(self._files):
            array = self._files.pop(name)
            dims[name] = int(np.prod(array.shape[1:]))
            final = array.finish()
            files[final.name] = _sha256(final)
        record = {
            "track": self.track_id, "frames": self.frames, "dims": dims, "valid_rows": valid_rows, "files": files,
            "accounting": accounting or {}, "inputs": inputs or {},
        }
        text = json.dumps(record, indent=1)
        _atomic_bytes(self.store.folder / f"{self.track_id}.json", lambda f: f.write(text.encode()))

    def clear(self) -> None:
        """Set every row back to zero (and invalid), as if none had been put."""
        for array in self._files.values():
            array.clear()

    def discard(self) -> None:
        """Remove the temporary files of an unfinished track (nothing after :meth:`commit`)."""
        while self._files:
            self._files.popitem()[1].remove()


class _TempArray:
    """An ``.npy`` file being filled in place: the header np.save writes, zeros until written."""

    def __init__(self, final: Path, dtype: np.dtype, shape: tuple[int, ...]) -> None:
        _remove_stale(final)
        self.final, self.dtype, self.shape = final, dtype, shape
        self.fd, name = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=".tmp")
        self.path = Path(name)
        with os.fdopen(os.dup(self.fd), "wb") as f:
            np.lib.format.write_array_header_1_0(
                f, {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False, "shape": shape})
            self.offset = f.tell()
            self.row_bytes = int(np.prod(shape[1:], dtype=np.int64)) * dtype.itemsize
            f.truncate(self.offset + shape[0] * self.row_bytes)  # sparse: unwritten rows read as zeros

    def write(self, row: int, values: np.ndarray) -> None:
        """Write consecutive rows starting at ``row``."""
        data = memoryview(np.ascontiguousarray(values)).cast("B")
        position = self.offset + row * self.row_bytes
        while len(data):  # a single pwrite may write less (2 GiB cap, signals)
            written = os.pwrite(self.fd, data, position)
            data, position = data[written:], position + written

    def clear(self) -> None:
        """Every row back to zeros: cut the file to its header and extend it again (sparse)."""
        os.ftruncate(self.fd, self.offset)
        os.ftruncate(self.fd, self.offset + self.shape[0] * self.row_bytes)

    def read(self) -> np.ndarray:
        return np.fromfile(self.path, dtype=self.dtype, offset=self.offset).reshape(self.shape)

    def finish(self) -> Path:
        """fsync, close and move into place; returns the final path."""
        os.fsync(self.fd)
        os.close(self.fd)
        os.replace(self.path, self.final)
        return self.final

    def remove(self) -> None:
        os.close(self.fd)
        self.path.unlink(missing_ok=True)


def _remove_stale(final: Path) -> None:
    """Delete the temporary files a killed writer left for ``final`` (see :func:`_atomic_bytes`)."""
    for stale in final.parent.glob(f"{glob.escape('.' + final.name)}.*.tmp"):
        stale.unlink(missing_ok=True)
