"""Time `abaw inspect` on an Aff-Wild2-scale annotation tree (the annotation part).

Writes a synthetic tree with the 10th edition's sizes (EXPR 317 tracks / ~1.56 M lines,
VA 433 / ~1.2 M, AU 400 / ~1.0 M, plus test templates of 1.02 M / 0.93 M / 0.73 M rows) and
times the inspection without crops or videos. Usage: python benchmarks/bench_inspect.py [--quick]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from abaw.inspection import inspect_root
from abaw.tasks import AU, EXPR, VA

SIZES = {EXPR: (317, 1_560_000, 1_022_655), VA: (433, 1_200_000, 927_210), AU: (400, 1_000_000, 729_736)}


def write_tree(root: Path, scale: float, rng: np.random.Generator) -> int:
    lines_written = 0
    for task, (tracks, lines, test_rows) in SIZES.items():
        tracks = max(2, int(tracks * scale))
        per_track = max(10, int(lines * scale) // tracks)
        for i in range(tracks):
            split = "Train_Set" if i % 5 else "Validation_Set"
            path = root / "annotations" / task.annotation_dirs[0] / split / f"video{i}.txt"
            path.parent.mkdir(parents=True, exist_ok=True)
            if task is EXPR:
                body = "\n".join(map(str, rng.integers(-1, 8, per_track)))
            elif task is VA:
                body = "\n".join(f"{v:.3f},{a:.3f}" for v, a in rng.uniform(-1, 1, (per_track, 2)))
            else:
                body = "\n".join(",".join(map(str, row)) for row in rng.integers(0, 2, (per_track, 12)))
            path.write_text(",".join(task.labels) + "\n" + body + "\n")
            lines_written += per_track
        rows = int(test_rows * scale)
        examples = root / "test_set_examples"
        examples.mkdir(exist_ok=True)
        word = {"expr": "Expr", "va": "VA", "au": "AU"}[task.name]
        per = rows // 100
        body = "\n".join(f"test{t}/{f:05d}.jpg," for t in range(100) for f in range(1, per + 1))
        (examples / f"CVPR_6th_ABAW_{word}_test_set_example.txt").write_text(
            ",".join(task.submission_header) + "\n" + body + "\n")
        lines_written += per * 100
    return lines_written


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 %% of the real size")
    args = parser.parse_args()
    scale = 0.05 if args.quick else 1.0
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "Aff-Wild2"
        started = time.perf_counter()
        lines = write_tree(root, scale, np.random.default_rng(0))
        print(f"wrote {lines:,} annotation and template lines in {time.perf_counter() - started:.1f} s")
        started = time.perf_counter()
        stats, problems = inspect_root(root, probe_videos=False)
        elapsed = time.perf_counter() - started
        errors = [p for p in problems if p.severity == "error"]
        print(f"abaw inspect (annotations and templates, no crops/videos): {elapsed:.1f} s for {lines:,} lines "
              f"= {lines / elapsed / 1e6:.2f} M lines/s; {len(errors)} errors; load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
