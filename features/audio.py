"""Audio extractors: wav2vec2 hidden states and log-mel energies, pooled onto video frames.

Both compute time-stamped steps (model outputs, mel frames) from a (N,) float32 mono waveform
at ``spec.sample_rate`` (see :mod:`features.media`) and pool them onto the (T,) centre times of
a track's video frames with :func:`features.align.pool_to_frames`, giving (T, D) float32 rows;
nothing is recomputed per frame. ``iter_steps`` computes the steps in time order from a
waveform that arrives in pieces (:func:`features.media.audio_pieces`), holding about one
encoder chunk of it, and :class:`FramePool` pools each frame as soon as its window is complete,
so a long video's audio is never held whole; ``extract`` is the same computation over a
waveform in memory.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from features.align import pool_to_frames
from features.specs import ExtractorSpec, PretrainedSpec, register

# Wav2Vec2FeatureExtractor's variance floor, kept identical so normalised inputs match it.
_NORM_EPS = 1e-7


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


class _Samples:
    """Samples of a waveform of ``total`` samples that arrives in ``pieces``, read by range.

    Pieces are pulled only as far as a read needs, and :meth:`drop` releases what no later read
    needs, so what is held stays about one read long. Samples outside ``[0, total)`` (and any
    the pieces fall short of) read as zeros.
    """

    def __init__(self, pieces: Iterable[np.ndarray], total: int) -> None:
        self._pieces, self.total = iter(pieces), total
        self._held, self._begin = np.zeros(0, np.float32), 0  # _held[0] is sample _begin

    def take(self, start: int, end: int) -> np.ndarray:
        """float32 samples ``[start, end)``; none of them may have been dropped."""
        if max(start, 0) < min(self._begin, end, self.total):
            raise ValueError(f"samples from {start} were dropped (held from {self._begin})")
        need = min(end, self.total) - self._begin
        pulled, have = [self._held], len(self._held)
        while have < need:
            piece = next(self._pieces, None)
            if piece is None:
                break
            pulled.append(np.asarray(piece, dtype=np.float32).reshape(-1))
            have += len(pulled[-1])
        if len(pulled) > 1:
            self._held = np.concatenate(pulled)[:self.total - self._begin]
        out = np.zeros(end - start, np.float32)
        low, high = max(start, self._begin), min(end, self._begin + len(self._held))
        if high > low:
            out[low - start:high - start] = self._held[low - self._begin:high - self._begin]
        return out

    def drop(self, before: int) -> None:
        """Release the samples before ``before``."""
        cut = min(max(before - self._begin, 0), len(self._held))
        if cut:
            self._held, self._begin = self._held[cut:].copy(), self._begin + cut


class _StepExtractor:
    """What both audio extractors share: steps over a waveform in memory, and frame rows from
    them. Subclasses define ``iter_steps(pieces, total)``, which yields ``(times, steps)`` blocks
    in time order."""

    spec: Any

    def steps(self, waveform: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(S,) step times in seconds and (S, D) float32 steps of a whole waveform."""
        wave = np.asarray(waveform, dtype=np.float32).reshape(-1)
        blocks = list(self.iter_steps([wave], len(wave)))
        return (np.concatenate([times for times, _ in blocks]),
                np.concatenate([steps for _, steps in blocks]).astype(np.float32, copy=False))

    def extract(self, waveform: np.ndarray, frame_times: np.ndarray) -> np.ndarray:
        """(N,) float32 mono waveform at ``spec.sample_rate``, (T,) frame centre times in s -> (T, D) float32."""
        step_times, steps = self.steps(waveform)
        return pool_to_frames(step_times, steps, frame_times, self.spec.window)


