"""Training over the memory-mapped feature store: loader vs training step, and an Aff-Wild2-scale epoch.

(a) A synthetic store (``--tracks`` x ``--frames`` rows of 1024-d visual + 1024-d audio float16,
written with ``FeatureStore.write``) is read through ``WindowDataset`` windows (window 32,
stride 16, batch 16, shuffled: the default EXPR config) by a DataLoader; the same batches then
go through ``TaskModule`` (default ``fusion_moe``, hidden 128, 4 experts) forward + backward (+
AdamW step). Target: the loader >= 5x faster than the step.
(b) A store of ``--big-frames`` rows (default 1.5 M, ~6 GB float16) trained for one epoch (or
``--steps``, extrapolated) by ``lightning.Trainer`` in a child process, whose peak anonymous
memory shows the store is read by memory map, not loaded (the mapped pages it touches count in
RSS as page cache, reported apart). The big store is deleted at the end.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_training.py [--tracks 200 --frames 2000]
        [--big-frames 1500000] [--steps 0] [--skip-big] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
from machine import cpu_mark, load, others, status_kib  # noqa: E402  (benchmarks/, the script's folder)

from abaw.config import TrainConfig  # noqa: E402

DEFAULT = TrainConfig()  # the default EXPR head: model, window and batch size
DIM, WINDOW, BATCH = 1024, DEFAULT.window, DEFAULT.batch_size


def build_store(root: Path, tracks: int, frames: int, seed: int = 0) -> float:
    """Two streams (visual, audio) of ``tracks`` tracks x ``frames`` rows; returns bytes on disk."""
    from features.store import FeatureStore

    rng = np.random.default_rng(seed)
    # A few random blocks, rolled per track: realistic values without generating GBs of noise.
    pool = [rng.standard_normal((frames, DIM), dtype=np.float32).astype(np.float16) for _ in range(4)]
    for stream in ("visual", "audio"):
        store = FeatureStore(root / stream)
        store.folder.mkdir(parents=True, exist_ok=True)
        for i in range(tracks):
            valid = np.ones(frames, bool)
            valid[rng.integers(0, frames, frames // 20)] = False  # some rows without a face / audio
            store.write(f"track{i:04d}", np.roll(pool[i % 4], i, axis=0), valid)
    return sum(p.stat().st_size for p in root.rglob("*.npy"))


def open_data(root: Path, tracks: int, frames: int, seed: int = 0):
    """(tracks, streams) of the synthetic store, with EXPR-like labels (class 0..7, 5 % invalid)."""
    from abaw.data.records import Track
    from abaw.training.data import Stream
    from features.store import FeatureStore

    rng = np.random.default_rng(seed)
    streams = {s: Stream(s, FeatureStore(root / s), s, DIM) for s in ("visual", "audio")}
    records = []
    for i in range(tracks):
        labels = rng.integers(0, 8, (frames, 1)).astype(np.float32)
        valid = rng.random((frames, 1)) > 0.05
        records.append(Track(f"track{i:04d}", "expr", "train", f"track{i:04d}", None, root, np.arange(1, frames + 1),
                             labels, valid))
    return records, streams


def make_module(streams):
    from abaw.training.module import TaskModule

    return TaskModule("expr", {k: (s.modality, s.dim) for k, s in streams.items()}, dict(DEFAULT.model))


def loader_rate(dataset, batches: int) -> float:
    """Seconds per batch of a shuffled DataLoader (num_workers 0, the default config)."""
    import torch
    from torch.utils.data import DataLoader

    torch.manual_seed(0)
    it = iter(DataLoader(dataset, batch_size=BATCH, shuffle=True, num_workers=0))
    next(it)  # warm-up
    start = time.perf_counter()
    for _ in range(batches):
        next(it)
    return (time.perf_counter() - start) / batches


def loader_vs_step(root: Path, tracks: int, frames: int, batches: int) -> None:
    import torch
    from torch.utils.data import default_collate

    from abaw.training.train import training_windows

    mark = cpu_mark()
    records, streams = open_data(root, tracks, frames)
    dataset = training_windows(records, streams, WINDOW)
    t_load = loader_rate(dataset, batches)
    indices = np.random.default_rng(0).integers(0, len(dataset), batches * BATCH).tolist()
    items = [dataset[i] for i in indices]
    kept = [default_collate(items[i:i + BATCH]) for i in range(0, len(items), BATCH)]  # the step's batches
    torch.manual_seed(0)
    module = make_module(streams)
    module.train()
    optimizer = torch.optim.AdamW(module.parameters(), lr=1e-3, weight_decay=1e-2)
    module._loss(kept[0]).backward()  # warm-up
    optimizer.zero_grad()
    start = time.perf_counter()
    for batch in kept:
        module._loss(batch).backward()
        optimizer.zero_grad()
    t_fb = (time.perf_counter() - start) / batches
    start = time.perf_counter()
    for batch in kept:
        module._loss(batch).backward()
        optimizer.step()
        optimizer.zero_grad()
    t_step = (time.perf_counter() - start) / batches
    params = sum(p.numel() for p in module.parameters()) / 1e6
    print(f"  {len(dataset)} windows, {batches} batches of {BATCH} x {WINDOW} rows x 2 streams x {DIM}; "
          f"model {params:.2f} M params, torch threads {torch.get_num_threads()}; {2 * tracks} feature maps, "
          f"open-map cache {dataset._max_maps}")
    print(f"  loader (WindowDataset + DataLoader, num_workers 0): {t_load * 1e3:7.2f} ms/batch")
    print(f"  TaskModule forward + backward:                     {t_fb * 1e3:7.2f} ms/batch  "
          f"-> {t_fb / t_load:.1f}x the loader")
    print(f"  forward + backward + AdamW step:                   {t_step * 1e3:7.2f} ms/batch  "
          f"-> {t_step / t_load:.1f}x the loader (target >= 5x)   "
          f"({others(mark)})")


def status_mib(field: str) -> float:
    return status_kib(field) / 1024


class AnonPeak(threading.Thread):
    """Samples this process's anonymous RSS (its own allocations, not the page cache behind
    the memory-mapped store) every 0.2 s and keeps the peak."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = 0.0

    def run(self) -> None:
        while True:
            self.peak = max(self.peak, status_mib("RssAnon"))
            time.sleep(0.2)


