"""``abaw extract``: run the configured extractors over every track of the configured tasks.

One process by default; with ``--devices N --num-nodes M`` Lightning Fabric starts the
processes, each rank extracts every ``world_size``-th track into the shared cache, and rank 0
merges the manifests once all ranks are done.
"""

from __future__ import annotations

import hashlib
import os
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from abaw.config import Config, ConfigError, extractor_entry
from abaw.data import VIDEO_READERS, affwild2, dataset_folder, dataset_key, load_tracks, resolve_tasks
from abaw.data.records import Problem
from abaw.faces import FaceFinder, FaceTrack, face_store, faces_hash, fill_face_store, read_faces
from abaw.inspection import uncropped_warnings
from abaw.runtime import Log, pick_device, stderr_log
from abaw.tasks import AFFWILD2_TASKS, VD, dataset_tasks
from features.extract import (FACE_SOURCES, Job, Outcome, accounting_table, audio_states, extract_audio,
                              extract_text, extract_visual)
from features.faces import DetectorSpec
from features.media import MediaError, frame_index
from features.specs import create_extractor, make_spec
from features.tracking import TrackerSpec, read_overrides
from features.store import FeatureStore



def stale_tracks(config: Config, dataset: str, streams: dict, tracks: list) -> list[str]:
    """One line per track of ``tracks`` whose cached rows in any of ``streams`` (label ->
    ``abaw.training.data.Stream``) are missing, fewer than its rows, or computed from other
    inputs than the current ones."""
    lines, jobs_by_source = [], {}
    for label, stream in streams.items():
        store = stream.store
        source = face_source(config, dataset, label) if stream.modality == "visual" else None
        if source not in jobs_by_source:
            jobs_by_source[source] = {job.id: job for job in jobs_for(config, dataset, faces=source)}
        jobs = jobs_by_source[source]
        for track in tracks:
            record, job = store.record(track.id), jobs.get(track.id)
            if record is None:
                lines.append(f"{label} {track.id}: not extracted")
            elif record["frames"] < track.num_frames:
                lines.append(f"{label} {track.id}: {record['frames']} cached rows, {track.num_frames} in {track.source}")
            elif job is not None and (changed := store.changed_inputs(track.id, job.inputs_for(stream.modality))):
                lines.append(f"{label} {track.id}: inputs changed since extraction ({'; '.join(changed)})")
    return lines


def jobs_for(config: Config, dataset: str, problems: list[Problem] | None = None,
             faces: str | None = None) -> list[Job]:
    """One job per track id of ``dataset`` at ``config.data.root`` (all tasks and splits; a
    track annotated for several Aff-Wild2 tasks is extracted once, with as many rows as its
    longest annotation).

    The face source is ``faces``, by default ``extract.faces`` of the dataset (``crops``,
    ``detected``, ``frame`` or ``none``). With ``crops`` a track without a crop folder gets
    ``none`` (every row face-absent), with a warning appended to ``problems``; with
    ``detected`` the rows and boxes are those of the faces stream (:func:`fill_faces`), and a
    track not in it yet has no face rows, and inputs that say so.
    """
    root, faces = config.data.root, faces or face_source(config, dataset)
    if dataset == "dvd" and faces == "crops":
        raise ConfigError("extract.faces.dvd=crops: DVD ships no face crops; use frame (whole scenes) or none")
    if dataset in VIDEO_READERS and faces == "crops":
        raise ConfigError(f"extract.faces.{dataset}=crops: abaw reads no {dataset.upper()} face crops; use detected "
                          "(faces found in the raw video), frame or none")
    folder = dataset_folder(root, dataset)
    found = faces_of_tracks(config, dataset) if faces == "detected" else None
    if dataset == "dvd":
        return [_job(folder, t.id, int(t.frames.max()), t.video_path, None, faces, found)
                for t in load_tracks(root, VD)]
    jobs = [_job(folder, track_id, rows, track.video_path, track.crop_dir, faces, found, _transcript_input(track))
            for track_id, (rows, track) in sorted(dataset_tracks(config, dataset).items())]
    if problems is not None and faces == "crops":
        problems.extend(uncropped_warnings(affwild2.find_layout(root), {job.id for job in jobs if job.faces == "none"},
                                           {"crops"}))
    return jobs


