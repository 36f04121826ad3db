"""Video-level training data and head (EMI, A/H): one sample is one video, one label row.

A video of any length trains on ``train.frames_per_video`` of its frames, spread evenly over
the whole video from a random offset each time it is drawn (so every epoch sees other frames
and the whole video is always covered); prediction reads every frame. Frames are padded to the
longest video of a batch and the pooling models (:mod:`fusion.pooling`) pool the unpadded
frames with any input only.

The LightningModule is :class:`abaw.training.module.TaskModule` with the video's forward, loss
(:class:`abaw.training.losses.VideoLoss`) and validation rows: one row per video, so the
epoch's validation score, its gathering across ranks and its metric are the frame-wise
module's own.
"""

from __future__ import annotations

import numpy as np
import torch

from abaw.config import Config
from abaw.data.records import Track
from abaw.tasks import Task, get_task
from abaw.training.data import Stream, WindowDataset, check_fresh, open_streams
from abaw.training.losses import VideoLoss, class_weights, to_probabilities
from abaw.training.module import TaskModule


class VideoDataset(WindowDataset):
    """One item per video: ``streams`` label -> (n, D) float16 rows, ``present`` label -> (n,)
    bool, ``mask`` (n,) True, ``labels`` (C,) float32 and ``valid`` (C,) bool (False for a test
    video), ``track`` its index; ``n`` = ``frames`` sampled rows (every row when None or when
    the video is shorter). Rows are the feature store's: one per displayed frame."""

    def __init__(self, tracks: list[Track], streams: dict[str, Stream], frames: int | None, draws: int = 1) -> None:
        # Each video ``draws`` times an epoch: a video is one sample, and a few dozen videos
        # would make epochs of a handful of steps.
        super().__init__(tracks, streams, window=frames or 1,
                         starts=[(i, 0) for _ in range(max(1, draws)) for i in range(len(tracks))])
        self.frames = frames
        # Every stream of a video has its displayed frames as rows; the shortest bounds a read.
        self._rows = {t.id: min(int(s.store.record(t.id)["frames"]) for s in streams.values()) for t in tracks}

    def rows_of(self, track: Track) -> int:
        return self._rows[track.id]

    def sample(self, rows: int) -> np.ndarray:
        """The rows one draw of a video of ``rows`` rows reads: ``frames`` evenly spaced from a
        random offset (torch's generator, which Lightning seeds), or all of them."""
        if self.frames is None or rows <= self.frames:
            return np.arange(rows)
        step = rows / self.frames
        offset = float(torch.rand(())) * step
        return np.minimum(np.floor(offset + step * np.arange(self.frames)).astype(np.int64), rows - 1)

    def __getitem__(self, item: int) -> dict:
        index = self.items[item][0]
        track = self.tracks[index]
        rows = self.sample(self.rows_of(track))
        item = {"streams": {}, "present": {}, "track": index, "mask": torch.ones(len(rows), dtype=torch.bool)}
        for label, stream in self.streams.items():
            item["streams"][label] = torch.from_numpy(np.ascontiguousarray(self._features(stream, track.id)[rows]))
            item["present"][label] = torch.from_numpy(np.asarray(self._valid(stream, track.id)[rows], dtype=bool))
        columns = get_task(track.task).columns  # a test video has no labels: zeros, all invalid
        labels = track.labels[0] if track.labels is not None else np.zeros(columns, np.float32)
        valid = track.valid[0] if track.valid is not None else np.zeros(columns, bool)
        item["labels"], item["valid"] = torch.from_numpy(labels.astype(np.float32)), torch.from_numpy(valid)
        return item

    @staticmethod
    def collate(items: list[dict]) -> dict:
        """A batch of videos padded to the longest: streams zeros, present and mask False."""
        longest = max(len(item["mask"]) for item in items)

        def pad(tensors: list[torch.Tensor]) -> torch.Tensor:
            out = tensors[0].new_zeros((len(tensors), longest, *tensors[0].shape[1:]))
            for i, tensor in enumerate(tensors):
                out[i, :len(tensor)] = tensor
            return out

        labels = [label for label in items[0]["streams"]]
        return {"streams": {k: pad([item["streams"][k] for item in items]) for k in labels},
                "present": {k: pad([item["present"][k] for item in items]) for k in labels},
                "mask": pad([item["mask"] for item in items]),
                "labels": torch.stack([item["labels"] for item in items]),
                "valid": torch.stack([item["valid"] for item in items]),
                "track": torch.tensor([item["track"] for item in items])}


def video_datasets(train_tracks: list[Track], val_tracks: list[Track], streams: dict[str, Stream], frames: int,
                   draws: int = 1) -> tuple[VideoDataset, VideoDataset]:
    """Training videos (``frames`` sampled frames a draw, ``draws`` draws an epoch) and
    validation videos (every frame, once)."""
    return VideoDataset(train_tracks, streams, frames, draws), VideoDataset(val_tracks, streams, None)