def train_child(root: Path, tracks: int, frames: int, steps: int, loader_batches: int) -> None:
    """One epoch (or ``steps``) of the default EXPR model with lightning; prints a JSON record."""
    import lightning as L
    import torch
    from torch.utils.data import DataLoader

    from abaw.training.data import WindowDataModule, WindowDataset, stream_statistics
    from abaw.training.train import training_windows

    anon = AnonPeak()
    anon.start()
    records, streams = open_data(root, tracks, frames)
    L.seed_everything(0, verbose=False)
    train_set = training_windows(records, streams, WINDOW)
    val_set = WindowDataset(records[:1], streams, WINDOW)
    start = time.perf_counter()
    stats = stream_statistics(train_set, l2=True)
    t_stats = time.perf_counter() - start
    hwm_stats = status_mib("VmHWM")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM: the fit's own peak is read below
    it = iter(DataLoader(train_set, batch_size=BATCH, shuffle=True))
    next(it)  # warm-up
    start = time.perf_counter()
    for _ in range(loader_batches):
        next(it)
    t_load = (time.perf_counter() - start) / loader_batches
    del it
    module = make_module(streams)
    module.set_training_statistics(stats, None)
    total = (len(train_set) + BATCH - 1) // BATCH
    trainer = L.Trainer(max_epochs=1, max_steps=steps or -1, accelerator="cpu", devices=1, deterministic=True,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, limit_val_batches=0, num_sanity_val_steps=0)
    start = time.perf_counter()
    trainer.fit(module, WindowDataModule(train_set, val_set, BATCH, 0))
    seconds = time.perf_counter() - start
    print(json.dumps({"steps": trainer.global_step, "total_steps": total, "seconds": seconds, "stats_s": t_stats,
                      "load_ms": t_load * 1e3, "hwm_stats_mib": hwm_stats,
                      "hwm_fit_mib": status_mib("VmHWM"), "maxrss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                      "anon_mib": status_mib("RssAnon"), "file_mib": status_mib("RssFile"), "anon_peak_mib": anon.peak,
                      "threads": torch.get_num_threads(), "load": os.getloadavg()[0]}))


