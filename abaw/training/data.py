"""Training data over the feature store: windows of consecutive rows of one track, every
configured stream read from its memory-mapped cache, with labels and masks.

The store is never loaded whole: each window reads its rows from ``np.load(mmap_mode="r")``
maps, so a corpus far larger than RAM trains with a flat memory profile.
"""

from __future__ import annotations

import hashlib
import resource
from collections import OrderedDict
from dataclasses import dataclass

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from abaw.config import Config
from abaw.data.records import DataError, Track
from features.store import FeatureStore


@dataclass(frozen=True)
class Stream:
    """One feature stream of a model: its cache, modality and width."""

    label: str
    store: FeatureStore
    modality: str
    dim: int


def open_streams(config: Config, dataset: str, labels: list[str]) -> dict[str, Stream]:
    """The configured feature streams ``labels`` (keys of ``extract.features``) of ``dataset``
    at ``config.data.root``.

    Raises:
        ValueError: a label is not configured for extraction.
        DataError: its cache folder holds no finished track (run ``abaw extract`` first).
    """
    from abaw.extraction import feature_spec, feature_store

    features = config.extract.features
    streams = {}
    for label in labels:
        if label not in features:
            raise ValueError(f"feature {label!r} is not in extract.features ({', '.join(features) or 'empty'})")
        if not config.extract.extracts(label, dataset):
            raise ValueError(f"feature {label!r} is extracted for {', '.join(features[label]['datasets'])} only, "
                             f"not {dataset} (extract.features.{label}.datasets)")
        spec = feature_spec(config, label)
        store = feature_store(config, dataset, label, spec)
        tracks = store.tracks() if store.folder.is_dir() else []
        if not tracks:
            raise DataError(store.folder, f"no extracted tracks for feature {label!r} of {config.data.root}; "
                                          "run abaw extract first")
        streams[label] = Stream(label, store, spec.modality, int(store.record(tracks[0])["dims"]["features"]))
    return streams


def head_features(config: Config) -> list[str]:
    """The ``extract.features`` labels a head reads: ``train.features``, and the fallback MLP's
    stream in case it is not among them. Other configured extractors change nothing a head
    computes."""
    labels = list(config.train.features)
    stream = (config.train.fallback or {}).get("stream")
    return labels + ([stream] if stream is not None and stream not in labels else [])


def features_digest(streams: dict[str, Stream], tracks: list[Track]) -> str:
    """16 hex digits naming the cached arrays ``tracks`` read from ``streams``: their
    checksums as each track's record lists them. Extracting a track again with other numbers
    (its video or crops changed, then ``abaw extract``) changes it; extracting it again with
    the same numbers does not."""
    digest = hashlib.sha256()
    for label in sorted(streams):
        store = streams[label].store
        for track_id in sorted({t.id for t in tracks}):
            record = store.record(track_id)
            digest.update(repr((label, store.folder.name, track_id, record and record["files"])).encode())
    return digest.hexdigest()[:16]


def check_fresh(config: Config, dataset: str, streams: dict[str, Stream], tracks: list[Track]) -> None:
    """Refuse to read features that are missing, shorter than a track's rows, or were computed
    from other inputs than the dataset holds now (crops added, another video, an annotation of
    another length): the message lists them and says how to extract them again.

    Raises:
        DataError: naming the first cache folder and listing up to 10 tracks.
    """
    from abaw.extraction import stale_tracks

    stale = stale_tracks(config, dataset, streams, tracks)
    if stale:
        shown = "\n  ".join(stale[:10]) + (f"\n  ... and {len(stale) - 10} more" if len(stale) > 10 else "")
        raise DataError(next(iter(streams.values())).store.folder,
                        f"{len(stale)} cached track(s) do not match the dataset:\n  {shown}\n"
                        "extract them (again) with abaw extract --config <this config>, or abaw run")