def video_loss_weights(task: Task, tracks: list[Track]) -> torch.Tensor | None:
    """A/H class weights from the training videos' labels (EMI: None)."""
    if task.kind != "binary":
        return None
    return class_weights(np.concatenate([t.labels[:, 0] for t in tracks]), 2)


class VideoTaskModule(TaskModule):
    """:class:`TaskModule` for a video-level task: batches of padded videos in, (B, output)
    out (a pooling model of :mod:`fusion.pooling`), one validation row per video."""

    def __init__(self, task: str, streams: dict[str, tuple[str, int]], model: dict, fallback: dict | None = None,
                 loss: dict | None = None, optim: dict | None = None) -> None:
        super().__init__(task, streams, model, None, loss, optim)
        options = {"mse": 0.3, "pearson": 0.7, **(loss or {})}
        self.criterion = VideoLoss(self.task, options["mse"], options["pearson"])

    def embed(self, batch: dict) -> torch.Tensor:
        """(B, F) video embeddings of a batch of videos (the model's ``forward_features``)."""
        streams = {label: x.float() for label, x in batch["streams"].items()}
        return self.model.forward_features(streams, batch["present"], batch["mask"])

    def forward(self, batch: dict) -> tuple[torch.Tensor, None]:
        """(B, output) of the model for a batch of videos (no fallback MLP at video level)."""
        return self.model.forward_head(self.embed(batch)), None

    def _loss(self, batch: dict) -> torch.Tensor:
        output, _ = self(batch)
        return self.criterion(output, batch["labels"], batch["valid"]) + self.loss_options["balance"] * \
            self.model.aux_loss()

    def training_step(self, batch: dict, batch_index: int) -> torch.Tensor:
        loss = self._loss(batch)
        self.log("train/loss", loss, prog_bar=True, batch_size=len(batch["track"]))
        return loss

    def validation_step(self, batch: dict, batch_index: int) -> None:
        output, _ = self(batch)
        tracks = batch["track"]
        parts = [tracks, torch.zeros_like(tracks), to_probabilities(self.task, output), batch["labels"], batch["valid"]]
        self._outputs.append([p.detach().float().cpu().numpy() for p in parts])


def module_class(task: Task) -> type[TaskModule]:
    """The LightningModule class that trains (and so loads a checkpoint of) ``task``."""
    return VideoTaskModule if task.level == "video" else TaskModule


def predict_videos(checkpoint, config: Config, tracks: list[Track], batch_size: int = 8,
                   features: bool = False) -> dict[str, dict]:
    """Per video ``probabilities`` (1, output) of a checkpoint from every frame (intensities
    for EMI, the A/H probability), and ``present`` (1,): whether any frame had a face; with
    ``features`` also ``view`` (1, D), the video's z in the model's ``linear_view`` (what
    test-time personalisation adapts), and ``logits`` (1, output), the head's output the
    probabilities come from. The frame-wise prediction's arrays with one row, so CV,
    post-processing and the fold ensemble treat a video as a track of one row."""
    from abaw.runtime import pick_device

    device = pick_device(str(config.train.trainer.get("accelerator", "cpu")))
    module = VideoTaskModule.load_from_checkpoint(checkpoint, map_location="cpu").eval().to(device)
    streams = open_streams(config, module.task.dataset, list(module.hparams["streams"]))
    check_fresh(config, module.task.dataset, streams, tracks)
    dataset = VideoDataset(tracks, streams, None)
    visual = [label for label, s in streams.items() if s.modality == "visual"]
    results = {}
    with torch.inference_mode():
        for first in range(0, len(tracks), batch_size):
            batch = dataset.collate([dataset[i] for i in range(first, min(first + batch_size, len(tracks)))])
            present = batch["present"]
            inputs = {"streams": {k: v.to(device) for k, v in batch["streams"].items()},
                      "present": {k: v.to(device) for k, v in present.items()}, "mask": batch["mask"].to(device)}
            embedded = module.embed(inputs)
            if features:  # the head's output with its linear view's z (see predict_frames), both kept
                output, z = module.model.head_through_view(embedded)
                z, logits = z.float().cpu().numpy(), output.float().cpu().numpy()
            else:
                output = module.model.forward_head(embedded)
            values = to_probabilities(module.task, output).float().cpu().numpy()
            for j, index in enumerate(batch["track"].tolist()):
                face = bool(present[visual[0]][j].any()) if visual else True
                results[tracks[index].id] = {"probabilities": values[j:j + 1], "present": np.array([face])}
                if features:
                    results[tracks[index].id].update(view=z[j:j + 1], logits=logits[j:j + 1])
    return results
