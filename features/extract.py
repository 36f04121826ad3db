"""Run extractors over tracks and fill the feature store, resumably.

Visual extractors read ``cropped_aligned`` JPEGs (Aff-Wild2) or frames decoded from the raw
video (DVD) in DataLoader workers, batched across frames, while the model runs; audio
extractors decode each raw video's audio once (PyAV) and align windows to the decoder's frame
timestamps. Both write rows into the store as they are computed (:class:`TrackWriter`), and
audio is decoded and encoded in pieces, so memory does not grow with a video's length. A
track whose files are already complete is skipped; a track that fails is reported and the
others go on.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from features.audio import FramePool
from features.media import (FrameIndex, MediaError, audio_pieces, audio_samples, decode_frames, frame_index,
                            is_variable_frame_rate)
from features.progress import ProgressLog
from features.store import FeatureStore, TrackWriter

Log = Callable[[str], None]
SILENCE = 1e-6  # peak amplitude below which an audio track counts as silent


FACE_SOURCES = ("crops", "detected", "frame", "none")


@dataclass(frozen=True)
class Job:
    """One track to extract: ``frames`` rows, row ``i`` = frame ``i + 1`` of the annotation.

    ``faces`` names where a visual extractor's pixels come from: ``crops`` (images
    ``crop_dir/%05d.jpg`` where ``present``), ``detected`` (frames decoded from ``video``,
    cropped around ``boxes`` (T, 4) where ``present``: the faces stream), ``frame`` (whole
    frames decoded from ``video``, for scenes) or ``none`` (no face source: every row
    face-absent). ``inputs``
    identifies what the rows are computed from (video, crops, row count); a finished track
    whose recorded inputs differ is extracted again.
    """

    id: str
    frames: int
    video: Path | None
    crop_dir: Path | None = None
    present: np.ndarray | None = None
    faces: str = "frame"
    inputs: dict = field(default_factory=dict)
    boxes: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.faces not in FACE_SOURCES:
            raise ValueError(f"face source {self.faces!r} is not one of {', '.join(FACE_SOURCES)}")
        if self.faces == "crops" and (self.crop_dir is None or self.present is None):
            raise ValueError(f"track {self.id}: face source 'crops' needs a crop folder and mask")
        if self.faces == "detected" and (self.boxes is None or self.present is None):
            raise ValueError(f"track {self.id}: face source 'detected' needs boxes and a mask")

    def inputs_for(self, modality: str) -> dict:
        """The inputs a stream of ``modality`` depends on: audio only on the video and rows,
        text on those and the transcript (a video-level dataset's ``transcript`` input), the
        visual streams on everything but the transcript."""
        ignored = {"audio": ("faces", "transcript"), "text": ("faces",)}.get(modality, ("transcript",))
        return {k: v for k, v in self.inputs.items() if k not in ignored}


@dataclass
class Outcome:
    """What a run did: tracks written, skipped as already complete, and failed (id -> error)."""

    written: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)


def timing(job: Job) -> tuple[np.ndarray, dict]:
    """Row times and frame accounting of a job, from the decoder's frame timestamps.

    Returns ``(times, accounting)``: times (T,) frame centres in seconds, extrapolated at the
    median frame duration for rows past the last decoded frame; accounting: decoded frames,
    annotation rows, rows padded/clipped, frames without a face, fps, variable frame rate (steps
    between frames irregular beyond the rounding of the stream's time base:
    :func:`features.media.is_variable_frame_rate`).
    """
    accounting: dict = {"annotation_rows": job.frames, "face_source": job.faces}
    if job.faces in ("crops", "detected"):
        accounting["rows_without_face"] = int((~job.present).sum())
    elif job.faces == "none":
        accounting["rows_without_face"] = job.frames
    if job.video is None:
        accounting.update(decoded_frames=None, rows_padded=None, rows_clipped=None)
        return np.full(job.frames, np.nan), accounting
    index = frame_index(job.video)
    stamps = index.stamps
    decoded = len(stamps)
    durations = stamps[:, 1] - stamps[:, 0]
    step = float(np.median(durations)) if decoded else 0.0
    centres = stamps.mean(axis=1)
    times = np.empty(job.frames)
    shared = min(decoded, job.frames)
    times[:shared] = centres[:shared]
    last = centres[shared - 1] if shared else 0.0
    times[shared:] = last + step * np.arange(1, job.frames - shared + 1)
    accounting.update(
        decoded_frames=decoded, rows_padded=max(0, job.frames - decoded), rows_clipped=max(0, decoded - job.frames),
        duration=float(stamps[-1, 1]) if decoded else 0.0,
        fps=round(decoded / float(stamps[-1, 1]), 3) if decoded else None,
        variable_frame_rate=is_variable_frame_rate(stamps[:, 0], index.time_base),
    )
    return times, accounting


class VideoFrames:
    """Displayed frames of raw videos by row (row ``i`` = the ``i``-th frame a player shows),
    each video indexed and its decoder opened on first use (so in the DataLoader worker that
    reads them).

    decord decodes, except for videos whose edit list hides pre-roll frames: decord keeps those
    in its index but its decoder drops them, so which frame an index gives depends on whether
    decord reached it by decoding on from the file's start (index = displayed frame) or by
    seeking to a later keyframe (index = displayed frame + pre-roll). PyAV reads such videos,
    finding frames by presentation time, and any video decord fails on (it cannot read some
    containers, MPEG-TS among them): the frames are the same, only slower to reach.
    """

    def __init__(self) -> None:
        self._readers: dict[Path, object] = {}
        self._indexes: dict[Path, FrameIndex] = {}
        self._by_time: set[Path] = set()  # videos PyAV reads

    def __call__(self, path: Path, rows: np.ndarray) -> np.ndarray:
        """uint8 ``(len(rows), H, W, 3)`` displayed frames ``rows`` (0-based) of ``path``."""
        import decord

        if path not in self._indexes:
            self._indexes[path] = frame_index(path)
            if self._indexes[path].hidden:
                self._by_time.add(path)
        index = self._indexes[path]
        if path in self._by_time:
            return decode_frames(path, index.pts[rows])
        try:
            if path not in self._readers:
                decord.logging.set_level(decord.logging.QUIET)  # its decoder's log lines are noise
                self._readers[path] = decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)
            reader = self._readers[path]
            frames = reader.get_batch(rows.tolist()).asnumpy()
        except decord.DECORDError:
            self._readers.pop(path, None)
            self._by_time.add(path)
            return decode_frames(path, index.pts[rows])
        # decord's threaded decoder keeps frames it decoded alive between get_batch calls: left
        # alone, a reader's memory grows with every frame read (>1 GiB per minute of 640x360
        # video, benchmarks/bench_memory.py). Seeking releases its queues; the next batch then
        # decodes again from the keyframe before it, a small cost next to the model.
        reader.seek(0)
        return frames


class _Chunks(Dataset):
    """Chunks of up to ``size`` rows of one job, loaded and preprocessed in a worker."""

    def __init__(self, jobs: list[Job], decoded: list[int], preprocess: Callable, size: int) -> None:
        self.jobs, self.preprocess = jobs, preprocess
        self.items: list[tuple[int, np.ndarray]] = []
        for index, job in enumerate(jobs):
            if job.faces == "crops":
                rows = np.flatnonzero(job.present)
            elif job.faces == "detected":
                rows = np.flatnonzero(job.present[:decoded[index]])
            elif job.faces == "frame":
                rows = np.arange(min(job.frames, decoded[index]))
            else:
                rows = np.arange(0)
            self.items += [(index, rows[i:i + size]) for i in range(0, len(rows), size)]
        self.frames = VideoFrames()  # decord readers open lazily, inside each worker

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int):
        index, rows = self.items[i]
        job = self.jobs[index]
        try:
            if job.faces == "crops":
                images = [np.asarray(Image.open(job.crop_dir / f"{r + 1:05d}.jpg").convert("RGB")) for r in rows]
            else:
                images = list(self.frames(job.video, rows))
            if job.faces == "detected":  # square crops of the raw frame around the tracked box
                crops = [self.preprocess(image, box=tuple(job.boxes[r])) for image, r in zip(images, rows)]
            else:
                crops = [self.preprocess(image, scene=job.faces == "frame") for image in images]
            return index, rows, torch.stack(crops), None
        except Exception as e:  # reported per track; the run goes on with the others
            return index, rows, None, f"{type(e).__name__}: {e}"


def extract_visual(extractor, jobs: list[Job], store: FeatureStore, log: Log, device: torch.device,
                   num_workers: int = 0) -> Outcome:
    """Embed every row with an image of every job not yet complete in ``store``."""
    outcome, todo = _pending(jobs, store, "visual", log)
    if not todo:
        return outcome
    from features.visual import make_preprocess

    accounts = {}
    for job in todo:
        try:
            accounts[job.id] = timing(job)[1]
        except MediaError as e:
            accounts[job.id] = {"decoded_frames": 0, "error": str(e), "face_source": job.faces}
            if job.faces == "frame":
                outcome.failed[job.id] = str(e)
    decoded = [accounts[job.id].get("decoded_frames") or 0 for job in todo]
    dataset = _Chunks(todo, decoded, make_preprocess(extractor.spec), extractor.spec.batch_size)
    pending = np.bincount([index for index, _ in dataset.items], minlength=len(todo))
    progress = ProgressLog(log, len(todo), sum(len(rows) for _, rows in dataset.items))
    writers: dict[int, TrackWriter] = {}  # tracks with rows written, until they finish

    def writer_of(index: int) -> TrackWriter:
        if index not in writers:
            writers[index] = _empty(todo[index], extractor.output_dims, store)
        return writers[index]

    def fail(index: int, error: str) -> None:
        outcome.failed[todo[index].id] = error
        writer = writers.pop(index, None)
        if writer is not None:
            writer.discard()

    def finish(index: int) -> None:
        job = todo[index]
        try:
            writer_of(index).commit(accounts[job.id], job.inputs_for("visual"))
            del writers[index]
            outcome.written.append(job.id)
        except OSError as e:
            fail(index, str(e))
        progress.update(tracks=1)

    for index in np.flatnonzero(pending == 0):
        if todo[index].id not in outcome.failed:
            finish(int(index))  # no face and no frame: all rows invalid, still a finished track
    # Workers are spawned, not forked: a decoder opened in the parent can hang forked workers.
    loader = DataLoader(dataset, batch_size=None, num_workers=num_workers, pin_memory=device.type == "cuda",
                        multiprocessing_context="spawn" if num_workers else None)
    for index, rows, images, error in loader:
        job = todo[index]
        if error is not None and job.id not in outcome.failed:
            fail(index, error)
        elif job.id not in outcome.failed:
            outputs = extractor.embed(images.to(device, non_blocking=True))
            rows_out = {name: values.float().cpu().numpy() for name, values in outputs.items()}
            try:
                writer_of(index).put(rows, {**rows_out, "valid": True})
            except OSError as e:
                fail(index, str(e))
            progress.update(rows=len(rows))
        pending[index] -= 1
        if pending[index] == 0 and job.id not in outcome.failed:
            finish(index)
    progress.finish()
    return outcome


def _pending(jobs: list[Job], store: FeatureStore, modality: str, log: Log) -> tuple[Outcome, list[Job]]:
    """The jobs still to extract, and an outcome listing the finished ones as skipped. A
    finished track whose inputs changed since (crops added, another video, other rows) is
    extracted again, and the log says what changed."""
    outcome, todo = Outcome(), []
    for job in jobs:
        changed = store.changed_inputs(job.id, job.inputs_for(modality))
        if not changed and store.is_complete(job.id, job.frames):
            outcome.skipped.append(job.id)
            continue
        if changed and store.record(job.id) is not None:
            log(f"  {job.id}: inputs changed since it was extracted ({'; '.join(changed)}); extracting again")
        todo.append(job)
    return outcome, todo


def _empty(job: Job, dims: dict[str, int], store: FeatureStore) -> TrackWriter:
    """A writer of the job's track whose rows are all zero and invalid until put."""
    return store.writer(job.id, job.frames, {name: (dim,) for name, dim in dims.items()})


def extract_audio(extractor, jobs: list[Job], store: FeatureStore, log: Log) -> Outcome:
    """Audio features per row, aligned to the decoder's frame times; no or silent audio gives
    zero rows with valid = False. Each video's audio is decoded and encoded once, in pieces,
    for all its tracks (both sides of a video share it); rows are written as their windows
    complete."""
    outcome, todo = _pending(jobs, store, "audio", log)
    if not todo:
        return outcome
    progress = ProgressLog(log, len(todo), sum(job.frames for job in todo))
    by_video: dict[Path | None, list[Job]] = {}
    for job in todo:
        by_video.setdefault(job.video, []).append(job)
    for video, group in by_video.items():
        tracks: list[tuple[Job, np.ndarray, dict, TrackWriter]] = []
        try:
            for job in group:
                times, accounting = timing(job)
                tracks.append((job, times, accounting, _empty(job, extractor.output_dims, store)))
            if video is not None:
                _audio_rows(extractor, video, tracks)
        except (MediaError, OSError, ValueError, RuntimeError) as e:
            for job in group:
                outcome.failed[job.id] = f"{type(e).__name__}: {e}"
            for *_, writer in tracks:
                writer.discard()
            tracks = []
        for job, _, accounting, writer in tracks:
            try:
                writer.commit(accounting, job.inputs_for("audio"))
                outcome.written.append(job.id)
            except OSError as e:
                writer.discard()
                outcome.failed[job.id] = f"{type(e).__name__}: {e}"
        progress.update(rows=sum(job.frames for job in group), tracks=len(group))
    progress.finish()
    return outcome


def extract_text(extractor, jobs: list[Job], store: FeatureStore, log: Log,
                 segments: dict[str, list[tuple[float, float, str]]]) -> Outcome:
    """Text rows per job from its timed transcript ``segments[job.id]`` (``(start, end, text)``
    in seconds; [] for a video without a transcript: every row invalid), aligned to the
    decoder's frame times (``extractor.frame_rows``)."""
    outcome, todo = _pending(jobs, store, "text", log)
    for job in todo:
        try:
            times, accounting = timing(job)
            if job.video is None:
                times = np.zeros(job.frames)
            rows, valid = extractor.frame_rows(segments.get(job.id, []), times)
            accounting["rows_with_text"] = int(valid.sum())
            store.write(job.id, rows, valid, None, accounting, job.inputs_for("text"))
            outcome.written.append(job.id)
        except (MediaError, OSError, ValueError, RuntimeError) as e:
            outcome.failed[job.id] = f"{type(e).__name__}: {e}"
    return outcome


def _audio_rows(extractor, video: Path, tracks: list[tuple[Job, np.ndarray, dict, TrackWriter]]) -> None:
    """Stream ``video``'s audio through ``extractor`` into the writers of its tracks (job, row
    times, accounting, writer); sets each accounting's ``audio`` (none, silent or sound)."""
    rate = extractor.spec.sample_rate
    duration = tracks[0][2]["duration"]  # one video, one duration
    # Cropped to the video's duration: audio past the last frame belongs to no row.
    pieces = audio_pieces(video, rate, duration=duration)
    if pieces is None:
        audio = "none"
    else:
        total = audio_samples(duration, rate)
        peak = _Peak(pieces)
        pools = [FramePool(times, extractor.spec.window) for _, times, _, _ in tracks]

        def put(writer: TrackWriter, times: np.ndarray, rows: np.ndarray, values: np.ndarray) -> None:
            valid = times[rows] <= total / rate  # rows past the audio's end have none
            values[~valid] = 0.0
            writer.put(rows, {"features": values, "valid": valid})

        for step_times, steps in extractor.iter_steps(peak, total):
            for pool, (_, times, _, writer) in zip(pools, tracks):
                put(writer, times, *pool.push(step_times, steps))
        for pool, (_, times, _, writer) in zip(pools, tracks):
            put(writer, times, *pool.finish())
        for _ in peak:
            pass  # the silence decision covers every sample, read or not
        audio = "silent" if peak.peak < SILENCE else "sound"
        if audio == "silent":
            for *_, writer in tracks:
                writer.clear()
    for _, _, accounting, _ in tracks:
        accounting["audio"] = audio


class _Peak:
    """Passes audio pieces through, keeping the largest absolute sample seen: silence is
    decided without holding the waveform."""

    def __init__(self, pieces: Iterator[np.ndarray]) -> None:
        self._pieces, self.peak = pieces, 0.0

    def __iter__(self) -> Iterator[np.ndarray]:
        for piece in self._pieces:
            self.peak = max(self.peak, float(np.abs(piece).max(initial=0.0)))
            yield piece


def audio_states(store: FeatureStore) -> dict[str, str]:
    """``{track: none | silent | sound}``: the audio each track of an audio stream's ``store``
    had (no audio stream, all-zero samples, or sound); empty for a store of another modality."""
    records = (store.record(t) for t in store.tracks())
    return {r["track"]: r["accounting"]["audio"] for r in records if r is not None and "audio" in r["accounting"]}


SOUNDLESS = ("none", "silent")  # audio states whose audio rows are all invalid


def accounting_table(store: FeatureStore, limit: int = 10, audio: dict[str, str] | None = None) -> str:
    """Frame accounting of a store's tracks: the tracks whose decoded frame count differs from
    their rows, have frames without a face, a variable frame rate, or no audio (``audio``:
    :func:`audio_states` of the dataset's audio stream; by default the store's own records'),
    then a summary line that also counts the face source each track used and the tracks with
    no audio stream or silent audio."""
    lines = [f"{'track':<28} {'decoded':>8} {'rows':>7} {'padded':>7} {'clipped':>8} {'no face':>8} {'vfr':>4} "
             f"{'audio':>6}  faces"]
    shown = mismatched = 0
    records = [store.record(t) for t in store.tracks()]
    sources: dict[str, int] = {}
    soundless = dict.fromkeys(SOUNDLESS, 0)
    for record in records:
        a = record["accounting"]
        source = a.get("face_source", "-")
        sources[source] = sources.get(source, 0) + 1
        sound = audio.get(record["track"]) if audio is not None else a.get("audio")
        if sound in SOUNDLESS:
            soundless[sound] += 1
        odd = (a.get("rows_padded") or a.get("rows_clipped") or a.get("rows_without_face")
               or a.get("variable_frame_rate") or sound in SOUNDLESS)
        mismatched += bool(a.get("rows_padded") or a.get("rows_clipped"))
        if odd and shown < limit:
            shown += 1
            lines.append(f"{record['track']:<28} {a.get('decoded_frames')!s:>8} {a['annotation_rows']:>7} "
                         f"{a.get('rows_padded')!s:>7} {a.get('rows_clipped')!s:>8} "
                         f"{a.get('rows_without_face', '-')!s:>8} {'yes' if a.get('variable_frame_rate') else '':>4} "
                         f"{sound if sound in SOUNDLESS else '' if sound else '-':>6}  {source}")
    faces = ", ".join(f"{name} {count}" for name, count in sorted(sources.items()))
    quiet = (f"; {soundless['none']} without an audio stream, {soundless['silent']} with silent audio (their audio "
             "rows are invalid)" if any(soundless.values()) else "")
    lines.append(f"{len(records)} tracks (face source: {faces}); {mismatched} with decoded frames != annotation rows "
                 f"(padded or clipped){quiet}" + (f"; first {limit} unusual tracks shown, all in manifest.json"
                                                  if shown == limit else ""))
    return "\n".join(lines)