def dataset_tracks(config: Config, dataset: str) -> dict[str, tuple[int, object]]:
    """track id -> (rows, record) of every track to extract of an Aff-Wild2 or video-level
    dataset: an Aff-Wild2 track has as many rows as its longest annotation (every task), a
    video of EMI or BAH one row per displayed frame (its labels are one row per video)."""
    if dataset in VIDEO_READERS:
        return {t.id: (decoded_rows(t.video_path), t) for t in load_tracks(config.data.root, dataset_tasks(dataset)[0])}
    return _affwild2_tracks(affwild2.find_layout(config.data.root))


def decoded_rows(video: Path) -> int:
    """The displayed frames of ``video`` (its packets, no pixels decoded); 0 if it cannot be
    read, which the faces stage and the extractors then report for its track."""
    stat = video.stat()
    return _decoded_rows(str(video.resolve()), stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=4096)
def _decoded_rows(path: str, size: int, mtime_ns: int) -> int:
    try:
        return len(frame_index(path).pts)
    except MediaError:
        return 0


def _transcript_input(track) -> dict:
    """A video-level track's transcript, as a job input (the text stream's rows depend on it):
    its file's sha256, or None. Frame-wise tracks have no such input (their inputs stay as
    recorded)."""
    if not hasattr(track, "transcript"):
        return {}
    path = track.transcript
    return {"transcript": hashlib.sha256(path.read_bytes()).hexdigest()[:16] if path is not None else None}


def _affwild2_tracks(layout: affwild2.AffWild2Layout) -> dict[str, tuple[int, object]]:
    """track id -> (rows of its longest annotation, its first track record), every task."""
    tracks: dict[str, tuple[int, object]] = {}
    for task in AFFWILD2_TASKS:
        if layout.task_dir(task) is None and task.template_key not in layout.templates:
            continue
        for track in affwild2.load_tracks(layout, task):
            rows = int(track.frames.max())
            if track.id in tracks:
                tracks[track.id] = (max(rows, tracks[track.id][0]), tracks[track.id][1])
            else:
                tracks[track.id] = (rows, track)
    return tracks


def _job(folder: Path, track_id: str, rows: int, video: Path | None, crop_dir: Path | None, faces: str,
         found: FeatureStore | None = None, extra_inputs: dict | None = None) -> Job:
    """A job with its face source resolved and its inputs identified: the video (path in the
    dataset folder, size), which rows have a face (count and hash of the mask, and of the boxes
    when detected), the row count, and ``extra_inputs`` (a video-level track's transcript)."""
    present = boxes = None
    inputs = {"rows": rows, "video": None, "video_bytes": None, "faces": faces, **(extra_inputs or {})}
    if faces == "crops":
        if crop_dir is None:
            faces = inputs["faces"] = "none"
        else:
            present = affwild2.crop_mask(crop_dir, np.arange(1, rows + 1))
            digest = hashlib.sha256(np.packbits(present).tobytes()).hexdigest()[:12]
            inputs["faces"] = f"crops: {int(present.sum())} of {rows} rows ({digest})"
    elif faces == "detected":
        rows_found = read_faces(found, track_id) if video is not None else None
        if rows_found is None or len(rows_found[1]) != rows:
            present, boxes = np.zeros(rows, bool), np.zeros((rows, 4))
            inputs["faces"] = f"detected ({found.folder.name}): faces not detected yet"
        else:
            boxes, present = rows_found
            inputs["faces"] = (f"detected ({found.folder.name}): {int(present.sum())} of {rows} rows "
                               f"({faces_hash(boxes, present)})")
    if video is not None:
        # Relative to the dataset folder as written (batch1/ may be a link to another disk).
        inputs["video"] = Path(os.path.relpath(video, folder)).as_posix()
        inputs["video_bytes"] = video.stat().st_size
    return Job(track_id, rows, video, crop_dir if faces == "crops" else None, present, faces, inputs, boxes)


