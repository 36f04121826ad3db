"""Test-time personalisation vs plain prediction over the same tracks, in one process.

A fusion model with the demo's stream sizes (face 1280-d, voice 64-d; ``fusion_moe`` hidden
128 with 4 experts, the default EXPR head, and the ``mlp`` fallback, hidden 128) is trained
for a few steps on synthetic tracks (8 classes in stretches of 20-200 frames, a per-subject
offset, noise) so that its predictions have realistic confidence, which decides how many
frames pass CaP's gates; the test tracks are of subjects it never saw. They are predicted as
``predict_frames`` runs the model: float16 rows as the feature store holds them, windows of
32 rows, 32 windows a batch, converted to float32 in the forward; no reading from disk, so the
denominator is the bare forward and the ratio the pessimistic one.

- plain: ``forward_features`` then ``forward_head``;
- personalised: ``forward_features``, the head's linear view, then the method (which computes
  the original logits from the view itself, in place of ``forward_head``).

Then the same comparison as ``abaw predict`` runs it (its ``predict_track``): the test tracks
written to a feature store on disk, read back through memory-mapped windows overlapping as
prediction does, the fold model a ``TaskModule``, probabilities out; personalised, the same
call with ``features=True`` (the head computed through its linear view, whose z rows it keeps),
then the method with the face-present mask, as ``predict`` and ``abaw cv`` apply it.

Every job runs ``--repeats`` times on every track, the jobs one after the other track by track,
and a job's time is the sum over tracks of each track's fastest run, by wall time and by this
process's CPU time (steadier when other processes share the cores; the script ends with how
many cores they kept busy). Overhead = personalised / plain − 1, target ≤ 15 %. The source
bank (``cap``'s training side) is built once per fold, outside prediction: its time is printed
apart. Also printed: how many frame decisions (arg-max) each method changed and the accuracy
points it gained on these tracks (synthetic data: a check that the methods do something, not
a score).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_personalise.py [--tracks 20 --frames 3000] [--quick]
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from machine import cpu_mark, others  # noqa: E402  (benchmarks/, the script's folder)

from abaw.personalise import build_source, entropy, linear_view, personalise_view, view_of_rows  # noqa: E402
from fusion import create_model  # noqa: E402

DIMS = {"face": 1280, "voice": 64}
CLASSES, WINDOW, BATCH = 8, 32, 32


def world(generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Class centres per stream, shared by every subject."""
    return {name: torch.randn(CLASSES, dim, generator=generator) for name, dim in DIMS.items()}


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