class FramePool:
    """:func:`pool_to_frames` over steps that arrive in time order, frame by frame as they
    complete.

    A frame's row is final once a step later than its window's end has arrived; only the steps
    from the earliest unfinished frame's window on (and the one before, its nearest step when
    the window is empty) are held. The rows equal one :func:`pool_to_frames` call over all the
    steps up to float rounding of the running sums.
    """

    def __init__(self, frame_times: np.ndarray, window: float) -> None:
        frame_times = np.asarray(frame_times, dtype=np.float64).reshape(-1)
        self.order = np.argsort(frame_times, kind="stable")
        self._times = frame_times[self.order]
        self._ends = self._times + window
        self.window, self._done = window, 0
        self._step_times = np.zeros(0)
        self._steps: np.ndarray | None = None

    def push(self, step_times: np.ndarray, steps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Add the next steps (none earlier than those before); returns ``(rows, values)``:
        the frame indices now complete and their (n, D) float32 rows."""
        step_times = np.asarray(step_times, dtype=np.float64).reshape(-1)
        if self._steps is None:
            self._steps = np.zeros((0, *np.shape(steps)[1:]), np.float32)
        self._step_times = np.concatenate([self._step_times, step_times])
        self._steps = np.concatenate([self._steps, steps])
        if not len(self._step_times):
            return self._pool(self._done)
        return self._pool(int(np.searchsorted(self._ends, self._step_times[-1], side="left")))

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        """The remaining frames' rows, after the last steps were pushed."""
        return self._pool(len(self._times))

    def _pool(self, end: int) -> tuple[np.ndarray, np.ndarray]:
        rows, frames = self.order[self._done:end], self._times[self._done:end]
        if len(frames):
            values = pool_to_frames(self._step_times, self._steps, frames, self.window)
        else:
            values = np.zeros((0, *self._steps.shape[1:]), np.float32)
        self._done = end
        if end < len(self._times):
            first = int(np.searchsorted(self._step_times, self._times[end] - self.window, side="left"))
            keep = max(first - 1, 0)
            self._step_times, self._steps = self._step_times[keep:], self._steps[keep:]
        return rows, values


# --------------------------------------------------------------------------------------------
# wav2vec2


@dataclass(frozen=True)
class Wav2Vec2Spec(PretrainedSpec):
    """wav2vec2 features: mean of the last ``layers`` hidden states, pooled ±``window`` s.

    ``model`` is a hub id or a local directory written by ``save_pretrained``; ``revision``
    pins a hub commit (a local directory is fingerprinted by content instead). ``config``, when
    given, builds a random-weight ``Wav2Vec2Config(**config)`` model seeded with ``seed`` (tests,
    demo) and ``model`` is not read. The encoder runs once per ``chunk_seconds`` chunk;
    neighbouring chunks share ``overlap_seconds`` and each step is taken from the chunk where it
    sits farther from the border. ``normalize``: zero-mean/unit-variance per chunk as
    ``Wav2Vec2FeatureExtractor`` does; None reads ``do_normalize`` from the model's
    ``preprocessor_config.json`` and, without one, normalises exactly when the config's
    ``feat_extract_norm == "layer"`` (the lv60/large family, trained on normalised input).
    """

    modality: str = "audio"
    batch_size: int = 4
    model: str = "facebook/wav2vec2-large-960h-lv60-self"
    revision: str | None = None
    config: dict[str, Any] | None = None
    seed: int = 0
    sample_rate: int = 16000
    layers: int = 4
    chunk_seconds: float = 20.0
    overlap_seconds: float = 1.0
    window: float = 0.5
    normalize: bool | None = None
    dtype: str = "float32"


def conv_geometry(conv_kernel: tuple[int, ...] | list[int], conv_stride: tuple[int, ...] | list[int]) -> tuple[int, int]:
    """(stride, receptive field) in input samples of a stack of 1-d convolutions.

    Output step ``i`` sees input samples ``[i * stride, i * stride + receptive_field)``; for
    the standard wav2vec2 feature encoder that is (320, 400): 20 ms steps over 25 ms of audio.
    """
    stride, field = 1, 1
    for kernel, step in zip(conv_kernel, conv_stride):
        field += (kernel - 1) * stride
        stride *= step
    return stride, field


def _load_wav2vec2(spec: Wav2Vec2Spec):
    import torch
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    if spec.config is not None:
        # fork_rng: seeding for reproducible random weights must not reseed the caller's RNG.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(spec.seed)
            model = Wav2Vec2Model(Wav2Vec2Config(**spec.config))
    else:
        local = Path(spec.model).is_dir()
        try:
            model = Wav2Vec2Model.from_pretrained(spec.model, revision=None if local else spec.revision)
        except OSError as e:
            raise OSError(f"wav2vec2 model {spec.model!r} (revision {spec.revision!r}) could not be loaded: "
                          "no model hub is reachable here, pass a local directory written by "
                          f"save_pretrained or a random config: {e}") from e
    return model.eval().to(getattr(torch, spec.dtype))


def _do_normalize(spec: Wav2Vec2Spec, feat_extract_norm: str) -> bool:
    if spec.normalize is not None:
        return spec.normalize
    if spec.config is None:
        file = Path(spec.model) / "preprocessor_config.json"
        if file.is_file():
            return bool(json.loads(file.read_text()).get("do_normalize", True))
        if not Path(spec.model).is_dir():
            try:
                from transformers import Wav2Vec2FeatureExtractor

                return bool(Wav2Vec2FeatureExtractor.from_pretrained(spec.model, revision=spec.revision).do_normalize)
            except OSError:
                pass  # no cached preprocessor config: fall back to the config rule below
    return feat_extract_norm == "layer"


def chunk_bounds(num_samples: int, chunk: int, overlap: int, stride: int) -> list[tuple[int, int]]:
    """Sample ranges ``[start, end)`` of the encoder chunks covering ``num_samples``.

    Starts are multiples of ``stride`` so every chunk's steps fall on one global step grid.
    The last chunk is moved back to end at the waveform's end (full context instead of a
    short tail), so it may overlap its neighbour by more than ``overlap``.
    """
    if num_samples <= chunk:
        return [(0, num_samples)]
    hop = chunk - overlap
    starts = list(range(0, num_samples - chunk, hop))
    last = (num_samples - chunk) // stride * stride
    starts = [s for s in starts if s < last] + [last]
    return [(s, s + chunk) for s in starts[:-1]] + [(last, num_samples)]


@register("wav2vec2", Wav2Vec2Spec)
class Wav2Vec2Extractor(_StepExtractor):
    """wav2vec2 frame features; ``output_dims == {"features": hidden_size}``."""

    def __init__(self, spec: Wav2Vec2Spec) -> None:
        self.spec = spec
        self.model = _load_wav2vec2(spec)
        config = self.model.config
        depth = config.num_hidden_layers + 1  # hidden states: the encoder input, then each layer
        if not 1 <= spec.layers <= depth:
            raise ValueError(f"layers must be in 1..{depth} for this model; got {spec.layers}")
        self.stride, self.receptive_field = conv_geometry(config.conv_kernel, config.conv_stride)
        self.normalize = _do_normalize(spec, config.feat_extract_norm)
        sr = spec.sample_rate
        self.chunk = int(round(spec.chunk_seconds * sr)) // self.stride * self.stride
        self.overlap = int(round(spec.overlap_seconds * sr / self.stride)) * self.stride
        # Cutting an overlap at its midpoint leaves no grid step uncovered only if each half
        # still spans half a receptive field (a step's centre sits R/2 inside its chunk).
        min_overlap = self.receptive_field
        if self.overlap < min_overlap or self.chunk <= self.overlap or self.chunk < self.receptive_field:
            raise ValueError(f"need chunk_seconds > overlap_seconds >= {min_overlap / sr:.4f} s and chunk_seconds "
                             f">= {self.receptive_field / sr:.4f} s; got {spec.chunk_seconds}, {spec.overlap_seconds}")
        self.output_dims = {"features": int(config.hidden_size)}
        self.to(_resolve_device(spec.device))

    def to(self, device: Any) -> Wav2Vec2Extractor:
        """Move the model to ``device`` ("cpu", "cuda", a torch.device); returns self."""
        import torch

        self.device = torch.device(device)
        self.model.to(self.device)
        return self

    def step_time(self, index: np.ndarray) -> np.ndarray:
        """Time in seconds of global step ``index``: the centre of its receptive field."""
        return (np.asarray(index, dtype=np.float64) * self.stride + self.receptive_field / 2) / self.spec.sample_rate

    def _prepare(self, piece: np.ndarray) -> np.ndarray:
        piece = piece.astype(np.float32)
        if self.normalize and len(piece):
            piece = (piece - piece.mean()) / np.sqrt(piece.var() + _NORM_EPS)
        if len(piece) < self.receptive_field:
            # Too short for one conv step: zero-pad (after normalising, as the HF padding does).
            piece = np.pad(piece, (0, self.receptive_field - len(piece)))
        return piece

    def _encode(self, batch: np.ndarray) -> np.ndarray:
        """(B, L) prepared samples -> (B, steps, D) float32, mean of the last k hidden states."""
        import torch

        x = torch.from_numpy(batch).to(self.device, dtype=self.model.dtype)
        with torch.inference_mode():
            out = self.model(x, output_hidden_states=True)
        states = list(out.hidden_states)
        # transformers 5 records the last layer before the final LayerNorm of the stable-layer-norm
        # (large/lv60) encoder; 4.x recorded it after. last_hidden_state is after in both.
        states[-1] = out.last_hidden_state
        return torch.stack(states[-self.spec.layers:]).mean(0).float().cpu().numpy()

    def iter_steps(self, pieces: Iterable[np.ndarray], total: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """One encoder pass per chunk of a ``total``-sample waveform arriving in ``pieces``:
        ``(times, steps)`` blocks in time order, (S,) seconds and (S, D) float32.

        Every step of the global grid whose receptive field lies inside the waveform appears
        once, taken from the chunk whose border is farther away. Chunks are encoded as soon as
        their samples have arrived, so about ``batch_size`` chunks of samples are held.
        """
        bounds = chunk_bounds(total, self.chunk, self.overlap, self.stride)
        # A step belongs to chunk k when its centre lies between the midpoints of the overlaps
        # with the previous and next chunk.
        cuts = [(bounds[k][1] + bounds[k + 1][0]) / 2 for k in range(len(bounds) - 1)]
        lows = [-np.inf] + cuts
        highs = cuts + [np.inf]
        samples = _Samples(pieces, total)
        groups = self._batches([max(end - start, self.receptive_field) for start, end in bounds])
        for g, group in enumerate(groups):
            prepared = np.stack([self._prepare(samples.take(*bounds[k])) for k in group])
            if g + 1 < len(groups):
                samples.drop(bounds[groups[g + 1][0]][0])
            for k, feats in zip(group, self._encode(prepared)):
                index = bounds[k][0] // self.stride + np.arange(len(feats))
                centre = index * self.stride + self.receptive_field / 2
                keep = (centre >= lows[k]) & (centre < highs[k])
                yield self.step_time(index[keep]), feats[keep]

    def _batches(self, lengths: list[int]) -> list[list[int]]:
        """Consecutive chunks in batches of up to ``batch_size``, equal lengths only: padding
        would change group-norm models' numbers (only the last chunk can differ in length)."""
        batches: list[list[int]] = []
        for k, length in enumerate(lengths):
            if batches and len(batches[-1]) < max(1, self.spec.batch_size) and lengths[batches[-1][0]] == length:
                batches[-1].append(k)
            else:
                batches.append([k])
        return batches


# --------------------------------------------------------------------------------------------
# log-mel


@dataclass(frozen=True)
class LogMelSpec(ExtractorSpec):
    """Log-mel energies in dB (power, ref 1.0, floor 1e-10 = -100 dB), pooled ±``window`` s.

    STFT frames of ``n_fft`` samples every ``hop_length`` samples (Hann window, centred), so
    step ``j`` is centred at ``j * hop_length / sample_rate`` s. An absolute dB reference (not
    the clip's maximum) keeps values comparable across tracks and silent tracks finite.
    """

    modality: str = "audio"
    sample_rate: int = 16000
    n_mels: int = 64
    n_fft: int = 400
    hop_length: int = 160
    fmin: float = 0.0
    fmax: float | None = None
    window: float = 0.5


@register("logmel", LogMelSpec)
class LogMelExtractor(_StepExtractor):
    """Log-mel frame features; ``output_dims == {"features": n_mels}``. CPU only, no weights."""

    block_steps = 1000  # mel steps per librosa call (10 s at the default hop): bounds the memory

    def __init__(self, spec: LogMelSpec) -> None:
        self.spec = spec
        self.output_dims = {"features": int(spec.n_mels)}
        self.device = "cpu"

    def to(self, device: Any) -> LogMelExtractor:
        """No-op (librosa runs on the CPU); returns self so callers can treat extractors alike."""
        return self

    def iter_steps(self, pieces: Iterable[np.ndarray], total: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """Log-mel steps of a ``total``-sample waveform arriving in ``pieces``: ``(times,
        steps)`` blocks in time order, (S,) seconds and (S, n_mels) float32.

        The steps librosa's centred STFT gives over the whole waveform (zero padding, a
        waveform shorter than one FFT window padded to one), computed ``block_steps`` at a time
        from the samples each block's frames cover.
        """
        import librosa

        spec = self.spec
        # librosa warns and misbehaves on inputs shorter than one FFT window: zeros make it one.
        length = max(total, spec.n_fft)
        pad = spec.n_fft // 2  # centred frames: step j covers [j * hop - pad, j * hop - pad + n_fft)
        count = 1 + (length + 2 * pad - spec.n_fft) // spec.hop_length
        samples = _Samples(pieces, total)
        for first in range(0, count, self.block_steps):
            last = min(first + self.block_steps, count)
            start = first * spec.hop_length - pad
            wave = samples.take(start, (last - 1) * spec.hop_length - pad + spec.n_fft)
            samples.drop(last * spec.hop_length - pad)
            power = librosa.feature.melspectrogram(
                y=wave, sr=spec.sample_rate, n_fft=spec.n_fft, hop_length=spec.hop_length,
                n_mels=spec.n_mels, fmin=spec.fmin, fmax=spec.fmax, power=2.0, center=False)
            log = librosa.power_to_db(power, ref=1.0, amin=1e-10, top_db=None)
            times = np.arange(first, last, dtype=np.float64) * spec.hop_length / spec.sample_rate
            yield times, log.T.astype(np.float32)
