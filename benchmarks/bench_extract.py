"""Visual extraction end to end vs the bare model forward, in one process, side by side.

End to end is ``features.extract.extract_visual`` on Aff-Wild2-style jobs over a folder of
generated 112x112 JPEG face crops: JPEG decode -> multi-scale crops -> resize -> normalise ->
collate -> ``extractor.embed`` -> feature store write (float16, sha256, fsync). The model
reference is ``extractor.embed`` (and the bare ``extractor.model`` forward) on pre-made tensors
of the same batch and input size (``embed`` includes normalising the uint8 crops on the model's
device; the bare forward takes normalised floats). The ratio is end-to-end frames/s over model
frames/s; the model is timed before and after the end-to-end runs and their mean is the
reference. A stage profile (single process, ms per frame) says where the rest of the time goes.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_extract.py [--configs vits,b0,lite0,dino_tiny]
        [--workers 0,1,2] [--frames N] [--quick]
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402

from abaw.config import load_config  # noqa: E402
from features.crops import multiscale_crops  # noqa: E402
from features.extract import Job, extract_visual  # noqa: E402
from features.specs import create_extractor  # noqa: E402
from features.store import FeatureStore, _sha256  # noqa: E402
from features.visual import make_preprocess  # noqa: E402
from machine import cpu_mark, load, others  # noqa: E402  (benchmarks/, the script's folder)

VITS = {"hidden_size": 384, "num_hidden_layers": 12, "num_attention_heads": 6, "intermediate_size": 1536,
        "patch_size": 14, "image_size": 224}
# The demo's extractors (configs/extract/sample.yaml): face is Lite0, dino_tiny the tiny DINOv2.
SAMPLE = load_config(ROOT / "configs" / "extract" / "sample.yaml").extract.extractors()
# name -> (registry entry, overrides, default frames)
CONFIGS = {
    "vits": ("dinov2", {"config": VITS, "input_size": 224}, 320),
    "b0": ("efficientnet", {"model": "efficientnet_b0", "input_size": 224}, 480),
    "lite0": (*SAMPLE["face"], 960),
    "dino_tiny": (*SAMPLE["dino_tiny"], 960),
}


def write_crops(folder: Path, count: int, seed: int = 0) -> None:
    """``count`` 112x112 JPEGs ``00001.jpg``... : a face-like blob drifting over a textured background."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    yy, xx = np.mgrid[:112, :112].astype(np.float32)
    for i in range(count):
        cx, cy = 56 + 8 * np.sin(i / 15), 56 + 6 * np.cos(i / 11)
        face = np.exp(-(((xx - cx) / 30) ** 2 + ((yy - cy) / 38) ** 2))
        base = np.stack([90 + 120 * face + 20 * np.sin(xx / 7 + i / 5), 70 + 100 * face + 15 * np.cos(yy / 5),
                         60 + 80 * face + 10 * np.sin((xx + yy) / 9)], axis=-1)
        image = (base + rng.normal(0, 6, base.shape)).clip(0, 255).astype(np.uint8)
        Image.fromarray(image).save(folder / f"{i + 1:05d}.jpg", quality=95)


class Clocked:
    """The extractor as ``extract_visual`` sees it, recording (start, end, frames) of each embed."""

    def __init__(self, extractor) -> None:
        self.inner, self.spec, self.output_dims = extractor, extractor.spec, extractor.output_dims
        self.calls: list[tuple[float, float, int]] = []

    def embed(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        start = time.perf_counter()
        out = self.inner.embed(batch)
        self.calls.append((start, time.perf_counter(), len(batch)))
        return out


def model_rate(extractor, sizes: list[int], bare: bool = False) -> float:
    """Frames/s of ``embed`` (or the bare model forward) over batches of ``sizes`` frames."""
    spec = extractor.spec
    s, n = len(spec.scales), spec.input_size
    x = torch.randint(0, 256, (max(sizes), s, 3, n, n), dtype=torch.uint8)  # crops as workers send them
    model, normalised = extractor.model, extractor.normalise(x)

    def run(b: int) -> None:
        if not bare:
            extractor.embed(x[:b])
            return
        images = normalised[:b].reshape(b * s, 3, n, n)
        with torch.inference_mode():
            if spec.name == "dinov2":
                model(pixel_values=images)
            else:
                model(images.contiguous(memory_format=torch.channels_last))

    run(min(sizes))  # warm-up
    start = time.perf_counter()
    for b in sizes:
        run(b)
    return sum(sizes) / (time.perf_counter() - start)


def end_to_end(extractor, jobs: list[Job], workers: int, root: Path) -> dict:
    folder = Path(tempfile.mkdtemp(prefix="store-", dir=root))
    clocked = Clocked(extractor)
    start = time.perf_counter()
    outcome = extract_visual(clocked, jobs, FeatureStore(folder), lambda m: None, torch.device("cpu"), workers)
    wall = time.perf_counter() - start
    assert not outcome.failed and len(outcome.written) == len(jobs), outcome
    shutil.rmtree(folder)
    calls = clocked.calls
    frames = sum(c[2] for c in calls)
    steady = sum(c[2] for c in calls[1:]) / max(calls[-1][1] - calls[0][1], 1e-9) if len(calls) > 1 else float("nan")
    return {"rate": frames / wall, "steady": steady, "startup": calls[0][0] - start,
            "busy": sum(c[1] - c[0] for c in calls) / wall, "wall": wall}


def timeit(fn, repeat: int) -> float:
    fn()
    start = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - start) / repeat


