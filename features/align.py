"""Put time-stamped feature steps (audio model outputs) onto a video's frame timestamps.

Audio models emit steps on their own clock (every 10 ms for log-mel, every 20 ms for
wav2vec2); fusion needs one row per video frame. Each frame takes the mean of the steps near
its time, so every modality ends up with the same T rows whatever the video's frame rate, and
variable-frame-rate videos are handled by using each frame's own time rather than index/fps.
"""

from __future__ import annotations

import numpy as np

# Column block for the running sums: float64 cumulative sums keep long tracks exact
# (20 min of 1024-d wav2vec2 steps would lose ~1e-3 in float32) without holding an (S, D)
# float64 copy of a large array at once.
_COLUMN_BLOCK = 256


def pool_to_frames(step_times: np.ndarray, steps: np.ndarray, frame_times: np.ndarray, window: float) -> np.ndarray:
    """Mean-pool feature steps onto frames.

    Args:
        step_times: (S,) time in seconds of each step, non-decreasing.
        steps: (S, D) features of the steps.
        frame_times: (T,) time in seconds of each frame (any order, any spacing).
        window: half-width in seconds; a frame at ``t`` averages the steps with
            ``t - window <= time <= t + window``. A frame with no step in its window takes the
            nearest step (the earlier one on a tie).

    Returns:
        (T, D) float32.
    """
    step_times = np.asarray(step_times, dtype=np.float64).reshape(-1)
    frame_times = np.asarray(frame_times, dtype=np.float64).reshape(-1)
    steps = np.asarray(steps)
    if steps.ndim != 2 or steps.shape[0] != step_times.shape[0]:
        raise ValueError(f"steps must be (S, D) with S = len(step_times) = {len(step_times)}; got {steps.shape}")
    if len(step_times) == 0:
        raise ValueError("pool_to_frames needs at least one step")
    if window < 0:
        raise ValueError(f"window must be >= 0 seconds; got {window}")
    if np.any(np.diff(step_times) < 0):
        raise ValueError("step_times must be non-decreasing")

    lo = np.searchsorted(step_times, frame_times - window, side="left")
    hi = np.searchsorted(step_times, frame_times + window, side="right")
    count = hi - lo
    empty = count == 0

    # Nearest step for frames whose window is empty: compare the neighbours either side.
    right = np.clip(np.searchsorted(step_times, frame_times, side="left"), 0, len(step_times) - 1)
    left = np.clip(right - 1, 0, len(step_times) - 1)
    take_left = np.abs(frame_times - step_times[left]) <= np.abs(step_times[right] - frame_times)
    nearest = np.where(take_left, left, right)

    out = np.empty((len(frame_times), steps.shape[1]), dtype=np.float32)
    denom = np.maximum(count, 1)[:, None]
    for start in range(0, steps.shape[1], _COLUMN_BLOCK):
        block = steps[:, start:start + _COLUMN_BLOCK].astype(np.float64)
        csum = np.zeros((len(block) + 1, block.shape[1]), dtype=np.float64)
        np.cumsum(block, axis=0, out=csum[1:])
        mean = (csum[hi] - csum[lo]) / denom
        mean[empty] = block[nearest[empty]]
        out[:, start:start + _COLUMN_BLOCK] = mean
    return out
