"""The time-left estimate and the progress lines, driven by a clock moved by hand."""

import pytest

from features.progress import ProgressLog, TimeLeft, duration


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_no_estimate_until_enough_work_and_then_none_spoilt_by_the_start_up():
    clock = Clock()
    left = TimeLeft(10_000, clock, min_seconds=5.0, min_updates=2)
    clock.now = 30.0  # 30 s of start-up (workers, weights) before the first batch of 100 rows
    left.update(100)
    assert left.seconds() is None and left.rate() is None
    for second in range(1, 5):  # then 100 rows a second, but for less than 5 s
        clock.now = 30.0 + second
        left.update(100)
        assert left.seconds() is None
    clock.now = 35.0
    left.update(100)
    assert left.rate() == pytest.approx(100.0)  # the start-up is not in it (a rate from t=0: 17/s)
    assert left.seconds() == pytest.approx((10_000 - 600) / 100)


def test_one_update_after_a_long_wait_is_not_enough():
    clock = Clock()
    left = TimeLeft(1_000, clock, min_seconds=5.0, min_updates=2)
    left.update(10)
    clock.now = 60.0
    left.update(10)  # one interval is not a rate yet, however long
    assert left.seconds() is None
    clock.now = 61.0
    left.update(10)
    assert left.seconds() is not None


def test_the_rate_follows_the_recent_window():
    clock = Clock()
    left = TimeLeft(100_000, clock, window=60.0, min_seconds=5.0)
    for second in range(1, 121):  # 10 rows/s for two minutes
        clock.now = float(second)
        left.update(10)
    assert left.rate() == pytest.approx(10.0)
    for second in range(121, 301):  # then 50 rows/s
        clock.now = float(second)
        left.update(50)
    assert left.rate() == pytest.approx(50.0)  # the slow start no longer counts
    assert left.seconds() == pytest.approx((100_000 - 1_200 - 9_000) / 50)


def test_zero_units_teach_nothing():
    clock = Clock()
    left = TimeLeft(100, clock)
    for second in range(10):
        clock.now = float(second)
        left.update(0)
    assert left.seconds() is None and left.done == 0


def test_durations_are_read_at_a_glance():
    assert [duration(s) for s in (4.4, 89, 600, 5_399, 9_000)] == ["4 s", "89 s", "10 min", "90 min", "2.5 h"]


def test_progress_lines_withhold_the_eta_until_it_means_something():
    clock, lines = Clock(), []
    progress = ProgressLog(lines.append, total_tracks=4, total_rows=3_000, every=10.0, clock=clock)
    clock.now = 9.0
    progress.update(rows=100)  # the first batch, after 9 s of start-up: no line yet
    clock.now = 10.0
    progress.update(rows=100)
    assert lines == ["  0/4 tracks, 200/3000 frames"]  # no rate, no ETA from one interval
    for second in range(11, 21):
        clock.now = float(second)
        progress.update(rows=100, tracks=1 if second == 20 else 0)
    assert lines[-1] == "  1/4 tracks, 1200/3000 frames, 100.0 frames/s, ETA 18 s"
    clock.now = 30.0
    progress.update(rows=1_800, tracks=3)
    progress.finish()
    assert lines[-1] == "  4/4 tracks, 3000/3000 frames"  # done: nothing left to estimate
