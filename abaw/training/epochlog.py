"""The lines a fit prints: one per epoch (:class:`EpochLog`), why it stopped early, and nothing
of Lightning's that is not about the run (:func:`quiet_lightning`, applied at import)."""

from __future__ import annotations

import logging
import time
import warnings

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback, EarlyStopping
from lightning.pytorch.callbacks.early_stopping import EarlyStoppingReason

from abaw.runtime import Log, stderr_log


# Seconds between two epoch lines: real epochs (minutes) get one line each, while the many
# short fits of a cross-validation on the sample print one or two lines, even on a busy machine.
EPOCH_LOG_EVERY = 30.0


class _NotAboutTheRun(logging.Filter):
    """Drops Lightning's info messages that say nothing about the user's run: advertisements,
    which accelerators the machine has, an internal step, and the max-epochs stop notice (the
    epoch log already says "epoch 12/12"). Everything else Lightning says still comes through."""

    PREFIXES = ("💡 Tip:", "GPU available:", "TPU available:", "HPU available:",
                "Loading `train_dataloader` to estimate", "`Trainer.fit` stopped: `max_epochs=")

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(self.PREFIXES)


_QUIET = _NotAboutTheRun()


def quiet_lightning() -> None:
    """Silence the parts of Lightning's output that are not about the run (idempotent)."""
    # rank_zero_info goes through whichever of these two loggers lightning_utilities was last
    # pointed at; a filter on a logger sees only the records logged on it, so both get one.
    for name in ("lightning.pytorch.utilities.rank_zero", "lightning.fabric.utilities.rank_zero"):
        logging.getLogger(name).addFilter(_QUIET)
    # Its only info message is "LOCAL_RANK: 0 - CUDA_VISIBLE_DEVICES: [...]", once per fit.
    logging.getLogger("lightning.pytorch.accelerators.cuda").setLevel(logging.WARNING)
    # Lightning's own pytree helper builds torch's deprecated LeafSpec; nothing this project calls.
    warnings.filterwarnings("ignore", message=r"`isinstance\(treespec, LeafSpec\)` is deprecated",
                            category=FutureWarning, module=r"lightning\.pytorch\.utilities\._pytree")


# At import, so that spawned DDP workers, which import this module to unpickle EpochLog, are quiet too.
quiet_lightning()


class EpochLog(Callback):
    """Logs ``<prefix> epoch 3/12: train loss 0.812, val/score 0.4123`` (the epoch's mean
    training loss, the validation score after it) at most once every ``every`` seconds, and
    the fit's last epoch unless ``last`` is False. The first line also carries ``context`` (what is trained on),
    so that a fit shorter than ``every`` takes one line in all. A fit that early stopping ends
    says so in a last line: ``<prefix> stopped early at epoch 6/12: val/score did not improve
    for 5 epochs (best 0.4123 at epoch 1)``."""

    def __init__(self, prefix: str, log: Log, every: float = EPOCH_LOG_EVERY, context: str = "",
                 last: bool = True) -> None:
        # Not ``self.log``: Lightning sets that attribute of every callback to the module's log().
        self.prefix, self.write, self.every, self.context = prefix, log, every, context
        self.last = last  # False: the caller reports the fit's end itself (cross-validation)
        self.last_line: str | None = None
        self._logged = True
        self._last_time = 0.0
        self._loss_sum: torch.Tensor | float = 0.0
        self._batches = 0
        self._epoch, self._epochs = 0, None  # the last epoch ended (1-based), of how many
        self._best: tuple[float, int] | None = None  # the best val/score and its epoch

    def __getstate__(self) -> dict:
        # Spawned DDP workers get a pickled copy: a closure does not pickle, and a worker's
        # output goes to its own stderr anyway.
        return {**self.__dict__, "write": stderr_log}

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._last_time = time.monotonic()

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self._loss_sum, self._batches = 0.0, 0

    def on_train_batch_end(self, trainer: L.Trainer, module: L.LightningModule, outputs, batch,
                           batch_index: int) -> None:
        loss = outputs["loss"] if isinstance(outputs, dict) else outputs
        if loss is not None:
            self._loss_sum = self._loss_sum + loss.detach()  # summed on the device: no sync per batch
            self._batches += 1

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        epochs = trainer.max_epochs if trainer.max_epochs and trainer.max_epochs > 0 else None
        parts = []
        if self._batches:
            parts.append(f"train loss {float(self._loss_sum) / self._batches:.3f}")
        score = trainer.callback_metrics.get("val/score")
        self._epoch, self._epochs = trainer.current_epoch + 1, epochs
        if score is not None:
            parts.append(f"val/score {float(score):.4f}")
            if self._best is None or float(score) > self._best[0]:  # as EarlyStopping(mode="max") counts
                self._best = (float(score), self._epoch)
        self.last_line = (f"{self.prefix} epoch {self._epoch}{f'/{epochs}' if epochs else ''}: "
                          f"{', '.join(parts) or 'no batches'}")
        self._logged = False
        if time.monotonic() - self._last_time >= self.every:
            self._emit()

    def on_train_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        if self.last and not self._logged:
            self._emit()
        stopper = trainer.early_stopping_callback
        if stopper is not None and stopper.stopping_reason != EarlyStoppingReason.NOT_STOPPED:
            self.write(self.stop_line(stopper))

    def stop_line(self, stopper: EarlyStopping) -> str:
        """Why ``stopper`` ended the fit after the last epoch logged."""
        where = f"{self.prefix} stopped early at epoch {self._epoch}{f'/{self._epochs}' if self._epochs else ''}"
        if stopper.stopping_reason != EarlyStoppingReason.PATIENCE_EXHAUSTED:
            return f"{where}: {stopper.stopping_reason_message}"
        # The stopper's best survives a resumed fit; the epoch is known when this fit saw it.
        best = float(stopper.best_score)
        epoch = f" at epoch {self._best[1]}" if self._best is not None and self._best[0] == best else ""
        return f"{where}: {stopper.monitor} did not improve for {stopper.wait_count} epochs (best {best:.4f}{epoch})"

    def _emit(self) -> None:
        self.write(f"{self.last_line} ({self.context})" if self.context else self.last_line)
        self._logged, self._last_time, self.context = True, time.monotonic(), ""
