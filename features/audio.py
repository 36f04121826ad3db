"""Audio extractors: wav2vec2 hidden states and log-mel energies, pooled onto video frames.

Both take a (N,) float32 mono waveform at ``spec.sample_rate`` (see
:func:`features.media.decode_audio`) and the (T,) centre times of a track's video frames, and
return (T, D) float32 rows aligned to those frames. Each computes time-stamped steps once over
the whole waveform and pools them onto frames with :func:`features.align.pool_to_frames`;
nothing is recomputed per frame.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from features.align import pool_to_frames
from features.specs import ExtractorSpec, missing_pretrained, register

# Wav2Vec2FeatureExtractor's variance floor, kept identical so normalised inputs match it.
_NORM_EPS = 1e-7


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


# --------------------------------------------------------------------------------------------
# wav2vec2


@dataclass(frozen=True)
class Wav2Vec2Spec(ExtractorSpec):
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

    def _loads_directory(self) -> bool:
        return self.config is None and Path(self.model).expanduser().is_dir()

    def numeric_fields(self) -> dict[str, Any]:
        fields = super().numeric_fields()
        if self._loads_directory():
            fields["model"] = "<local directory>"  # its content hash stands for it: moving it keeps the cache
        return fields

    def weight_sources(self) -> list[str]:
        """The local model directory, when ``model`` is one and no random ``config`` is used."""
        return [str(Path(self.model).expanduser())] if self._loads_directory() else []

    def missing_weights(self) -> list[str]:
        return [] if self.config is not None else missing_pretrained(self.model, self.revision)


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
class Wav2Vec2Extractor:
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

    def steps(self, waveform: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """One encoder pass per chunk: (S,) step times in seconds and (S, D) float32 steps.

        Every step of the global grid whose receptive field lies inside the waveform appears
        once, taken from the chunk whose border is farther away.
        """
        wave = np.asarray(waveform, dtype=np.float32).reshape(-1)
        bounds = chunk_bounds(len(wave), self.chunk, self.overlap, self.stride)
        # A step belongs to chunk k when its centre lies between the midpoints of the overlaps
        # with the previous and next chunk.
        cuts = [(bounds[k][1] + bounds[k + 1][0]) / 2 for k in range(len(bounds) - 1)]
        lows = [-np.inf] + cuts
        highs = cuts + [np.inf]
        prepared = [self._prepare(wave[s:e]) for s, e in bounds]
        encoded: list[np.ndarray | None] = [None] * len(bounds)
        # Batch only chunks of equal length: padding would change group-norm models' numbers.
        by_length: dict[int, list[int]] = {}
        for k, piece in enumerate(prepared):
            by_length.setdefault(len(piece), []).append(k)
        batch = max(1, self.spec.batch_size)
        for members in by_length.values():
            for i in range(0, len(members), batch):
                group = members[i:i + batch]
                out = self._encode(np.stack([prepared[k] for k in group]))
                for k, feats in zip(group, out):
                    encoded[k] = feats
        times, rows = [], []
        for (start, _), low, high, feats in zip(bounds, lows, highs, encoded):
            index = start // self.stride + np.arange(len(feats))
            centre = index * self.stride + self.receptive_field / 2
            keep = (centre >= low) & (centre < high)
            times.append(self.step_time(index[keep]))
            rows.append(feats[keep])
        return np.concatenate(times), np.concatenate(rows).astype(np.float32, copy=False)

    def extract(self, waveform: np.ndarray, frame_times: np.ndarray) -> np.ndarray:
        """(N,) float32 mono waveform at ``spec.sample_rate``, (T,) frame centre times in s -> (T, D) float32."""
        step_times, steps = self.steps(waveform)
        return pool_to_frames(step_times, steps, frame_times, self.spec.window)


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
class LogMelExtractor:
    """Log-mel frame features; ``output_dims == {"features": n_mels}``. CPU only, no weights."""

    def __init__(self, spec: LogMelSpec) -> None:
        self.spec = spec
        self.output_dims = {"features": int(spec.n_mels)}
        self.device = "cpu"

    def to(self, device: Any) -> LogMelExtractor:
        """No-op (librosa runs on the CPU); returns self so callers can treat extractors alike."""
        return self

    def steps(self, waveform: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(S,) step times in seconds and (S, n_mels) float32 log-mel steps of the waveform."""
        import librosa

        spec = self.spec
        wave = np.asarray(waveform, dtype=np.float32).reshape(-1)
        if len(wave) < spec.n_fft:
            # librosa warns and misbehaves on inputs shorter than one FFT window.
            wave = np.pad(wave, (0, spec.n_fft - len(wave)))
        power = librosa.feature.melspectrogram(
            y=wave, sr=spec.sample_rate, n_fft=spec.n_fft, hop_length=spec.hop_length,
            n_mels=spec.n_mels, fmin=spec.fmin, fmax=spec.fmax, power=2.0, center=True)
        log = librosa.power_to_db(power, ref=1.0, amin=1e-10, top_db=None)
        times = np.arange(log.shape[1], dtype=np.float64) * spec.hop_length / spec.sample_rate
        return times, log.T.astype(np.float32)

    def extract(self, waveform: np.ndarray, frame_times: np.ndarray) -> np.ndarray:
        """(N,) float32 mono waveform at ``spec.sample_rate``, (T,) frame centre times in s -> (T, n_mels) float32."""
        step_times, steps = self.steps(waveform)
        return pool_to_frames(step_times, steps, frame_times, self.spec.window)
