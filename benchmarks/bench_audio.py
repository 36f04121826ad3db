"""wav2vec2 audio features: one encoder pass per chunk vs one pass per frame's own window.

Base-size wav2vec2 (``Wav2Vec2Config()`` defaults, random weights: no hub here), 30 fps, 1 s
windows (±0.5 s). The chunked path runs the encoder once per 20 s chunk and pools the
time-stamped steps onto frames; the per-frame path, what a naive loop does, re-encodes each
frame's own 1 s of audio (zero-padded at the clip's ends), batched. Prints both times, their
ratio, and how close the two outputs are: they are not equal, because a step's hidden state
depends on the audio the encoder saw (20 s of context vs 1 s).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_audio.py [--seconds 20] [--batch 32]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from features.audio import Wav2Vec2Extractor, Wav2Vec2Spec  # noqa: E402

SR = 16000


def speech_like(seconds: float, seed: int = 0) -> np.ndarray:
    """(N,) float32: harmonic bursts with a wandering pitch, syllable-rate envelope and noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * SR)) / SR
    pitch = 140 + 40 * np.sin(2 * np.pi * 0.3 * t) + 10 * rng.standard_normal() * np.sin(2 * np.pi * 2 * t)
    phase = 2 * np.pi * np.cumsum(pitch) / SR
    voice = sum(np.sin(k * phase) / k for k in range(1, 8))
    envelope = np.clip(np.sin(2 * np.pi * 4 * t + rng.uniform(0, 6)), 0, None) * (np.sin(2 * np.pi * 0.2 * t) > -0.5)
    return (0.2 * voice * envelope + 0.01 * rng.standard_normal(len(t))).astype(np.float32)


def per_frame_windows(extractor: Wav2Vec2Extractor, wave: np.ndarray, frame_times: np.ndarray,
                      half: float, batch: int) -> np.ndarray:
    """(T, D): each frame re-encodes its own [t - half, t + half] s of audio, mean over its steps."""
    width = int(round(2 * half * SR))
    padded = np.pad(wave, (width, width))
    starts = np.round((frame_times - half) * SR).astype(int) + width
    rows = []
    for i in range(0, len(frame_times), batch):
        windows = np.stack([padded[s:s + width] for s in starts[i:i + batch]])
        # Same preprocessing and layer mean as the extractor, so only the context differs.
        windows = np.stack([extractor._prepare(w) for w in windows])
        rows.append(extractor._encode(windows).mean(axis=1))
    return np.concatenate(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="audio length (default 20 s = 600 frames)")
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--batch", type=int, default=32, help="windows per batch in the per-frame path")
    args = parser.parse_args(argv)

    spec = Wav2Vec2Spec(name="wav2vec2", config={}, layers=4, window=0.5, device="cpu")
    extractor = Wav2Vec2Extractor(spec)
    wave = speech_like(args.seconds)
    frames = (np.arange(int(args.seconds * args.fps)) + 0.5) / args.fps
    params = sum(p.numel() for p in extractor.model.parameters()) / 1e6
    print(f"wav2vec2 base config (random weights, {params:.1f} M params), {args.seconds:g} s audio, "
          f"{len(frames)} frames at {args.fps:g} fps, window ±{spec.window} s, torch threads "
          f"{torch.get_num_threads()}, device cpu")

    extractor.extract(wave[:SR], frames[:5])  # warm-up: first-call allocations out of the timing
    start = time.perf_counter()
    chunked = extractor.extract(wave, frames)
    t_chunked = time.perf_counter() - start
    start = time.perf_counter()
    naive = per_frame_windows(extractor, wave, frames, spec.window, args.batch)
    t_naive = time.perf_counter() - start

    print(f"chunked single pass ({spec.chunk_seconds:g} s chunks): {t_chunked:8.2f} s  "
          f"({len(frames) / t_chunked:8.1f} frames/s)")
    print(f"per-frame 1 s windows (batch {args.batch}):     {t_naive:8.2f} s  "
          f"({len(frames) / t_naive:8.1f} frames/s)")
    print(f"speed-up: {t_naive / t_chunked:.1f}x (target >= 10x)")
    print(f"shapes: chunked {chunked.shape}, per-frame {naive.shape}, equal: {chunked.shape == naive.shape}")

    def unit(x: np.ndarray) -> np.ndarray:
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    cos = np.sum(unit(chunked) * unit(naive), axis=1)
    # Reference: the same frame vs a frame 3 s away, to show how much of the cosine is shared
    # direction of random-weight features rather than agreement about the moment.
    shift = int(3 * args.fps) % len(frames) or 1
    other = np.sum(unit(chunked) * unit(np.roll(naive, shift, axis=0)), axis=1)
    q = np.percentile(cos, [0, 5, 50, 95, 100])
    print(f"per-frame cosine(chunked, per-frame): min {q[0]:.3f}  p5 {q[1]:.3f}  median {q[2]:.3f}  "
          f"p95 {q[3]:.3f}  max {q[4]:.3f}  mean {cos.mean():.3f}")
    print(f"reference cosine to a frame 3 s away: median {np.median(other):.3f}  mean {other.mean():.3f}")
    # Centred: subtract each output's mean over frames, leaving only how frames differ.
    centred = np.sum(unit(chunked - chunked.mean(0)) * unit(naive - naive.mean(0)), axis=1)
    centred_other = np.sum(unit(chunked - chunked.mean(0)) * unit(np.roll(naive - naive.mean(0), shift, axis=0)), axis=1)
    print(f"centred cosine: same frame median {np.median(centred):.3f} mean {centred.mean():.3f}; "
          f"frame 3 s away median {np.median(centred_other):.3f}")
    # Alignment: shift one path against the other; agreement must peak at offset 0.
    offsets = range(-15, 16)
    agreement = [float(np.mean(np.sum(unit(chunked - chunked.mean(0)) * unit(np.roll(naive - naive.mean(0), o, axis=0)),
                                      axis=1)[15:-15])) for o in offsets]
    best = list(offsets)[int(np.argmax(agreement))]
    print(f"alignment: mean centred cosine by frame offset -15..15 peaks at offset {best:+d} "
          f"({max(agreement):.3f}; offset -1: {agreement[14]:.3f}, +1: {agreement[16]:.3f})")
    print(f"max |difference| {np.abs(chunked - naive).max():.3f}; the values differ because each path's "
          "encoder sees different context (20 s chunk vs the frame's own 1 s window)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