def face_finder(config: Config, device: torch.device | None = None) -> FaceFinder:
    """A finder with the configured detector and tracker settings (overrides read)."""
    extract = config.extract
    try:
        detector, tracker = DetectorSpec(**extract.detector), TrackerSpec(**extract.tracker)
    except TypeError as e:
        raise ConfigError(f"extract.detector / extract.tracker: {e}") from e
    overrides = read_overrides(extract.face_overrides) if extract.face_overrides else {}
    return FaceFinder(detector, tracker, overrides, Path(extract.cache) / "detections",
                      device or pick_device(extract.accelerator))


def faces_of_tracks(config: Config, dataset: str, create: bool = False) -> FeatureStore:
    """The faces stream of ``dataset`` for the configured detector and tracker."""
    detector, tracker = DetectorSpec(**config.extract.detector), TrackerSpec(**config.extract.tracker)
    return face_store(config.extract.cache, dataset_key(config.data.root, dataset), detector, tracker, create)


def fill_faces(config: Config, dataset: str, log: Log, rank: int = 0, world: int = 1,
               device: torch.device | None = None) -> dict[str, str]:
    """The faces stage: detect and track faces in the raw videos of this rank's share of the
    tracks (both sides of a video in one share), into the faces stream; failed track -> error."""
    if dataset == "dvd":
        raise ConfigError("extract.faces.dvd=detected: DVD frames are scenes; use frame (whole scenes) or none")
    finder = face_finder(config, device)
    store = faces_of_tracks(config, dataset, create=True)
    folder = dataset_folder(config.data.root, dataset)
    tracks = [FaceTrack(track_id, rows, track.video_path, Path(os.path.relpath(track.video_path, folder)).as_posix())
              for track_id, (rows, track) in sorted(dataset_tracks(config, dataset).items())
              if track.video_path is not None]
    videos = sorted({t.video for t in tracks})[rank::world]
    known = {t.id for t in tracks} | {t.video.stem for t in tracks}  # every rank checks the whole file
    return fill_face_store(store, finder, [t for t in tracks if t.video in set(videos)], log, known)


def feature_store(config: Config, dataset: str, label: str, spec=None, create: bool = False) -> FeatureStore:
    """The store of feature ``label`` (a key of ``extract.features``) for ``dataset`` of
    ``config.data.root``: under the root's dataset key, in a folder named by the extractor's
    fingerprint and, for visual streams, the face source (and for ``detected``, the faces
    stream's detector and tracker fingerprint)."""
    if spec is None:
        spec = feature_spec(config, label)
    key = dataset_key(config.data.root, dataset)
    if spec.modality == "visual":
        source = face_source(config, dataset, label)
        if source == "detected":
            source = faces_of_tracks(config, dataset).folder.name.replace("faces-", "detected-", 1)
        key = f"{key}/faces-{source}"
    return FeatureStore.for_spec(config.extract.cache, key, spec, create=create)


def feature_spec(config: Config, label: str):
    """The extractor spec of feature ``label`` (a key of ``extract.features``)."""
    name, overrides = extractor_entry(label, config.extract.features[label])
    return make_spec(name, **overrides)


def face_source(config: Config, dataset: str, label: str | None = None) -> str:
    """The face source of feature ``label`` on ``dataset`` (the entry's ``faces``, else
    ``extract.faces``); the dataset's when no label is given."""
    faces = config.extract.faces_of(label, dataset) if label else config.extract.faces.get(dataset)
    if faces not in FACE_SOURCES:
        raise ConfigError(f"face source {faces!r} for {dataset}"
                          f"{f' (extract.features.{label})' if label else ''}: choose one of {', '.join(FACE_SOURCES)}")
    return faces


def configured_faces(config: Config, dataset: str) -> set[str]:
    """The face sources the visual features of ``config`` take ``dataset``'s pixels from (each
    feature's own ``faces``, else ``extract.faces``); the dataset's alone when no visual
    feature is configured."""
    labels = [label for label in config.extract.features
              if config.extract.extracts(label, dataset) and feature_spec(config, label).modality == "visual"]
    return {face_source(config, dataset, label) for label in labels} or {face_source(config, dataset)}