def _open_map_limit() -> int:
    """How many tracks' feature maps a dataset keeps open. Each map holds a file descriptor:
    half the process's soft limit (1024 on many systems), at most 4096. Re-opening a map costs
    ~0.1 ms, so a cache smaller than the training set's tracks makes the loader the bottleneck
    (benchmarks/bench_training.py)."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return 4096 if soft == resource.RLIM_INFINITY else max(64, min(4096, soft // 2))


def prediction_windows(rows: int, window: int, context: int, offset: int = 0) -> list[tuple[int, int, int]]:
    """Overlapping windows that predict every row of a track of ``rows`` rows with at least
    ``context`` real rows on each side of it (or the true track edge), whatever ``offset``
    shifts the windows by: ``(start, keep_from, keep_to)`` per window, the window covering rows
    ``[start, start + window)`` and contributing its rows ``[keep_from, keep_to)``; the kept
    ranges tile ``[0, rows)`` in order. A model that sees at most ``context`` rows to each side
    of a row (its receptive field) then predicts the same for that row from any of these
    windows as from the whole track. Windows never reach past the track, except the one window
    of a track shorter than ``window``. Needs ``window > 2 * context`` and ``0 <= offset``.
    """
    if window <= 2 * context:
        raise ValueError(f"window {window} must exceed twice the context {context}")
    if rows <= window:
        return [(0, 0, rows)]
    step = window - 2 * context
    cuts = [0, *range(context + offset % step, rows, step)]
    cuts = sorted(set(c for c in cuts if c < rows)) + [rows]
    windows: list[tuple[int, int, int]] = []
    for a, b in zip(cuts, cuts[1:]):
        start = min(max(a - context, 0), rows - window)
        if windows and windows[-1][0] == start:  # the same window already: it keeps both blocks
            windows[-1] = (start, windows[-1][1], b)
        else:
            windows.append((start, a, b))
    return windows


class WindowDataset(Dataset):
    """Windows of ``window`` consecutive rows of a track (the last one padded).

    Each item: ``streams`` label -> (W, D) float16, ``present`` label -> (W,) bool,
    ``labels`` (W, C) float32, ``valid`` (W, C) bool (False on padding), ``track`` index and
    ``rows`` (W,) int64 (-1 on padding).
    """

    def __init__(self, tracks: list[Track], streams: dict[str, Stream], window: int, stride: int | None = None,
                 starts: list[tuple[int, int]] | None = None) -> None:
        self.tracks, self.streams, self.window = tracks, streams, window
        stride = stride or window
        # (track index, first row) of every window; given explicitly for prediction windows.
        self.items = starts if starts is not None else [
            (i, start) for i, t in enumerate(tracks) for start in range(0, t.num_frames, stride)]
        self._maps: OrderedDict = OrderedDict()  # (stream, track) -> memory-mapped features, LRU
        self._max_maps = _open_map_limit()
        self._present: dict = {}  # (stream, track) -> valid mask, in memory (1 byte per row)
        for stream in streams.values():
            missing = [t.id for t in tracks if stream.store.record(t.id) is None]
            if missing:
                raise DataError(stream.store.folder, f"{len(missing)} track(s) not extracted for {stream.label!r}, "
                                                     f"e.g. {missing[0]}; run abaw extract first")

    def __len__(self) -> int:
        return len(self.items)

    def rows_of(self, track: Track) -> int:
        """The rows of ``track`` this dataset reads: its annotation rows."""
        return track.num_frames

    def _features(self, stream: Stream, track_id: str) -> np.ndarray:
        key = (stream.label, track_id)
        if key in self._maps:
            self._maps.move_to_end(key)
        else:
            if len(self._maps) >= self._max_maps:
                self._maps.popitem(last=False)
            self._maps[key] = stream.store.read(track_id)
        return self._maps[key]

    def _valid(self, stream: Stream, track_id: str) -> np.ndarray:
        key = (stream.label, track_id)
        if key not in self._present:
            self._present[key] = stream.store.read(track_id, "valid", mmap=False)
        return self._present[key]

    def __getitem__(self, index: int) -> dict:
        track_index, start = self.items[index]
        track = self.tracks[track_index]
        stop = min(start + self.window, track.num_frames)
        n = stop - start
        item = {"streams": {}, "present": {}}
        for label, stream in self.streams.items():
            # float16 as stored: a plain copy (numpy's float16 -> float32 cast costs ~14x more);
            # the module casts whole batches on its device.
            values = np.zeros((self.window, stream.dim), dtype=np.float16)
            values[:n] = self._features(stream, track.id)[start:stop]
            present = np.zeros(self.window, dtype=bool)
            present[:n] = self._valid(stream, track.id)[start:stop]
            item["streams"][label], item["present"][label] = torch.from_numpy(values), torch.from_numpy(present)
        columns = track.labels.shape[1]
        labels = np.zeros((self.window, columns), dtype=np.float32)
        valid = np.zeros((self.window, columns), dtype=bool)
        labels[:n], valid[:n] = track.labels[start:stop], track.valid[start:stop]
        rows = np.full(self.window, -1, dtype=np.int64)
        rows[:n] = np.arange(start, stop)
        item.update(labels=torch.from_numpy(labels), valid=torch.from_numpy(valid), track=track_index,
                    rows=torch.from_numpy(rows))
        return item


def stream_statistics(dataset: WindowDataset, l2: bool, max_rows: int = 200_000, seed: int = 0) -> dict:
    """Mean and std of each stream over present rows of ``dataset``'s tracks (after the L2 step
    if ``l2``), from at most ``max_rows`` rows sampled evenly. Sums are accumulated track by
    track, so memory stays at one track's rows whatever the store's size."""
    rng = np.random.default_rng(seed)
    total = sum(dataset.rows_of(t) for t in dataset.tracks)
    keep = min(1.0, max_rows / max(total, 1))
    stats = {}
    for label, stream in dataset.streams.items():
        count, sums, squares = 0, np.zeros(stream.dim), np.zeros(stream.dim)
        for track in dataset.tracks:
            present = np.flatnonzero(dataset._valid(stream, track.id)[: dataset.rows_of(track)])
            if keep < 1.0:
                present = present[rng.random(len(present)) < keep]
            if not len(present):
                continue
            rows = np.asarray(stream.store.read(track.id)[present], dtype=np.float64)
            if l2:
                rows /= np.maximum(np.linalg.norm(rows, axis=1, keepdims=True), 1e-6)
            count, sums, squares = count + len(rows), sums + rows.sum(axis=0), squares + np.square(rows).sum(axis=0)
        mean = sums / max(count, 1)
        std = np.sqrt(np.maximum(squares / max(count, 1) - np.square(mean), 0.0))
        stats[label] = {"mean": mean.tolist(), "std": std.tolist()}
    return stats


class WindowDataModule(L.LightningDataModule):
    """Train windows (shuffled, overlapping by half) and validation windows (each row once).

    A dataset with a ``collate`` method batches its own items (the video-level datasets pad
    videos of different lengths); the others use the default collation."""

    def __init__(self, train: WindowDataset, val: WindowDataset, batch_size: int, num_workers: int = 0) -> None:
        super().__init__()
        self.train_set, self.val_set = train, val
        self.batch_size, self.num_workers = batch_size, num_workers

    def _loader(self, dataset: WindowDataset, shuffle: bool) -> DataLoader:
        return DataLoader(dataset, batch_size=self.batch_size, shuffle=shuffle, num_workers=self.num_workers,
                          persistent_workers=self.num_workers > 0, collate_fn=getattr(dataset, "collate", None))

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)
