"""Test-time personalisation vs plain prediction over the same tracks, in one process.

A fusion model with the demo's stream sizes (face 1280-d, voice 64-d; ``fusion_moe`` hidden
128 with 4 experts, the default EXPR head, and the ``mlp`` fallback, hidden 128) is trained
for a few steps on synthetic tracks (8 classes in stretches of 20-200 frames, a per-subject
offset, noise) so that its predictions have realistic confidence, which decides how many
frames pass CaP's gates; the test tracks are of subjects it never saw. They are predicted as
``predict_frames`` runs the model: float16 rows as the feature store holds them, windows of
32 rows, 32 windows a batch, converted to float32 in the forward; no reading from disk, so the
denominator is the bare forward and the ratio the pessimistic one.

- plain: ``forward_features`` then ``forward_head``, track by track;
- personalised: ``forward_features`` and the head's linear view track by track, then the
  method on every track's view in one call (``personalise_views``: each track on its own, the
  fixed cost of a call paid once), which computes the original logits from the view itself.

Then the same comparison as ``abaw predict`` runs it: the test tracks written to a feature
store on disk, read back through memory-mapped windows overlapping as prediction does
(``predict_track``), the fold model a ``TaskModule``, probabilities out; personalised, the same
call with ``features=True`` (the head computed through its linear view, whose z rows and
logits it keeps), then the views of every track and the method on all of them in one call,
with the face-present masks, as ``predict`` and ``abaw cv`` apply it to a fold's tracks.

The per-track jobs (plain, and the prediction that keeps the view) run ``--repeats`` times on
every track, one after the other track by track, and each one's time is the sum over tracks
of each track's fastest run; each method's call on all tracks runs once per repeat, its
fastest kept. By wall time and by this process's CPU time (steadier when other processes
share the cores; the script ends with how many cores they kept busy). Overhead =
personalised / plain − 1, target ≤ 15 %, printed with its two parts (keeping the view, the
method). The online modes are timed the same way: tracks known in advance, not a live
stream's per-frame latency. The source bank (``cap``'s training side) is built once per fold,
outside prediction: its time is printed apart. Also printed: how many frame decisions
(arg-max) each method changed and the accuracy points it gained on these tracks (synthetic
data: a check that the methods do something, not a score).

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

from abaw.personalise import build_source, entropy, linear_view, personalise, views_of_rows  # noqa: E402
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


def predicted_features(module, streams, track) -> dict:
    """The track's arrays as ``predict`` computes them when a method is applied: probabilities
    through the head's linear view, its z rows (``view``) and logits kept."""
    from abaw.training.train import predict_track

    return predict_track(module, streams, track, WINDOW, module.model.context_rows, features=True)


def personalised_arrays(module, arrays: list[dict], method: str, params: dict, mode: str, source) -> list:
    """Every track's views from its kept rows, then the method on all of them in one call, as
    ``predict`` does a fold's tracks (:func:`abaw.cv.personalised_predictions`)."""
    views = views_of_rows(module.model, [torch.from_numpy(a["view"]) for a in arrays],
                          [torch.from_numpy(a["logits"]) for a in arrays])
    return personalise(method, views, params, source=source, masks=[torch.from_numpy(a["present"]) for a in arrays])


