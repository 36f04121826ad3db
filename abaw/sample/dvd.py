"""The sample's DVD part: stick-figure scenes whose violent segments move fast and erratically."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from abaw.sample import render
from abaw.sample.affwild2 import write_text
from abaw.sample.plan import SIZES, draw_lines, draw_splits
from abaw.tasks import VD

DVD_TEST_VIDEOS = 2
DVD_SPLIT_DIRS = {"train": "Training", "validation": "Validation", "test": "Test"}


def write_dvd(tmp: Path, rng: np.random.Generator, labelled: int, seconds: float, manifest: dict,
               say: Callable[[str], None]) -> None:
    """DVD clips, per-frame annotations (Validation uses the Frame_Num header) and test templates."""
    splits = draw_splits(rng, labelled, max(2, round(labelled / 3)), DVD_TEST_VIDEOS)
    ids = sorted(int(i) for i in rng.choice(np.arange(1, 200), size=len(splits), replace=False))
    stats: dict[str, dict] = {}
    for index, (split, number) in enumerate(zip(splits, ids)):
        clip = f"{number:04d}"
        say(f"DVD clip {index + 1}/{len(splits)}: {clip}")
        fps = int(rng.choice([25, 30]))
        lines = draw_lines(rng, seconds, fps)
        violent = _violent_frames(rng, lines)
        folder = tmp / "DVD" / DVD_SPLIT_DIRS[split]
        path = folder / "videos" / f"{clip}.mp4"
        frames = render.render_clip(path, violent, fps, SIZES[rng.integers(len(SIZES))], rng)
        manifest["videos"][clip] = {"path": path.relative_to(tmp).as_posix(), "dataset": "dvd",
                                    "fps": float(fps), "frames": frames, "audio": "sound", "source": clip}
        manifest["tracks"][f"{VD.name}/{clip}"] = {"split": split, "video": clip, "lines": lines}
        entry = stats.setdefault(split, {"tracks": 0, "lines": 0} | ({} if split == "test" else {"positives": 0}))
        entry["tracks"] += 1
        entry["lines"] += lines
        if split == "test":
            rows = [f"{i}," for i in range(1, lines + 1)]
            write_text(folder / "templates" / f"{clip}.csv", [",".join(VD.submission_header), *rows])
        else:
            header = "Frame_Num,Label" if split == "validation" else ",".join(VD.submission_header)
            rows = [f"{i},{int(v)}" for i, v in enumerate(violent, 1)]
            write_text(folder / "annotations" / f"{clip}.csv", [header, *rows])
            entry["positives"] += int(violent.sum())
    manifest["dvd"] = stats


def _violent_frames(rng: np.random.Generator, n: int) -> np.ndarray:
    """(n,) bool: one or two violent segments covering 20-33 % of the clip, never at frame 1."""
    total = round(rng.uniform(0.2, 0.33) * n)
    pieces = [total] if rng.random() < 0.5 or total < 8 else [total // 2, total - total // 2]
    calm_before = np.sort(rng.choice(np.arange(1, n - total), size=len(pieces), replace=False))
    starts = calm_before + np.concatenate([[0], np.cumsum(pieces)[:-1]])
    violent = np.zeros(n, bool)
    for start, piece in zip(starts, pieces):
        violent[start:start + piece] = True
    return violent
