"""The one LightningModule: loss, metrics and optimiser for one task's head on cached features."""

from __future__ import annotations

import atexit
import math

import lightning as L
import numpy as np
import torch

from abaw.metrics import score
from abaw.tasks import get_task
from abaw.training.losses import TaskLoss, decide, output_activation, to_probabilities
from fusion import create_model


class TaskModule(L.LightningModule):
    """Fusion model (and optional fallback MLP) for one task.

    Args:
        task: task name.
        streams: label -> (modality, dim) of every input stream.
        model: ``fusion.create_model`` arguments (``name`` plus overrides).
        fallback: None, or ``{"stream": label, "hidden": 128, ...}`` for an MLP on one stream.
        loss: ``label_smoothing``, ``mse`` (VA), ``balance`` (weight of the model's auxiliary loss: the router's load balance
            for ``fusion_moe``).
        optim: ``lr``, ``weight_decay``, ``warmup_fraction``.
    """

    def __init__(self, task: str, streams: dict[str, tuple[str, int]], model: dict, fallback: dict | None = None,
                 loss: dict | None = None, optim: dict | None = None) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.task = get_task(task)
        model = dict(model)
        visual = {k: d for k, (m, d) in streams.items() if m == "visual"}
        # The fusion gates every non-visual stream alike: audio, and a transcript's text rows.
        audio = {k: d for k, (m, d) in streams.items() if m != "visual"}
        activation = output_activation(self.task)
        self.model = create_model(model.pop("name"), visual=visual, audio=audio, output_size=self.task.output_size,
                                  activation=activation, **model)
        self.loss_options = {"label_smoothing": 0.0, "mse": 0.0, "balance": 0.01, **(loss or {})}
        self.optim = {"lr": 1e-3, "weight_decay": 1e-2, "warmup_fraction": 0.05, **(optim or {})}
        self.criterion = TaskLoss(self.task, None, self.loss_options["label_smoothing"], self.loss_options["mse"])
        self.fallback_stream = None
        if fallback:
            fallback = dict(fallback)
            self.fallback_stream = fallback.pop("stream")
            modality, dim = streams[self.fallback_stream]
            single = {self.fallback_stream: dim}
            self.fallback = create_model("mlp", visual=single if modality == "visual" else {},
                                         audio=single if modality == "audio" else {},
                                         output_size=self.task.output_size, activation=activation, **fallback)
        self._outputs: list = []

    def setup(self, stage: str) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized() \
                and torch.distributed.get_backend() == "gloo":
            # Lightning destroys only NCCL process groups at exit. A gloo group left to the
            # interpreter's shutdown is torn down with its threads still joinable, which aborts
            # a rank process now and then ("terminate called without an active exception").
            atexit.register(_destroy_process_group)

    def set_training_statistics(self, stats: dict, loss_weights: torch.Tensor | None) -> None:
        """Stream statistics from the training split, and class / positive weights of the loss."""
        tensors = {label: (torch.tensor(s["mean"]), torch.tensor(s["std"])) for label, s in stats.items()}
        self.model.set_stream_statistics(tensors)
        if self.fallback_stream is not None:
            self.fallback.set_stream_statistics(tensors)
        if loss_weights is not None:
            self.criterion.weights.copy_(loss_weights)

    def embed(self, batch: dict) -> torch.Tensor:
        """(B, W, F) per-frame embeddings of the fusion model (its ``forward_features``)."""
        streams = {label: x.float() for label, x in batch["streams"].items()}  # float16 from the store
        return self.model.forward_features(streams, batch["present"], batch["rows"] >= 0)

    def forward(self, batch: dict) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, W, output) of the fusion model and of the fallback MLP (None without one)."""
        return self.model.forward_head(self.embed(batch), batch["rows"] >= 0), self.fallback_output(batch)

    def fallback_output(self, batch: dict) -> torch.Tensor | None:
        """(B, W, output) of the fallback MLP on its one stream; None without one."""
        if self.fallback_stream is None:
            return None
        stream = {self.fallback_stream: batch["streams"][self.fallback_stream].float()}
        return self.fallback(stream, batch["present"], batch["rows"] >= 0)

    def _loss(self, batch: dict) -> torch.Tensor:
        output, fallback = self(batch)
        labels, valid = batch["labels"].flatten(0, 1), batch["valid"].flatten(0, 1)
        loss = self.criterion(output.flatten(0, 1), labels, valid)
        loss = loss + self.loss_options["balance"] * self.model.aux_loss()
        if fallback is not None:
            # Only frames with the fallback's input present teach it anything.
            face = batch["present"][self.fallback_stream].flatten(0, 1)
            loss = loss + self.criterion(fallback.flatten(0, 1), labels, valid & face[:, None])
        return loss

    def training_step(self, batch: dict, batch_index: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=batch["rows"].shape[0])
        return loss

    def validation_step(self, batch: dict, batch_index: int) -> None:
        output, fallback = self(batch)
        keep = batch["rows"] >= 0
        tracks = batch["track"][:, None].expand_as(batch["rows"])
        parts = [tracks[keep], batch["rows"][keep], to_probabilities(self.task, output)[keep],
                 batch["labels"][keep], batch["valid"][keep]]
        if fallback is not None:
            parts.append(to_probabilities(self.task, fallback)[keep])
        self._outputs.append([p.detach().float().cpu().numpy() for p in parts])

    def on_validation_epoch_end(self) -> None:
        parts = [np.concatenate(column) for column in zip(*self._outputs)]
        self._outputs.clear()
        if self.trainer.world_size > 1:
            # Every rank joins the gather, also one that had no validation windows (it sends
            # nothing): returning before it would leave the others waiting for ever.
            gathered: list = [None] * self.trainer.world_size
            torch.distributed.all_gather_object(gathered, parts)
            parts = [np.concatenate(column) for column in zip(*(g for g in gathered if g))]
        if not parts:
            return
        parts = deduplicate(parts)
        _, _, probabilities, labels, valid, *fallback = parts
        value = score(self.task, labels, decide(self.task, probabilities), valid).value
        self.log("val/score", value, prog_bar=True, sync_dist=False)
        if fallback:
            self.log("val/fallback_score", score(self.task, labels, decide(self.task, fallback[0]), valid).value)

    def configure_optimizers(self):
        optimizer = torch.optim.AdamW(self.parameters(), lr=self.optim["lr"], weight_decay=self.optim["weight_decay"])
        total = max(1, int(self.trainer.estimated_stepping_batches))
        warmup = max(1, int(self.optim["warmup_fraction"] * total))

        def factor(step: int) -> float:
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))

        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}


def deduplicate(parts: list[np.ndarray]) -> list[np.ndarray]:
    """Keep one row per (track, frame): a distributed sampler pads ranks with repeated windows."""
    keys = parts[0].astype(np.int64) * (1 << 32) + parts[1].astype(np.int64)
    _, first = np.unique(keys, return_index=True)
    return [p[first] for p in parts]


def _destroy_process_group() -> None:
    if torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
