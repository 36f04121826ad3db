"""What long stages print: the time-left estimate and the progress lines (driven by a clock moved
by hand), and the epoch lines of a fit that early stopping ends."""

import lightning as L
import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping
from torch.utils.data import DataLoader, TensorDataset

from abaw.training.epochlog import EpochLog
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


class Scores(L.LightningModule):
    """A module whose val/score is ``scores[epoch]``: the fit the callbacks see, in a second."""

    def __init__(self, scores: list[float]) -> None:
        super().__init__()
        self.scores, self.layer = scores, torch.nn.Linear(1, 1)

    def training_step(self, batch, index):
        return self.layer(batch[0]).pow(2).mean()

    def validation_step(self, batch, index):
        self.log("val/score", self.scores[self.current_epoch])

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)


def fit_lines(scores: list[float], patience: int) -> list[str]:
    """The lines EpochLog writes (every epoch) in a fit of ``Scores(scores)`` under early stopping."""
    lines: list[str] = []
    data = DataLoader(TensorDataset(torch.zeros(4, 1)), batch_size=4)
    trainer = L.Trainer(max_epochs=len(scores), accelerator="cpu", logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                        callbacks=[EpochLog("EXPR", lines.append, every=0.0),
                                   EarlyStopping(monitor="val/score", mode="max", patience=patience)])
    trainer.fit(Scores(scores), data, data)
    return lines


def test_early_stopping_says_when_and_why_it_stopped():
    lines = fit_lines([0.1, 0.3, 0.2, 0.25, 0.3, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1], patience=3)
    assert lines[-2].startswith("EXPR epoch 5/12: ")
    assert lines[-1] == ("EXPR stopped early at epoch 5/12: val/score did not improve for 3 epochs "
                         "(best 0.3000 at epoch 2)")


def test_a_fit_that_runs_its_epochs_says_nothing_of_stopping():
    lines = fit_lines([0.1, 0.2, 0.3], patience=2)
    assert lines[-1].startswith("EXPR epoch 3/3: ") and not any("stopped" in line for line in lines)
