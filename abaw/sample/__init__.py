"""A procedural sample dataset in the real Aff-Wild2, DVD, EMI and BAH layouts, quirks included.

`generate` writes drawn faces whose expression parameters (eye and mouth opening, brow height
and slant, mouth curve, lip raise and press, cheek raise, head motion) evolve smoothly through
segments of expressions; the EXPR, VA and AU labels are derived from those same parameters, so
a model can learn them from the crops, and the audio follows arousal. DVD clips are scenes of
stick figures whose violent segments move fast and erratically. The files carry the traps of the
real data (ABAW_FORMATS.md): several and variable frame rates, frame counts that differ from the
annotation length, missing crops, invalid codes, a `_left`/`_right` pair, a recording cut into
two videos of the same person, silent and soundless videos, lying names. The returned manifest
records the truth a reader must recover.

Modules: :mod:`~abaw.sample.plan` (which videos, people, rates and quirks),
:mod:`~abaw.sample.face` (the face over time and its labels), :mod:`~abaw.sample.render`
(drawing and encoding), :mod:`~abaw.sample.affwild2` and :mod:`~abaw.sample.dvd` (their files),
:mod:`~abaw.sample.videos` (the video-level EMI and A/H parts).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import numpy as np

from abaw.data.records import DataError
from abaw.sample.affwild2 import write_affwild2
from abaw.sample.dvd import DVD_TEST_VIDEOS, write_dvd
from abaw.sample.plan import MIN_VIDEOS_PER_TASK, TEST_VIDEOS, plan_affwild2
from abaw.sample.videos import write_video_datasets

__all__ = ["DEFAULT_SECONDS", "DEFAULT_TRACKS", "DVD_TEST_VIDEOS", "MANIFEST", "MIN_VIDEOS_PER_TASK", "TEST_VIDEOS",
           "generate", "is_sample"]

DEFAULT_TRACKS = 10
DEFAULT_SECONDS = 6.0
MANIFEST = "sample_manifest.json"  # at the root of every generated dataset, and of no real one


def is_sample(root: str | Path) -> bool:
    """True if ``root`` is a dataset :func:`generate` wrote (it holds :data:`MANIFEST`)."""
    return (Path(root) / MANIFEST).is_file()


def generate(out: Path, seed: int = 0, tracks: int = DEFAULT_TRACKS, seconds: float = DEFAULT_SECONDS,
             progress: Callable[[str], None] | None = None) -> dict:
    """Write a complete sample dataset under `out`; return the manifest (also written to out/sample_manifest.json).

    `tracks` Aff-Wild2 recordings (one of them a `_left`/`_right` pair, one cut into two videos
    `<name>-k` and `<name>-(k+1)` of one person in one split) go to train and validation, plus
    TEST_VIDEOS test videos; DVD gets max(6, tracks * 2 // 3) train+validation clips plus
    DVD_TEST_VIDEOS test clips; EMI and BAH get their fixed-size parts of short videos
    (`abaw.sample.videos`). Durations vary ±30 % around `seconds`. The same seed gives
    identical label files and decoded frames. Refuses (DataError) an existing non-empty `out`
    and (ValueError) tracks < MIN_VIDEOS_PER_TASK or seconds <= 0; the dataset is built next to
    `out` and moved into place only when complete.
    """
    out = Path(out)
    if tracks < MIN_VIDEOS_PER_TASK:
        raise ValueError(f"tracks={tracks}: need at least {MIN_VIDEOS_PER_TASK} (one recording per CV fold)")
    if not seconds > 0:
        raise ValueError(f"seconds={seconds}: must be positive")
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise DataError(out, "exists and is not an empty directory; choose a new output folder")
    say = progress or (lambda _message: None)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        # The video-level parts draw from a fourth child: the first three, and so the Aff-Wild2
        # and DVD parts, are the same as when there were three.
        plan_seed, affwild2_seed, dvd_seed, videos_seed = np.random.SeedSequence(seed).spawn(4)
        # "tracks" names the per-track truth, so the requested count goes under its own key.
        manifest = {"seed": seed, "tracks_requested": tracks, "seconds": seconds, "videos": {}, "tracks": {}}
        plan = plan_affwild2(np.random.default_rng(plan_seed), tracks, seconds)
        write_affwild2(tmp, plan, affwild2_seed, manifest, say)
        write_dvd(tmp, np.random.default_rng(dvd_seed), max(6, tracks * 2 // 3), seconds, manifest, say)
        write_video_datasets(tmp, videos_seed, manifest, say)
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1) + "\n")
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    say(f"wrote {out}")
    return manifest