def extract_all(config: Config, log: Log, rank: int = 0, world: int = 1,
                device: torch.device | None = None) -> dict[str, tuple[FeatureStore, Outcome]]:
    """Extract every configured feature for this rank's share of the tracks of the datasets
    of the configured tasks (``tasks``, or every task the root holds)."""
    device = device or pick_device(config.extract.accelerator)
    datasets = sorted({task.dataset for task in resolve_tasks(config.data.root, config.tasks)})
    results = {}
    for dataset in datasets:
        where = f"[rank {rank}] " if world > 1 else ""
        # The face source of every visual stream of this dataset; a dataset only audio or text
        # streams read (BAH in the demo) has no faces to detect, nor face rows to account.
        sources = {label: face_source(config, dataset, label)
                   for label, (name, overrides) in config.extract.extractors().items()
                   if config.extract.extracts(label, dataset) and make_spec(name, **overrides).modality == "visual"}
        faces_failed = {}
        if "detected" in sources.values():
            faces_failed = fill_faces(config, dataset, log, rank, world, device)
            for track_id, error in faces_failed.items():
                log(f"{where}{dataset} faces: {track_id} failed: {error}")
            if world > 1:  # every rank's crops need the boxes other ranks detected
                torch.distributed.barrier()
            if rank == 0:
                faces_of_tracks(config, dataset).write_manifest()
        problems: list[Problem] = []
        default = face_source(config, dataset) if sources else "none"
        jobs = jobs_for(config, dataset, problems, faces=default)[rank::world]
        if rank == 0:
            for problem in problems:
                log(f"  {problem}")
        cached = []
        mine = {job.id for job in jobs}
        jobs_by_source = {default: jobs}
        transcripts = transcripts_of(config, dataset)
        for label, (name, overrides) in config.extract.extractors().items():
            if not config.extract.extracts(label, dataset):
                continue
            if make_spec(name, **overrides).modality == "text" and transcripts is None:
                continue  # no transcripts (EMI, Aff-Wild2, DVD): the text stream is absent
            extractor = create_extractor(name, **overrides).to(device)
            store = feature_store(config, dataset, label, extractor.spec, create=True)
            if extractor.spec.modality == "audio":
                outcome = extract_audio(extractor, jobs, store, log)
            elif extractor.spec.modality == "text":
                outcome = extract_text(extractor, jobs, store, log, transcripts)
            else:
                source = sources[label]
                if source not in jobs_by_source:
                    jobs_by_source[source] = [j for j in jobs_for(config, dataset, faces=source) if j.id in mine]
                todo = [j for j in jobs_by_source[source] if j.id not in faces_failed]
                outcome = extract_visual(extractor, todo, store, log, device, config.extract.num_workers)
                if source == "detected":
                    outcome.failed.update({t: f"faces: {e}" for t, e in faces_failed.items() if t in mine})
            if outcome.written or outcome.failed:
                log(f"{where}{dataset} {label}: {len(outcome.written)} written, {len(outcome.skipped)} already "
                    f"complete, {len(outcome.failed)} failed -> {store.folder}")
            else:
                cached.append(label)
            results[f"{dataset}/{label}"] = (store, outcome)
        if cached:
            log(f"{where}{dataset} {', '.join(cached)}: all {len(jobs)} tracks already in the cache")
    return results


def transcripts_of(config: Config, dataset: str) -> dict[str, list[tuple[float, float, str]]] | None:
    """Timed transcript segments ``(start, end, text)`` per track of a dataset whose videos
    have transcripts (BAH), [] for a video without one; None where none has any (the text
    stream is then absent: EMI, and the frame-wise datasets)."""
    if dataset not in VIDEO_READERS:
        return None
    from abaw.data.transcripts import read_transcript

    tracks = load_tracks(config.data.root, dataset_tasks(dataset)[0])
    if not any(t.transcript is not None for t in tracks):
        return None
    return {t.id: [(s.start, s.end, s.text) for s in read_transcript(t.transcript)] if t.transcript else []
            for t in tracks}