def timed(function) -> tuple[float, float, object]:
    """(wall seconds, this process's CPU seconds, result) of one call. Under load from other
    processes the CPU time is the steadier of the two (it counts only what this process ran)."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return time.perf_counter() - wall, time.process_time() - cpu, result


def compare(title: str, plain, features, methods: dict, repeats: int, labels: list[torch.Tensor]) -> None:
    """Time plain prediction against personalised prediction and print the totals, overheads
    and what each method changed in the decisions.

    ``plain(i)`` and ``features(i)`` (the prediction that keeps what the methods need) run on
    every track in turn, ``repeats`` times, and each one's time is the sum over tracks of each
    track's fastest run (track by track the two run one after the other, so that a slow spell
    of the machine meets both). ``methods``: {label: f(features of every track) -> logits of
    every track}, one call for all tracks as ``predict`` makes it, timed ``repeats`` times
    (fastest kept). A method's time = the features total + its call."""
    tracks = range(len(labels))
    wall = {"plain": [math.inf] * len(labels), "features": [math.inf] * len(labels)}
    cpu = {label: list(times) for label, times in wall.items()}
    batch_wall, batch_cpu = {label: math.inf for label in methods}, {label: math.inf for label in methods}
    outputs: dict[str, list] = {}
    for _ in range(repeats):
        kept = []
        for i in tracks:
            for label, job in (("plain", plain), ("features", features)):
                seconds, used, result = timed(lambda: job(i))
                wall[label][i], cpu[label][i] = min(wall[label][i], seconds), min(cpu[label][i], used)
                if label == "plain":
                    outputs.setdefault("plain", [None] * len(labels))[i] = result
                else:
                    kept.append(result)
        for label, job in methods.items():
            seconds, used, outputs[label] = timed(lambda: job(kept))
            batch_wall[label], batch_cpu[label] = min(batch_wall[label], seconds), min(batch_cpu[label], used)
    plain_wall, plain_cpu = sum(wall["plain"]), sum(cpu["plain"])
    features_wall, features_cpu = sum(wall["features"]), sum(cpu["features"])
    decided = {label: [torch.as_tensor(o).argmax(1) for o in output] for label, output in outputs.items()}
    frames = sum(len(y) for y in labels)
    print(f"  {title:45s}    wall  overhead |    CPU  overhead | of which: features, method (wall)")
    print(f"    {'plain prediction':43s} {plain_wall:6.3f} s           | {plain_cpu:6.3f} s")
    for label in methods:
        total_wall, total_cpu = features_wall + batch_wall[label], features_cpu + batch_cpu[label]
        changed = sum(int((o != r).sum()) for o, r in zip(decided[label], decided["plain"]))
        gained = sum(int((o == y).sum()) - int((r == y).sum())
                     for o, r, y in zip(decided[label], decided["plain"], labels))
        print(f"    {label:43s} {total_wall:6.3f} s  {100 * (total_wall / plain_wall - 1):+6.1f} % | "
              f"{total_cpu:6.3f} s  {100 * (total_cpu / plain_cpu - 1):+6.1f} % | "
              f"{100 * (features_wall / plain_wall - 1):+5.1f} %, {100 * batch_wall[label] / plain_wall:+5.1f} %  "
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
        "fusion_moe": [("t3a", {"k": 20}, "offline"), ("t3a", {"k": "all"}, "offline"), ("cap", {}, "offline")],
        "mlp": [("t3a", {"k": 20}, "offline"), ("cap", {}, "offline")],
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
            bare, path = {}, {}
            for method, params, mode in configs:
                label = f"{method} {','.join(f'{k}={v}' for k, v in params.items()) or 'defaults'} {mode}"
                bare[label] = (lambda views, method=method, params=params, mode=mode:
                               personalise(method, views, params, source=source))
                path[label] = (lambda arrays, method=method, params=params, mode=mode:
                               personalised_arrays(module, arrays, method, params, mode, source))
            view_dim = linear_view(model, features_of(model, *test[0])).z.shape[1]
            reference = torch.cat([plain(model, test[i]) for i in range(len(test))])
            accuracy = float((reference.argmax(1) == torch.cat(labels)).float().mean())
            confident = float((entropy(reference) / math.log(CLASSES) < 0.5).float().mean())
            print(f"\n{name}: {args.train_steps} training steps, accuracy on the unseen test subjects {accuracy:.2f}, "
                  f"{100 * confident:.0f} % of frames with normalised entropy < 0.5; linear view D={view_dim}; "
                  f"source bank of {len(source.subjects)} subjects from {len(training)} tracks built in {built:.2f} s "
                  "(once per fold)")
            compare("bare forward pass (model only)", lambda i: plain(model, test[i]),
                    lambda i: linear_view(model, features_of(model, *test[i])), bare, args.repeats, labels)
            compare("as abaw predict runs it (store, windows, TaskModule)",
                    lambda i: predicted_plain(module, streams, tracks[i]),
                    lambda i: predicted_features(module, streams, tracks[i]), path, args.repeats, labels)


if __name__ == "__main__":
    raise SystemExit(main())
