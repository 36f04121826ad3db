"""Configuration: frozen dataclasses with defaults, YAML files that hold only overrides, and
``key=value`` overrides from the command line, merged in one place (:func:`load_config`).

Every run directory receives the resolved configuration and the git commit it ran at
(:func:`make_run_dir`), so any result can be traced back to what produced it.
"""

from __future__ import annotations

import datetime as _dt
import json
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf
from omegaconf.errors import OmegaConfBaseException


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names it."""


@dataclass(frozen=True)
class SampleConfig:
    """Size of the generated sample dataset (``abaw sample-data``); None = generator default."""

    seed: int = 0
    tracks: int | None = None
    seconds: float | None = None


@dataclass(frozen=True)
class DataConfig:
    """Where the dataset lives; ``generate`` creates the sample dataset there if it is absent."""

    root: str = "data/sample"
    generate: bool = False


@dataclass(frozen=True)
class FoldsConfig:
    """Cross-validation folds, persisted in ``file`` (relative paths: inside ``runs_dir``)."""

    k: int = 5
    seed: int = 0
    file: str = "folds.json"


@dataclass(frozen=True)
class ExtractConfig:
    """Feature extraction: which extractors, where the cache lives, on which devices.

    ``features`` maps a label to a registry entry and its spec overrides, e.g.
    ``{"face": {"extractor": "efficientnet", "weights": "..."}}``; a label without an
    ``extractor`` key names the registry entry itself.
    """

    cache: str = "cache/features"
    features: dict[str, Any] = field(default_factory=dict)
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    num_workers: int = 0


@dataclass(frozen=True)
class TrainConfig:
    """One task's head on cached features (``abaw train``).

    ``features`` are labels of ``extract.features``; ``model`` holds ``fusion.create_model``
    arguments; ``fallback`` an MLP on one stream (``{"stream": label, "hidden": 128}``) or
    null; ``trainer`` is passed to ``lightning.Trainer`` (accelerator, devices, strategy,
    num_nodes, ...).
    """

    task: str = "expr"
    features: list[str] = field(default_factory=list)
    model: dict[str, Any] = field(default_factory=lambda: {"name": "fusion_moe", "hidden": 128, "experts": 4})
    fallback: dict[str, Any] | None = None
    window: int = 32
    batch_size: int = 16
    epochs: int = 20
    patience: int = 5
    lr: float = 1e-3
    weight_decay: float = 1e-2
    warmup_fraction: float = 0.05
    label_smoothing: float = 0.0
    va_mse: float = 0.0
    au_pos_weight_max: float = 10.0
    balance: float = 0.01
    num_workers: int = 0
    deterministic: bool = True
    resume: str | None = None
    trainer: dict[str, Any] = field(default_factory=lambda: {"accelerator": "cpu", "devices": 1})


@dataclass(frozen=True)
class Config:
    """The whole configuration of a run. YAML files and overrides change fields of this tree."""

    name: str = "abaw"
    seed: int = 0
    tasks: list[str] = field(default_factory=lambda: ["expr", "va", "au", "vd"])
    runs_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    folds: FoldsConfig = field(default_factory=FoldsConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    train: TrainConfig = field(default_factory=TrainConfig)

    @property
    def folds_path(self) -> Path:
        """The folds file; a relative ``folds.file`` lives in ``runs_dir``."""
        path = Path(self.folds.file)
        return path if path.is_absolute() else Path(self.runs_dir) / path


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file at ``path`` (if any), then ``key=value`` overrides.

    Raises:
        ConfigError: a missing or malformed file, an unknown key or a value of the wrong type,
            naming the file or override.
    """
    layers = [OmegaConf.structured(Config)]
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found")
        try:
            layers.append(OmegaConf.load(path))
            merged = OmegaConf.merge(*layers)
        except (OmegaConfBaseException, ValueError) as e:
            raise ConfigError(f"{path}: {str(e).splitlines()[0]}") from None
        layers = [merged]
    for override in overrides or []:
        if "=" not in override:
            raise ConfigError(f"override {override!r} is not key=value")
        try:
            layers = [OmegaConf.merge(layers[0], OmegaConf.from_dotlist([override]))]
        except (OmegaConfBaseException, ValueError) as e:
            raise ConfigError(f"override {override!r}: {str(e).splitlines()[0]}") from None
    return OmegaConf.to_object(layers[0])


def to_yaml(config: Config) -> str:
    """The resolved configuration as YAML."""
    return OmegaConf.to_yaml(OmegaConf.structured(config))


def git_commit(directory: Path | None = None) -> str | None:
    """The commit of the source tree (with ``-dirty`` if it has uncommitted changes), or None."""
    where = directory or Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"], cwd=where, capture_output=True, text=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return commit + ("-dirty" if dirty else "")


def make_run_dir(config: Config, kind: str, argv: list[str] | None = None) -> Path:
    """Create ``<runs_dir>/<name>-<kind>-<time>/`` holding ``config.yaml`` and ``run.json``."""
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    run_dir = Path(config.runs_dir) / f"{config.name}-{kind}-{stamp}"
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(to_yaml(config))
    info = {
        "kind": kind,
        "git_commit": git_commit(),
        "argv": argv if argv is not None else sys.argv[1:],
        "created": _dt.datetime.now().isoformat(timespec="seconds"),
        "python": sys.version.split()[0],
    }
    (run_dir / "run.json").write_text(json.dumps(info, indent=1) + "\n")
    return run_dir
