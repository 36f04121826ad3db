"""Transcript embeddings: a transformers text encoder over timed transcript segments, put onto
a video's frame times (BAH's Whisper transcripts; the A/H top teams' text stream).

Each segment's text is embedded once (the mean of the encoder's last hidden states over its
tokens); a frame at time ``t`` takes the mean embedding of the segments overlapping
``[t - window, t + window]`` (``window`` 2.5 s: the 5 s windows the A/H teams used), and is
invalid where nobody speaks, so the fusion gate gives the text stream no weight there. Rows
are (T, D) like every other stream: fusion stays a row-wise join.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from features.specs import PretrainedSpec, register

# A tokenizer-less random model (``config`` given, tests and the demo) reads UTF-8 bytes: ids
# 0-2 are padding, start and end, byte b is id b + 3.
_BYTE_OFFSET = 3


@dataclass(frozen=True)
class TextSpec(PretrainedSpec):
    """A transformers text encoder. ``model``: a ``save_pretrained`` directory holding the model
    and its tokenizer (or a hub id in the local cache); ``config``: build a random-weight model
    from ``AutoConfig.for_model(**config)`` (``model_type`` included) seeded with ``seed``,
    which reads UTF-8 bytes instead of tokens (``vocab_size`` >= 259). ``max_length`` tokens per
    segment; ``window`` half-width in seconds of the time window a frame takes segments from."""

    modality: str = "text"
    batch_size: int = 16
    model: str = ""
    seed: int = 0
    max_length: int = 64
    window: float = 2.5


def _load(spec: TextSpec):
    """(model, tokenizer or None) for ``spec``: random from ``config``, else from ``model``."""
    import torch
    from transformers import AutoConfig, AutoModel, AutoTokenizer

    if spec.config is not None:
        config = dict(spec.config)
        if int(config.get("vocab_size", 0)) < 256 + _BYTE_OFFSET:
            raise ValueError(f"text config: vocab_size must be >= {256 + _BYTE_OFFSET} to read bytes")
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            model = AutoModel.from_config(AutoConfig.for_model(**config))
        return model.eval(), None
    local = Path(spec.model).is_dir()
    try:
        model = AutoModel.from_pretrained(spec.model, revision=None if local else spec.revision)
        tokenizer = AutoTokenizer.from_pretrained(spec.model, revision=None if local else spec.revision)
    except OSError as e:
        raise OSError(f"text model {spec.model!r} could not be loaded: no model hub is reachable here, pass a local "
                      f"directory written by save_pretrained (model and tokenizer) or a random config: {e}") from e
    return model.eval(), tokenizer


@register("text", TextSpec)
class TextExtractor:
    """Transcript segments -> frame rows; ``output_dims == {"features": hidden_size}``."""

    def __init__(self, spec: TextSpec) -> None:
        import torch

        self.spec = spec
        self.model, self.tokenizer = _load(spec)
        self.output_dims = {"features": int(self.model.config.hidden_size)}
        self.device = torch.device("cpu")

    def to(self, device: Any) -> TextExtractor:
        import torch

        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    def _tokens(self, texts: Sequence[str]):
        import torch

        if self.tokenizer is not None:
            batch = self.tokenizer(list(texts), padding=True, truncation=True, max_length=self.spec.max_length,
                                   return_tensors="pt")
            return batch["input_ids"], batch["attention_mask"]
        rows = [[1, *(b + _BYTE_OFFSET for b in t.encode("utf-8")[: self.spec.max_length - 2]), 2] for t in texts]
        width = max(len(r) for r in rows)
        ids = torch.zeros((len(rows), width), dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, row in enumerate(rows):
            ids[i, :len(row)], mask[i, :len(row)] = torch.tensor(row), 1
        return ids, mask

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """(S, D) float32: the token-mean of the last hidden states of each text."""
        import torch

        out = []
        for first in range(0, len(texts), max(1, self.spec.batch_size)):
            ids, mask = self._tokens(texts[first:first + self.spec.batch_size])
            ids, mask = ids.to(self.device), mask.to(self.device)
            with torch.inference_mode():
                states = self.model(input_ids=ids, attention_mask=mask).last_hidden_state
            weights = mask.unsqueeze(-1).to(states.dtype)
            out.append(((states * weights).sum(1) / weights.sum(1).clamp_min(1.0)).float().cpu().numpy())
        return np.concatenate(out) if out else np.zeros((0, self.output_dims["features"]), np.float32)

    def frame_rows(self, segments: Sequence[tuple[float, float, str]],
                   frame_times: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(T, D) float32 rows and (T,) valid of frames at ``frame_times`` (seconds) from timed
        ``segments`` ``(start, end, text)``: the mean embedding of the segments overlapping
        each frame's window; zeros and invalid where none does (or the text is empty)."""
        frame_times = np.asarray(frame_times, dtype=np.float64).reshape(-1)
        spoken = [(s, e, t) for s, e, t in segments if t.strip()]
        rows = np.zeros((len(frame_times), self.output_dims["features"]), np.float32)
        if not spoken:
            return rows, np.zeros(len(frame_times), bool)
        vectors = self.embed([t for _, _, t in spoken])
        starts = np.array([s for s, _, _ in spoken])
        ends = np.array([e for _, e, _ in spoken])
        w = self.spec.window
        overlap = (starts[None] <= frame_times[:, None] + w) & (ends[None] >= frame_times[:, None] - w)
        counts = overlap.sum(axis=1)
        valid = counts > 0
        rows[valid] = (overlap[valid].astype(np.float32) @ vectors) / counts[valid, None]
        return rows, valid