def profile(extractor, crop_dir: Path, track_frames: int, model_ms: float, root: Path) -> None:
    """ms per frame of each stage, in this process (no workers)."""
    mark = cpu_mark()
    spec, preprocess = extractor.spec, make_preprocess(extractor.spec)
    paths = sorted(crop_dir.glob("*.jpg"))[:64]
    images = [np.asarray(Image.open(p).convert("RGB")) for p in paths]
    n = len(paths)
    decode = timeit(lambda: [np.asarray(Image.open(p).convert("RGB")) for p in paths], 3) / n
    crops = timeit(lambda: [multiscale_crops(im, spec.scales, spec.input_size, None, spec.interpolation)
                            for im in images], 3) / n
    made = [multiscale_crops(im, spec.scales, spec.input_size, None, spec.interpolation) for im in images]
    chw = timeit(lambda: [torch.from_numpy(np.ascontiguousarray(c.transpose(0, 3, 1, 2))) for c in made], 3) / n
    tensors = [preprocess(im) for im in images[:spec.batch_size]]
    collate = timeit(lambda: torch.stack(tensors), 5) / len(tensors)
    batch = torch.stack(tensors)
    share = timeit(lambda: batch.clone().share_memory_(), 5) / len(tensors) - timeit(lambda: batch.clone(), 5) / len(tensors)
    normalise = timeit(lambda: extractor.normalise(batch), 5) / len(tensors)
    store = FeatureStore(Path(tempfile.mkdtemp(prefix="profile-", dir=root)))
    feats = np.random.default_rng(0).standard_normal((track_frames, extractor.output_dims["features"])).astype(np.float32)
    counter = iter(range(10**6))
    write = timeit(lambda: store.write(f"t{next(counter)}", feats, np.ones(track_frames, bool)), 3) / track_frames
    sha = timeit(lambda: _sha256(store.file("t0")), 3) / track_frames
    shutil.rmtree(store.folder)
    stages = [("JPEG decode (PIL)", decode), ("crops + resize (PIL)", crops), ("to CHW tensor", chw),
              ("collate (torch.stack, uint8)", collate), ("to shared memory (workers only)", max(share, 0.0)),
              ("normalise per batch (in embed)", normalise), ("store write per frame (incl. sha256)", write),
              ("  of which sha256", sha)]
    print(f"  stage profile, ms per frame ({n} crops, {track_frames}-frame track):")
    for name, seconds in stages:
        print(f"    {name:<38} {seconds * 1e3:8.3f}")
    cpu = decode + crops + chw + collate + write  # normalise is part of the model (embed) time
    print(f"    {'model (embed, incl. normalise)':<38} {model_ms:8.3f}")
    print(f"    non-model work w/o workers {cpu * 1e3:.3f} ms/frame -> predicted ratio "
          f"{model_ms / (model_ms + cpu * 1e3):.3f}; batch of uint8 crops {batch.numel() / 2**20:.1f} MiB "
          f"(float32 would be {batch.numel() * 4 / 2**20:.1f} MiB); {others(mark)}")


