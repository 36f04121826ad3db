"""``abaw extract``: run the configured extractors over every track of the configured tasks.

One process by default; with ``--devices N --num-nodes M`` Lightning Fabric starts the
processes, each rank extracts every ``world_size``-th track into the shared cache, and rank 0
merges the manifests once all ranks are done.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from abaw.config import Config
from abaw.data import affwild2, load_tracks
from abaw.tasks import AFFWILD2_TASKS, VD, get_task
from features.extract import Job, Outcome, accounting_table, extract_audio, extract_visual
from features.specs import create_extractor
from features.store import FeatureStore

Log = Callable[[str], None]


def jobs_for(root: str | Path, dataset: str) -> list[Job]:
    """One job per track id of ``dataset`` (all tasks and splits; a track annotated for several
    Aff-Wild2 tasks is extracted once, with as many rows as its longest annotation)."""
    if dataset == "dvd":
        return [Job(t.id, int(t.frames.max()), t.video_path) for t in load_tracks(root, VD)]
    layout = affwild2.find_layout(root)
    rows: dict[str, int] = {}
    first = {}
    for task in AFFWILD2_TASKS:
        if layout.task_dir(task) is None and task.template_key not in layout.templates:
            continue
        for track in affwild2.load_tracks(layout, task):
            rows[track.id] = max(rows.get(track.id, 0), int(track.frames.max()))
            first.setdefault(track.id, track)
    jobs = []
    for track_id, count in sorted(rows.items()):
        track = first[track_id]
        frames = np.arange(1, count + 1)
        present = affwild2.crop_mask(track.crop_dir, frames) if track.crop_dir is not None else None
        jobs.append(Job(track_id, count, track.video_path, track.crop_dir, present))
    return jobs


def pick_device(accelerator: str) -> torch.device:
    """cuda when asked for or available under ``auto``, else cpu."""
    if accelerator in ("gpu", "cuda") or (accelerator == "auto" and torch.cuda.is_available()):
        return torch.device("cuda")
    return torch.device("cpu")


def extract_all(config: Config, log: Log, rank: int = 0, world: int = 1,
                device: torch.device | None = None) -> dict[str, tuple[FeatureStore, Outcome]]:
    """Extract every configured feature for this rank's share of the tracks."""
    device = device or pick_device(config.extract.accelerator)
    datasets = sorted({get_task(name).dataset for name in config.tasks})
    results = {}
    for dataset in datasets:
        jobs = jobs_for(config.data.root, dataset)[rank::world]
        for label, (name, overrides) in config.extract.extractors().items():
            extractor = create_extractor(name, **overrides).to(device)
            store = FeatureStore.for_spec(config.extract.cache, dataset, extractor.spec)
            log(f"[rank {rank}] {dataset} {label}: {len(jobs)} tracks -> {store.folder}")
            if extractor.spec.modality == "audio":
                outcome = extract_audio(extractor, jobs, store, log)
            else:
                outcome = extract_visual(extractor, jobs, store, log, device, config.extract.num_workers)
            log(f"[rank {rank}] {dataset} {label}: {len(outcome.written)} written, "
                f"{len(outcome.skipped)} already complete, {len(outcome.failed)} failed")
            results[f"{dataset}/{label}"] = (store, outcome)
    return results


def run_extract(config: Config, log: Log | None = None) -> int:
    """Run extraction (distributed when configured); 1 if any track failed."""
    log = log or (lambda message: print(message, file=sys.stderr, flush=True))
    if not config.extract.features:
        raise ValueError("no extractors configured (extract.features is empty)")
    extract = config.extract
    rank, world, device, fabric = 0, 1, None, None
    if extract.devices * extract.num_nodes > 1:
        from lightning.fabric import Fabric

        accelerator = "cpu" if pick_device(extract.accelerator).type == "cpu" else "cuda"
        fabric = Fabric(accelerator=accelerator, devices=extract.devices, num_nodes=extract.num_nodes,
                        strategy="ddp")
        fabric.launch()
        rank, world, device = fabric.global_rank, fabric.world_size, fabric.device
    results = extract_all(config, log, rank, world, device)
    failed = {key: outcome.failed for key, (_, outcome) in results.items()}
    if fabric is not None:
        gathered: list = [None] * world
        torch.distributed.all_gather_object(gathered, failed)
        failed = {key: {k: v for part in gathered for k, v in part[key].items()} for key in failed}
    if rank != 0:
        return 0
    for key, (store, _) in results.items():
        store.write_manifest()
        print(f"\n{key}: frame accounting ({store.folder})")
        print(accounting_table(store))
    errors = [(key, track, error) for key, tracks in failed.items() for track, error in tracks.items()]
    for key, track, error in errors:
        print(f"abaw: error: {key}: track {track} failed: {error}", file=sys.stderr)
    return 1 if errors else 0
