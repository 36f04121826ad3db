"""Extractor specifications and the one door to every extractor: :func:`create_extractor`.

A spec is a frozen dataclass holding everything that changes the numbers an extractor
produces (model id or weights file, revision, input size, mean/std, crop scales, pooling,
layers, sample rate, window, ...). Its :meth:`ExtractorSpec.fingerprint` hashes those fields
(and the content of any weights file), and names the cache folder, so a changed spec can never
read features computed under another one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

# Fields that change speed or memory but never the numbers: left out of the fingerprint.
RUNTIME_FIELDS = frozenset({"batch_size", "num_workers", "device"})


@lru_cache(maxsize=64)
def _file_sha256(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_hash(path: str | Path) -> str:
    """sha256 of a weights file, or of every file of a model directory (sorted by name)."""
    path = Path(path)
    if path.is_file():
        stat = path.stat()
        return _file_sha256(str(path), stat.st_size, stat.st_mtime_ns)
    if path.is_dir():
        digest = hashlib.sha256()
        for file in sorted(p for p in path.rglob("*") if p.is_file()):
            digest.update(file.relative_to(path).as_posix().encode())
            digest.update(weights_hash(file).encode())
        return digest.hexdigest()
    raise FileNotFoundError(f"{path}: weights file or model directory not found")


def missing_pretrained(model: str, revision: str | None = None) -> list[str]:
    """[] if ``model`` is a local ``save_pretrained`` directory or a hub id in the local
    Hugging Face cache, else one line saying it is neither."""
    if Path(model).expanduser().is_dir():
        return []
    try:
        from huggingface_hub import try_to_load_from_cache

        if isinstance(try_to_load_from_cache(model, "config.json", revision=revision), str):
            return []
    except ValueError:  # not even a valid hub id: it was meant as a path
        pass
    return [f"model {model!r} is neither a local directory (save_pretrained) nor in the local Hugging Face cache"]


@dataclass(frozen=True)
class ExtractorSpec:
    """Base of every extractor spec. ``name`` is the registry entry; ``modality`` visual/audio."""

    name: str = ""
    modality: str = "visual"
    batch_size: int = 32
    num_workers: int = 0
    device: str = "auto"

    def numeric_fields(self) -> dict[str, Any]:
        """The fields that change the numbers (all but the runtime ones)."""
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in RUNTIME_FIELDS}

    def weight_sources(self) -> list[str]:
        """Local files or directories whose content must enter the fingerprint."""
        return []

    def missing_weights(self) -> list[str]:
        """Why the weights this spec loads are not on this machine, one line each (empty: all
        present). Checked before extraction starts, so a missing model is said once and early."""
        return []

    def fingerprint(self) -> str:
        """12 hex digits naming the cache folder: hash of the numeric fields and weights."""
        payload = {"spec": self.numeric_fields(), "weights": [weights_hash(p) for p in self.weight_sources()]}
        text = json.dumps(payload, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def cache_name(self) -> str:
        """``<name>-<fingerprint>``, the folder of this spec in the feature cache."""
        return f"{self.name}-{self.fingerprint()}"


@dataclass(frozen=True)
class PretrainedSpec(ExtractorSpec):
    """Base of the specs of a transformers model: ``model`` a hub id (read from the local HF
    cache) or a ``save_pretrained`` directory, ``revision`` the hub commit, ``config`` a config
    for random weights instead (tests, demo). A local directory is fingerprinted by its content,
    not its path, so moving it keeps the cache."""

    model: str = ""
    revision: str | None = None
    config: dict | None = None

    def _loads_directory(self) -> bool:
        return self.config is None and Path(self.model).expanduser().is_dir()

    def numeric_fields(self) -> dict[str, Any]:
        fields = super().numeric_fields()
        if self._loads_directory():
            fields["model"] = "<local directory>"  # its content hash stands for it
        return fields

    def weight_sources(self) -> list[str]:
        return [str(Path(self.model).expanduser())] if self._loads_directory() else []

    def missing_weights(self) -> list[str]:
        return [] if self.config is not None else missing_pretrained(self.model, self.revision)


@dataclass(frozen=True)
class Entry:
    spec: type[ExtractorSpec]
    build: Callable[[Any], Any]


_REGISTRY: dict[str, Entry] = {}


def register(name: str, spec: type[ExtractorSpec]) -> Callable:
    """Class decorator: make an extractor class available as ``create_extractor(name)``."""

    def decorate(cls):
        _REGISTRY[name] = Entry(spec, cls)
        return cls

    return decorate


def _load_builtin() -> None:
    # Importing the modules runs their @register decorators.
    from features import audio, text, thumbnail, visual  # noqa: F401


def registered() -> list[str]:
    """Names of every registered extractor."""
    _load_builtin()
    return sorted(_REGISTRY)


def make_spec(name: str, **overrides: Any) -> ExtractorSpec:
    """The spec of extractor ``name`` with ``overrides`` applied (unknown fields are errors)."""
    _load_builtin()
    if name not in _REGISTRY:
        raise ValueError(f"unknown extractor {name!r}; valid extractors: {', '.join(sorted(_REGISTRY))}")
    spec_type = _REGISTRY[name].spec
    valid = {f.name for f in dataclasses.fields(spec_type)}
    unknown = sorted(set(overrides) - valid)
    if unknown:
        raise ValueError(f"extractor {name!r} has no field(s) {', '.join(unknown)}; valid: {', '.join(sorted(valid))}")
    fields = {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}
    return spec_type(name=name, **fields)


def create_extractor(name: str, **overrides: Any):
    """Build extractor ``name`` (``dinov2``, ``efficientnet``, ``wav2vec2``, ``logmel``, ...)."""
    spec = make_spec(name, **overrides)
    return _REGISTRY[name].build(spec)
