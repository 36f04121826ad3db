"""Test-time personalisation: each method's own seconds per 100,000 test frames.

A fusion model with the demo's stream sizes (face 1280-d, voice 64-d; ``fusion_moe`` hidden
128 with 4 experts, the default EXPR head, and the ``mlp`` fallback, hidden 128) is trained
for a few steps on synthetic tracks (8 classes in stretches of 20-200 frames, a per-subject
offset, noise) so that its predictions have realistic confidence, which decides how many
frames pass CaP's gates; the test tracks are of subjects it never saw. Each test track's view
is what ``predict`` hands the methods: the z rows of the head's linear view and the logits
the head computed from them, with a face-present mask (every 17th frame without a face).

Timed: each method on every test track in one call (``personalise``, each track on its own),
as ``predict`` and ``abaw cv`` call it on a fold's tracks; the fastest of ``--repeats`` calls,
by wall time and by this process's CPU time (steadier when other processes share the cores),
as seconds per 100,000 frames. Beside it, the source bank (``build_source``, ``cap``'s training
side), built once per fold from the fold model's views of its training tracks (the forward
pass over them is prediction, not counted). Also printed: how many frame decisions each method
changed and the accuracy points it gained on these tracks (synthetic data: a check that the
methods do something, not a score). Target: at most 1 s per 100,000 frames.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_personalise.py [--tracks 20 --frames 3000] [--threads 1]
        [--repeats 3] [--quick]
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from machine import cpu_mark, others  # noqa: E402  (benchmarks/, the script's folder)

from abaw.personalise import LinearView, build_source, entropy, personalise, views_of_rows  # noqa: E402
from fusion import create_model  # noqa: E402

DIMS = {"face": 1280, "voice": 64}
CLASSES = 8
RUNS = {"fusion_moe": [("t3a", {"k": 20}), ("t3a", {"k": "all"}), ("cap", {})],
        "mlp": [("t3a", {"k": 20}), ("t3a", {"k": "all"}), ("cap", {})]}


def synthetic_tracks(centres: dict[str, torch.Tensor], count: int, frames: int, subjects: int,
                     generator: torch.Generator, first_subject: int = 0, offset: float = 8.0, noise: float = 12.0):
    """Tracks of (streams, labels, subject): class stretches of 20-200 frames, each subject
    shifting every feature by its own offset (subjects numbered from ``first_subject``)."""
    offsets = {name: torch.randn(subjects, dim, generator=generator) * offset for name, dim in DIMS.items()}
    tracks = []
    for i in range(count):
        labels = torch.empty(frames, dtype=torch.long)
        start = 0
        while start < frames:
            length = int(torch.randint(20, 200, (1,), generator=generator))
            labels[start:start + length] = int(torch.randint(0, CLASSES, (1,), generator=generator))
            start += length
        subject = i % subjects
        streams = {name: centres[name][labels] + offsets[name][subject]
                   + noise * torch.randn(frames, dim, generator=generator) for name, dim in DIMS.items()}
        tracks.append((streams, labels, f"subject{first_subject + subject}"))
    return tracks


def train(model, tracks, steps: int) -> None:
    """Adam steps on random 1024-frame batches, so that predictions are not uniform."""
    optimiser = torch.optim.Adam(model.parameters(), lr=5e-3)
    streams = {name: torch.cat([t[0][name] for t in tracks]) for name in DIMS}
    labels = torch.cat([t[1] for t in tracks])
    norms = model.stream_norms()  # statistics of the L2-normalised input, as training computes them
    model.set_stream_statistics({name: (norms[name].prepare(x).mean(dim=0), norms[name].prepare(x).std(dim=0))
                                 for name, x in streams.items() if name in norms})
    model.train()
    for _ in range(steps):
        pick = torch.randint(0, labels.shape[0], (1024,))
        logits = model({name: x[pick][None] for name, x in streams.items()})[0]
        loss = torch.nn.functional.cross_entropy(logits, labels[pick])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    model.eval()


@torch.inference_mode()
def views_of(model, tracks) -> list[LinearView]:
    """Each track's view as prediction keeps it: the head's z rows and the logits it computed."""
    rows, logits = [], []
    for streams, _, _ in tracks:
        output, z = model.head_through_view(model.forward_features({name: x[None] for name, x in streams.items()}))
        rows.append(z[0])
        logits.append(output[0])
    return views_of_rows(model, rows, logits)


def timed(function, repeats: int) -> tuple[float, float, object]:
    """(fastest wall seconds, fastest CPU seconds of this process, result) of ``repeats`` calls."""
    wall = cpu = math.inf
    for _ in range(repeats):
        started, used = time.perf_counter(), time.process_time()
        result = function()
        wall, cpu = min(wall, time.perf_counter() - started), min(cpu, time.process_time() - used)
    return wall, cpu, result


def bench_head(name: str, args, training, test) -> None:
    model = create_model(name, visual={"face": DIMS["face"]}, audio={"voice": DIMS["voice"]}, output_size=CLASSES,
                         hidden=128)
    train(model, training, args.train_steps)
    trained, views = views_of(model, training), views_of(model, test)
    labels = [t[1] for t in test]
    masks = [torch.arange(len(y)) % 17 != i % 17 for i, y in enumerate(labels)]
    build_wall, build_cpu, source = timed(lambda: build_source([v.z for v in trained], [t[1] for t in training],
                                                               [t[2] for t in training], CLASSES), args.repeats)
    frames = sum(len(y) for y in labels)
    plain = [v.logits().argmax(dim=1) for v in views]
    accuracy = float((torch.cat(plain) == torch.cat(labels)).float().mean())
    confident = float((entropy(torch.cat([v.logits() for v in views])) / math.log(CLASSES) < 0.5).float().mean())
    per = 1e5 / frames
    print(f"\n{name}: {args.train_steps} training steps, accuracy on the unseen test subjects {accuracy:.2f}, "
          f"{100 * confident:.0f} % of frames with normalised entropy < 0.5; linear view D={views[0].z.shape[1]}")
    bank_frames = sum(len(t[1]) for t in training)
    print(f"  source bank of {len(source.subjects)} subjects from {len(training)} tracks ({bank_frames:,} frames), "
          f"once per fold: {build_wall:.3f} s wall, {build_cpu:.3f} s CPU")
    print(f"  {'method':28s} per 100,000 test frames: wall     CPU")
    for method, params in RUNS[name]:
        wall, cpu, out = timed(lambda: personalise(method, views, params, source=source, masks=masks), args.repeats)
        decided = [logits.argmax(dim=1) for logits in out]
        changed = sum(int((d != p).sum()) for d, p in zip(decided, plain))
        gained = sum(int((d == y).sum()) - int((p == y).sum()) for d, p, y in zip(decided, plain, labels))
        label = f"{method} {','.join(f'{k}={v}' for k, v in params.items()) or 'defaults'}"
        print(f"  {label:28s} {'':24s}{wall * per:6.3f} s {cpu * per:6.3f} s  ({100 * changed / frames:.1f} % of "
              f"decisions changed, accuracy {100 * gained / frames:+.1f} points)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=20)
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--train-tracks", type=int, default=40)
    parser.add_argument("--subjects", type=int, default=20)
    parser.add_argument("--train-steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, help="torch threads (default: torch's own choice)")
    parser.add_argument("--quick", action="store_true", help="4 tracks x 1000 frames, one repeat")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.quick:
        args.tracks, args.frames, args.train_tracks, args.repeats, args.train_steps = 4, 1000, 8, 1, 10
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    centres = {name: torch.randn(CLASSES, dim, generator=generator) for name, dim in DIMS.items()}
    training = synthetic_tracks(centres, args.train_tracks, args.frames, args.subjects, generator)
    test = synthetic_tracks(centres, args.tracks, args.frames, args.tracks, generator, first_subject=args.subjects)
    mark = cpu_mark()
    print(f"{args.tracks} test tracks x {args.frames} frames, streams {DIMS}, {CLASSES} classes, "
          f"torch threads {torch.get_num_threads()}, best of {args.repeats}")
    for name in RUNS:
        bench_head(name, args, training, test)
    print(f"\ntarget: at most 1 s per 100,000 test frames for each method; {others(mark)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