def missing_weights(config: Config) -> list[str]:
    """One line per configured extractor whose weights are not on this machine."""
    missing = []
    for label, (name, overrides) in config.extract.extractors().items():
        missing += [f"extract.features.{label}: {reason}" for reason in make_spec(name, **overrides).missing_weights()]
    return missing


# What torchrun (torch elastic) sets in every process it starts, as Lightning detects it. Lightning's
# own ddp launcher sets WORLD_SIZE and LOCAL_RANK but not these: its rank processes start only
# once rank 0 is inside the first fit, long after extraction, and must not extract again.
TORCHRUN_VARIABLES = ("RANK", "GROUP_RANK", "LOCAL_RANK", "LOCAL_WORLD_SIZE")


def started_by_torchrun() -> bool:
    """True in a process torchrun started (see :data:`TORCHRUN_VARIABLES`)."""
    return all(name in os.environ for name in TORCHRUN_VARIABLES)


def launched_world(devices: int, num_nodes: int) -> tuple[int, int]:
    """(devices per node, nodes) of the extraction: the configured ones, or, in a process that
    torchrun started as one rank of several, the launcher's (``LOCAL_WORLD_SIZE``,
    ``WORLD_SIZE``), so the ranks share the tracks instead of each extracting all of them into
    the same cache."""
    if not started_by_torchrun():
        return devices, num_nodes
    world, local = int(os.environ.get("WORLD_SIZE", "1")), int(os.environ["LOCAL_WORLD_SIZE"])
    if world <= 1:
        return devices, num_nodes
    return local, max(1, world // local)


def run_extract(config: Config, log: Log | None = None) -> int:
    """Run extraction (distributed when configured); 1 if any track failed."""
    log = log or stderr_log
    if not config.extract.features:
        raise ValueError("no extractors configured (extract.features is empty)")
    missing = missing_weights(config)
    if missing:
        raise ConfigError("model weights not found (nothing is downloaded at run time; see docs/data-layouts.md, "
                          "'Weights for offline use'):\n  " + "\n  ".join(missing))
    extract = config.extract
    rank, world, device, fabric = 0, 1, None, None
    devices, num_nodes = launched_world(extract.devices, extract.num_nodes)
    if devices * num_nodes > 1:
        from lightning.fabric import Fabric

        accelerator = "cpu" if pick_device(extract.accelerator).type == "cpu" else "cuda"
        fabric = Fabric(accelerator=accelerator, devices=devices, num_nodes=num_nodes, strategy="ddp")
        fabric.launch()
        rank, world, device = fabric.global_rank, fabric.world_size, fabric.device
    results = extract_all(config, log, rank, world, device)
    failed = {key: outcome.failed for key, (_, outcome) in results.items()}
    if fabric is not None:
        gathered: list = [None] * world
        torch.distributed.all_gather_object(gathered, failed)
        failed = {key: {k: v for part in gathered for k, v in part[key].items()} for key in failed}
        if started_by_torchrun():
            # A torchrun rank exits when this command does: a process group left alive then
            # aborts it at exit (gloo's threads still joinable), which torchrun reports as failed.
            torch.distributed.barrier()
            torch.distributed.destroy_process_group()
    if rank != 0:
        return 0
    shown: set[str] = set()
    # Visual stores first: their accounting also counts the rows without a face.
    for key, (store, _) in sorted(results.items(), key=lambda item: "/faces-" not in str(item[1][0].folder)):
        store.write_manifest()
        dataset = key.split("/")[0]
        if dataset not in shown:  # decoded frames and rows are the same for every stream of a dataset
            shown.add(dataset)
            # The audio column comes from the dataset's audio streams (their records know it).
            audio = {track: state for other_key, (other, _) in results.items() if other_key.split("/")[0] == dataset
                     for track, state in audio_states(other).items()}
            print(f"\n{dataset}: frame accounting ({store.folder})")
            print(accounting_table(store, audio=audio or None))
    errors = [(key, track, error) for key, tracks in failed.items() for track, error in tracks.items()]
    for key, track, error in errors:
        print(f"abaw: error: {key}: track {track} failed: {error}", file=sys.stderr)
    return 1 if errors else 0