def run_config(label: str, frames: int, workers: list[int], track_frames: int, crop_dir: Path, root: Path,
               batch: int, do_profile: bool) -> None:
    name, overrides, _ = CONFIGS[label]
    extractor = create_extractor(name, **overrides, batch_size=batch, device="cpu")
    spec = extractor.spec
    counts = [track_frames] * (frames // track_frames) + ([frames % track_frames] if frames % track_frames else [])
    jobs = [Job(f"track{i:03d}", n, None, crop_dir, np.ones(n, bool)) for i, n in enumerate(counts)]
    sizes = [min(batch, n - i) for n in counts for i in range(0, n, batch)]  # the pipeline's batches
    params = sum(p.numel() for p in extractor.model.parameters()) / 1e6
    print(f"\n[{label}] {name} {params:.1f} M params, input {spec.input_size}, scales {list(spec.scales)}, "
          f"batch {batch}, {frames} frames in {len(jobs)} tracks, torch threads {torch.get_num_threads()}")
    # The model is timed between end-to-end runs; each ratio uses the mean of the two around it.
    model = []

    def time_model(bare: bool = False) -> None:
        mark = cpu_mark()
        model.append(model_rate(extractor, sizes[:4]))
        extra = f"   bare model forward {model_rate(extractor, sizes[:2], bare=True):8.2f} frames/s" if bare else ""
        print(f"  model embed (pre-made tensors):  {model[-1]:8.2f} frames/s{extra}   ({others(mark)})", flush=True)

    time_model(bare=True)
    results = {}
    for w in workers:
        mark = cpu_mark()
        r = results[w] = end_to_end(extractor, jobs, w, root)
        print(f"  end to end, num_workers={w}:     {r['rate']:8.2f} frames/s   steady {r['steady']:8.2f}   "
              f"startup {r['startup']:5.2f} s   model busy {r['busy']:5.1%} of {r['wall']:.1f} s   ({others(mark)})",
              flush=True)
        time_model()
        r["reference"] = (model[-2] + model[-1]) / 2
    for w, r in results.items():
        print(f"  ratio end-to-end / model, num_workers={w}: {r['rate'] / r['reference']:.3f} "
              f"(steady state {r['steady'] / r['reference']:.3f}; target >= 0.9)")
    reference = sum(model) / len(model)
    best = max(results, key=lambda w: results[w]["rate"])
    print(f"  best: num_workers={best}")
    if do_profile:
        profile(extractor, crop_dir, track_frames, 1e3 / reference, root)


def batch_one(frames: int, batch: int) -> None:
    """ViT-S embed: a per-frame loop at batch 1 vs batches of ``batch``."""
    name, overrides, _ = CONFIGS["vits"]
    extractor = create_extractor(name, **overrides, device="cpu")
    s, n = len(extractor.spec.scales), extractor.spec.input_size
    x = torch.randint(0, 256, (max(frames, batch), s, 3, n, n), dtype=torch.uint8)
    extractor.embed(x[:1])
    mark = cpu_mark()
    start = time.perf_counter()
    for i in range(frames):
        extractor.embed(x[i:i + 1])
    one = frames / (time.perf_counter() - start)
    many = model_rate(extractor, [batch] * max(1, frames // batch))
    middle = model_rate(extractor, [8] * max(1, frames // 8))
    print(f"\n[vits] per-frame loop, batch 1: {one:.2f} frames/s; batch 8: {middle:.2f}; batch {batch}: {many:.2f} "
          f"frames/s; batch {batch} / batch 1 = {many / one:.2f}x ({s} scales, {others(mark)})")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", default="vits,b0,lite0,dino_tiny", help=f"comma list of {', '.join(CONFIGS)}")
    parser.add_argument("--workers", default="0,1,2", help="num_workers values to try")
    parser.add_argument("--frames", type=int, default=None, help="frames per config (default: per config)")
    parser.add_argument("--track-frames", type=int, default=160, help="frames per track (one store write each)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batch1-frames", type=int, default=32, help="ViT-S batch-1 loop length (0: skip)")
    parser.add_argument("--no-profile", action="store_true")
    parser.add_argument("--quick", action="store_true", help="smoke test: tiny configs, 96 frames, workers 0,1")
    args = parser.parse_args(argv)
    if args.quick:
        args.configs, args.workers, args.frames, args.batch1_frames, args.track_frames = "lite0,dino_tiny", "0,1", 96, 0, 48
    labels = args.configs.split(",")
    unknown = set(labels) - set(CONFIGS)
    if unknown:
        parser.error(f"unknown config(s) {', '.join(sorted(unknown))}; valid: {', '.join(CONFIGS)}")
    workers = [int(w) for w in args.workers.split(",")]
    print(f"visual extraction end to end vs model, cpu, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}, {load()}")
    with tempfile.TemporaryDirectory(prefix="bench_extract-") as tmp:
        root = Path(tmp)
        frames = {label: args.frames or CONFIGS[label][2] for label in labels}
        crop_dir = root / "cropped_aligned" / "video1"
        start = time.perf_counter()
        write_crops(crop_dir, args.track_frames)
        size = sum(p.stat().st_size for p in crop_dir.iterdir()) / args.track_frames
        print(f"{args.track_frames} JPEG crops 112x112 (mean {size / 1024:.1f} KiB) written in "
              f"{time.perf_counter() - start:.1f} s; every track reads them")
        for label in labels:
            run_config(label, frames[label], workers, args.track_frames, crop_dir, root, args.batch, not args.no_profile)
    if args.batch1_frames:
        batch_one(args.batch1_frames, args.batch)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