def windows(streams: dict[str, torch.Tensor]) -> tuple[list[dict[str, torch.Tensor]], int]:
    """The track as predict_frames feeds it: float16 as the feature store holds it, in (32
    windows, 32 rows, D) batches, padded at the end (each batch goes to float32 in the forward,
    as ``TaskModule.forward`` does)."""
    rows = next(iter(streams.values())).shape[0]
    padded = -(-rows // WINDOW) * WINDOW
    shaped = {n: torch.nn.functional.pad(x, (0, 0, 0, padded - rows)).reshape(-1, WINDOW, x.shape[1]).half()
              for n, x in streams.items()}
    count = padded // WINDOW
    return [{n: x[i:i + BATCH] for n, x in shaped.items()} for i in range(0, count, BATCH)], rows


def as_float(batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: x.float() for name, x in batch.items()}


def features_of(model, batches, rows: int) -> torch.Tensor:
    return torch.cat([model.forward_features(as_float(b)).reshape(-1, model.feature_dim) for b in batches])[:rows]


def plain(model, track) -> torch.Tensor:
    batches, rows = track
    return torch.cat([model(as_float(b)).reshape(-1, CLASSES) for b in batches])[:rows]


def personalised(model, track, method: str, params: dict, mode: str, source) -> torch.Tensor:
    batches, rows = track
    return personalise_view(method, linear_view(model, features_of(model, batches, rows)), params, mode, source)


def predict_path(model_name: str, trained, test_tracks, folder: Path):
    """(module, streams, tracks) of the prediction path: a ``TaskModule`` around ``trained``
    (its weights copied), and the test tracks written to feature stores under ``folder``."""
    import numpy as np

    from abaw.data.records import Track
    from abaw.training.data import Stream
    from abaw.training.module import TaskModule
    from features.store import FeatureStore

    streams = {name: Stream(name, FeatureStore(folder / name), "visual" if name == "face" else "audio", dim)
               for name, dim in DIMS.items()}
    tracks = []
    for i, (track_streams, labels, _) in enumerate(test_tracks):
        track_id = f"track{i:03d}"
        for name, stream in streams.items():
            stream.store.folder.mkdir(parents=True, exist_ok=True)
            valid = np.ones(len(labels), bool)
            if name == "face":
                valid[i::17] = False  # some frames without a face: not in the supports or caches
            stream.store.write(track_id, track_streams[name].numpy().astype(np.float16), valid)
        rows = len(labels)
        tracks.append(Track(track_id, "expr", "test", track_id, None, folder, np.arange(1, rows + 1),
                            labels[:, None].numpy().astype(np.float32), np.ones((rows, 1), bool)))
    module = TaskModule("expr", {name: (s.modality, s.dim) for name, s in streams.items()},
                        {"name": model_name, "hidden": 128})
    module.model.load_state_dict(trained.state_dict())
    return module.eval(), streams, tracks


def predicted_plain(module, streams, track):
    from abaw.training.train import predict_track

    return predict_track(module, streams, track, WINDOW, module.model.context_rows)["probabilities"]


def predicted_personalised(module, streams, track, method: str, params: dict, mode: str, source) -> torch.Tensor:
    from abaw.training.train import predict_track

    arrays = predict_track(module, streams, track, WINDOW, module.model.context_rows, features=True)
    view = view_of_rows(module.model, torch.from_numpy(arrays["view"]))
    return personalise_view(method, view, params, mode, source, torch.from_numpy(arrays["present"]))


def timed(function) -> tuple[float, float, object]:
    """(wall seconds, this process's CPU seconds, result) of one call. Under load from other
    processes the CPU time is the steadier of the two (it counts only what this process ran)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def compare(title: str, jobs: dict, repeats: int, labels: list[torch.Tensor]) -> None:
    """Time every job (``plain`` first; each a function of the track's index) ``repeats`` times
    per track, and print the sum over tracks of each track's fastest run, with its overhead over
    plain and what it changed in the decisions. Track by track, the jobs run one after the
    other, so that a slow spell of the machine meets them all, not the plain one alone."""
    tracks = range(len(labels))
    best = {label: [math.inf] * len(labels) for label in jobs}
    cpu = {label: [math.inf] * len(labels) for label in jobs}
    outputs: dict[str, list] = {label: [None] * len(labels) for label in jobs}
    for _ in range(repeats):
        for i in tracks:
            for label, job in jobs.items():
                seconds, used, outputs[label][i] = timed(lambda: job(i))
                best[label][i], cpu[label][i] = min(best[label][i], seconds), min(cpu[label][i], used)
    wall = {label: sum(times) for label, times in best.items()}
    used = {label: sum(times) for label, times in cpu.items()}
    decided = {label: [torch.as_tensor(o).argmax(1) for o in output] for label, output in outputs.items()}
    frames = sum(len(y) for y in labels)
    print(f"  {title:45s}    wall  overhead |    CPU  overhead")
    print(f"    {'plain prediction':43s} {wall['plain']:6.3f} s           | {used['plain']:6.3f} s")
    for label in list(jobs)[1:]:
        changed = sum(int((o != r).sum()) for o, r in zip(decided[label], decided["plain"]))
        gained = sum(int((o == y).sum()) - int((r == y).sum())
                     for o, r, y in zip(decided[label], decided["plain"], labels))
        print(f"    {label:43s} {wall[label]:6.3f} s  {100 * (wall[label] / wall['plain'] - 1):+6.1f} % | "
              f"{used[label]:6.3f} s  {100 * (used[label] / used['plain'] - 1):+6.1f} %  "
              f"({100 * changed / frames:.1f} % of decisions changed, accuracy {100 * gained / frames:+.1f} points)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tracks", type=int, default=20)
    parser.add_argument("--frames", type=int, default=3000)
    parser.add_argument("--train-tracks", type=int, default=40)
    parser.add_argument("--subjects", type=int, default=20)
    parser.add_argument("--train-steps", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="4 tracks x 1000 frames, one repeat")
    args = parser.parse_args(argv)
    if args.quick:
        args.tracks, args.frames, args.train_tracks, args.repeats, args.train_steps = 4, 1000, 8, 1, 10
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    centres = world(generator)
    training = synthetic_tracks(centres, args.train_tracks, args.frames, args.subjects, generator)
    held_out = synthetic_tracks(centres, args.tracks, args.frames, args.tracks, generator, first_subject=args.subjects)
    test, labels = [windows(t[0]) for t in held_out], [t[1] for t in held_out]
    mark = cpu_mark()
    print(f"{args.tracks} test tracks x {args.frames} frames, streams {DIMS}, {CLASSES} classes, "
          f"torch threads {torch.get_num_threads()}, best of {args.repeats}")
    runs = {
        "fusion_moe": [("t3a", {"k": 20}, "online"), ("t3a", {"k": 20}, "offline"), ("t3a", {"k": "all"}, "online"),
                       ("t3a", {"k": "all"}, "offline"), ("cap", {}, "online"), ("cap", {}, "offline")],
        "mlp": [("t3a", {"k": 20}, "online"), ("t3a", {"k": 20}, "offline"), ("cap", {}, "online"),
                ("cap", {}, "offline")],
    }
    folder = Path(tempfile.mkdtemp(prefix="bench-personalise-"))
    try:
        compare_heads(args, runs, training, held_out, test, labels, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    print(f"\ntarget: overhead <= 15 % of plain prediction; {others(mark)}")
    return 0


def compare_heads(args, runs, training, held_out, test, labels, folder: Path) -> None:
    """Both tables for every head of ``runs``, its test tracks' stores under ``folder``."""
    for name, configs in runs.items():
        model = create_model(name, visual={"face": DIMS["face"]}, audio={"voice": DIMS["voice"]},
                             output_size=CLASSES, hidden=128)
        train(model, training, args.train_steps)
        module, streams, tracks = predict_path(name, model, held_out, folder / name)
        with torch.inference_mode():
            start = time.perf_counter()
            source = build_source([linear_view(model, features_of(model, *windows(t[0]))).z for t in training],
                                  [t[1] for t in training], [t[2] for t in training], CLASSES)
            built = time.perf_counter() - start
            bare = {"plain": lambda i: plain(model, test[i])}
            path = {"plain": lambda i: predicted_plain(module, streams, tracks[i])}
            for method, params, mode in configs:
                label = f"{method} {','.join(f'{k}={v}' for k, v in params.items()) or 'defaults'} {mode}"
                bare[label] = (lambda i, method=method, params=params, mode=mode:
                               personalised(model, test[i], method, params, mode, source))
                path[label] = (lambda i, method=method, params=params, mode=mode:
                               predicted_personalised(module, streams, tracks[i], method, params, mode, source))
            view_dim = linear_view(model, features_of(model, *test[0])).z.shape[1]
            reference = torch.cat([bare["plain"](i) for i in range(len(test))])
            accuracy = float((reference.argmax(1) == torch.cat(labels)).float().mean())
            confident = float((entropy(reference) / math.log(CLASSES) < 0.5).float().mean())
            print(f"\n{name}: {args.train_steps} training steps, accuracy on the unseen test subjects {accuracy:.2f}, "
                  f"{100 * confident:.0f} % of frames with normalised entropy < 0.5; linear view D={view_dim}; "
                  f"source bank of {len(source.subjects)} subjects from {len(training)} tracks built in {built:.2f} s "
                  "(once per fold)")
            compare("bare forward pass (model only)", bare, args.repeats, labels)
            compare("as abaw predict runs it (store, windows, TaskModule)", path, args.repeats, labels)


if __name__ == "__main__":
    raise SystemExit(main())