def big_epoch(args: argparse.Namespace) -> None:
    tracks = args.big_frames // args.frames
    need = tracks * args.frames * DIM * 2 * 2 * 1.05
    free = shutil.disk_usage(args.tmp or tempfile.gettempdir()).free
    print(f"\n(b) epoch over {tracks * args.frames:,} rows ({tracks} tracks x {args.frames}): needs "
          f"{need / 1e9:.1f} GB, {free / 1e9:.1f} GB free in {args.tmp or tempfile.gettempdir()}")
    if free < need * 1.5:
        print("  skipped: not enough free disk")
        return
    root = Path(tempfile.mkdtemp(prefix="bench_training_big-", dir=args.tmp))
    try:
        start = time.perf_counter()
        size = build_store(root, tracks, args.frames)
        print(f"  store written: {size / 2**30:.2f} GiB in {time.perf_counter() - start:.0f} s ({load()})", flush=True)
        command = [sys.executable, __file__, "--child", str(root), "--tracks", str(tracks), "--frames",
                   str(args.frames), "--steps", str(args.steps), "--batches", str(args.batches)]
        mark = cpu_mark()
        result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
        if result.returncode != 0:
            raise RuntimeError(f"training child failed:\n{result.stderr[-3000:]}")
        r = json.loads(result.stdout.strip().splitlines()[-1])
        per_step = r["seconds"] / r["steps"]
        epoch = per_step * r["total_steps"]
        how = "measured" if r["steps"] == r["total_steps"] else f"extrapolated from {r['steps']} steps"
        print(f"  stream statistics (train set-up, 200k sampled rows): {r['stats_s']:.1f} s")
        print(f"  loader alone on this store: {r['load_ms']:.2f} ms/batch")
        print(f"  lightning fit: {r['steps']} steps in {r['seconds']:.0f} s = {per_step * 1e3:.1f} ms/step; "
              f"epoch of {r['total_steps']} steps: {epoch:.0f} s = {epoch / 60:.1f} min ({how}); "
              f"torch threads {r['threads']} ({others(mark)})")
        peak = max(r["maxrss_mib"], r["hwm_stats_mib"], r["hwm_fit_mib"])  # clear_refs also resets ru_maxrss
        print(f"  peak anonymous memory (the process's own allocations, sampled every 0.2 s) "
              f"{r['anon_peak_mib'] / 1024:.2f} GiB vs store {size / 2**30:.2f} GiB "
              f"({r['anon_peak_mib'] * 2**20 / size:.0%}); at the end RssAnon {r['anon_mib']:.0f} MiB")
        print(f"  peak RSS including file-backed pages {peak / 1024:.2f} GiB ({r['hwm_stats_mib'] / 1024:.2f} GiB up "
              f"to the end of stream_statistics, {r['hwm_fit_mib'] / 1024:.2f} GiB during the fit); at the end "
              f"RssFile {r['file_mib']:.0f} MiB: store pages the memory maps touched, page cache the kernel "
              f"drops under memory pressure, not a copy of the store")
    finally:
        shutil.rmtree(root, ignore_errors=True)
        print(f"  big store deleted: {not root.exists()}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=200, help="(a) tracks in the store")
    parser.add_argument("--frames", type=int, default=2000, help="rows per track (a and b)")
    parser.add_argument("--batches", type=int, default=200, help="batches timed for loader and step")
    parser.add_argument("--big-frames", type=int, default=1_500_000, help="(b) rows in the Aff-Wild2-scale store")
    parser.add_argument("--steps", type=int, default=0, help="(b) training steps; 0 = the whole epoch")
    parser.add_argument("--skip-big", action="store_true", help="run (a) only")
    parser.add_argument("--tmp", default=None, help="folder for the synthetic stores (default: the temp dir)")
    parser.add_argument("--quick", action="store_true", help="smoke test: small stores, few steps")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        train_child(Path(args.child), args.tracks, args.frames, args.steps, args.batches)
        return 0
    if args.quick:
        args.tracks, args.frames, args.batches, args.big_frames, args.steps = 20, 500, 10, 20_000, 10
    print(f"training benchmarks, cpu, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M')}, {load()}")
    root = Path(tempfile.mkdtemp(prefix="bench_training-", dir=args.tmp))
    try:
        start = time.perf_counter()
        size = build_store(root, args.tracks, args.frames)
        print(f"(a) store: {args.tracks} tracks x {args.frames} rows, visual + audio {DIM}-d float16 = "
              f"{size / 2**30:.2f} GiB, written in {time.perf_counter() - start:.0f} s ({load()})", flush=True)
        loader_vs_step(root, args.tracks, args.frames, args.batches)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    if not args.skip_big:
        big_epoch(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
