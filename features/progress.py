"""Progress lines of long loops, and the estimate of the time left they print.

Both read time from a ``clock`` (seconds, :func:`time.monotonic` by default) that a caller can
replace, so that what they say after a given amount of work in a given time is tested with a
clock moved by hand rather than by waiting.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

Clock = Callable[[], float]


class TimeLeft:
    """The time left of a job of ``total`` units, from its recent throughput.

    A stage does its first units only after its start-up (workers spawned, weights loaded, the
    first batch compiled): a rate measured from the start would promise minutes for a job of
    seconds. So the clock starts at the first update that reports work, the rate is that of the
    last ``window`` seconds of updates (a rate that changes is followed), and no estimate is
    given until ``min_updates`` further updates and ``min_seconds`` have passed since then.
    """

    def __init__(self, total: float, clock: Clock = time.monotonic, window: float = 60.0,
                 min_seconds: float = 5.0, min_updates: int = 2) -> None:
        self.total, self.clock, self.window = total, clock, window
        self.min_seconds, self.min_updates = min_seconds, min_updates
        self.done = 0.0
        self._started: float | None = None  # when the first work was reported
        self._updates = 0  # updates with work since then
        # (time, units done) of the updates with work; the oldest is the last one at least
        # ``window`` seconds old, so the rate spans the whole window once there is one.
        self._samples: deque[tuple[float, float]] = deque()

    def update(self, units: float) -> None:
        """Count ``units`` more done, now (zero units: nothing to learn from)."""
        if units <= 0:
            return
        self.done += units
        now = self.clock()
        if self._started is None:
            self._started = now
        else:
            self._updates += 1
        self._samples.append((now, self.done))
        while len(self._samples) > 2 and self._samples[1][0] <= now - self.window:
            self._samples.popleft()

    def rate(self) -> float | None:
        """Units per second over the recent updates; None while there is too little to tell."""
        if self._started is None or self._updates < self.min_updates:
            return None
        (first, done_then), (last, done_now) = self._samples[0], self._samples[-1]
        if last - self._started < self.min_seconds or last <= first:
            return None
        return (done_now - done_then) / (last - first)

    def seconds(self) -> float | None:
        """Seconds left at the recent rate; None while there is too little to tell."""
        rate = self.rate()
        return None if rate is None else max(0.0, self.total - self.done) / rate


def duration(seconds: float) -> str:
    """``45 s``, ``12 min``, ``2.5 h``."""
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 90 * 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


class ProgressLog:
    """Logs ``  3/10 tracks, 1200/5000 frames, 45.2 frames/s, ETA 84 s`` at most once every
    ``every`` seconds of a stage of ``total_tracks`` tracks and ``total_rows`` frames; the rate
    and the ETA (:class:`TimeLeft`) once there is enough work to tell them."""

    def __init__(self, log: Callable[[str], None], total_tracks: int, total_rows: int, every: float = 10.0,
                 clock: Clock = time.monotonic) -> None:
        self.log, self.every, self.clock = log, every, clock
        self.total_tracks, self.total_rows = total_tracks, total_rows
        self.left = TimeLeft(total_rows, clock)
        self.last = clock()
        self.tracks = self.rows = 0
        self.shown = False

    def update(self, rows: int = 0, tracks: int = 0, force: bool = False) -> None:
        self.rows += rows
        self.tracks += tracks
        self.left.update(rows)
        now = self.clock()
        if force or now - self.last >= self.every:
            line = f"  {self.tracks}/{self.total_tracks} tracks, {self.rows}/{self.total_rows} frames"
            rate, seconds = self.left.rate(), self.left.seconds()
            if rate is not None and seconds is not None and self.rows < self.total_rows:
                line += f", {rate:.1f} frames/s, ETA {duration(seconds)}"
            self.log(line)
            self.last, self.shown = now, True

    def finish(self) -> None:
        """The final count, for a run long enough to have shown progress (a short one's summary
        line says it all)."""
        if self.shown:
            self.update(force=True)
