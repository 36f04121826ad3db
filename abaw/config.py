"""Configuration: frozen dataclasses with defaults, YAML files that hold only overrides, and
``key=value`` overrides from the command line, merged in one place (:func:`load_config`).

Every run directory receives the resolved configuration and the git commit it ran at
(:func:`make_run_dir`), so any result can be traced back to what produced it.
"""

from __future__ import annotations

import dataclasses
import datetime as _dt
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, OmegaConfBaseException

from abaw.config_checks import config_problems, did_you_mean, key_line, yaml_error


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
    ``extractor`` key names the registry entry itself. ``faces`` names per dataset where the
    visual extractors take their pixels: ``crops`` (the organisers' ``cropped_aligned/``; a
    track without crops is face-absent), ``detected`` (faces detected and tracked in the raw
    video, :mod:`abaw.faces`; EMI's and BAH's default, as neither ships crops), ``frame``
    (whole frames: scenes such as DVD) or ``none``; a
    feature entry's own ``faces: {dataset: source}`` takes precedence for that feature. The
    source is part of the cache key. An entry's ``datasets: [affwild2, dvd]`` limits the
    stream to those datasets (:meth:`extracts`). ``detector`` and ``tracker`` hold
    ``features.faces.DetectorSpec`` and ``features.tracking.TrackerSpec`` fields, and
    ``face_overrides`` a per-video overrides file (``features.tracking.read_overrides``).
    """

    cache: str = "cache/features"
    features: dict[str, Any] = field(default_factory=dict)
    faces: dict[str, str] = field(default_factory=lambda: {"affwild2": "crops", "dvd": "frame", "emi": "detected",
                                                           "bah": "detected"})
    detector: dict[str, Any] = field(default_factory=dict)
    tracker: dict[str, Any] = field(default_factory=dict)
    face_overrides: str | None = None
    accelerator: str = "auto"
    devices: int = 1
    num_nodes: int = 1
    num_workers: int = 0

    def extractors(self) -> dict[str, tuple[str, dict[str, Any]]]:
        """label -> (registry name, spec overrides) of every entry of ``features``."""
        return {label: extractor_entry(label, entry) for label, entry in self.features.items()}

    def extracts(self, label: str, dataset: str) -> bool:
        """Whether feature ``label`` is extracted for ``dataset``: an entry's ``datasets: [...]``
        names the only ones (a costly stream no head of the other datasets reads), else all."""
        only = (self.features.get(label) or {}).get("datasets")
        return only is None or dataset in only

    def faces_of(self, label: str, dataset: str) -> str:
        """The face source of feature ``label`` on ``dataset``: the entry's own, else the dataset's."""
        own = (self.features.get(label) or {}).get("faces") or {}
        if not isinstance(own, dict):
            raise ConfigError(f"extract.features.{label}.faces must map a dataset to a face source, e.g. "
                              f"{{affwild2: detected}}; got {own!r}")
        return own.get(dataset, self.faces.get(dataset))


def extractor_entry(label: str, entry: dict[str, Any] | None) -> tuple[str, dict[str, Any]]:
    """(registry name, spec overrides) of one ``extract.features`` entry."""
    overrides = dict(entry or {})
    overrides.pop("faces", None)  # where the pixels come from, not a setting of the extractor
    overrides.pop("datasets", None)  # which datasets get the stream, neither
    return overrides.pop("extractor", label), overrides


@dataclass(frozen=True)
class TrainConfig:
    """One task's head on cached features (``abaw train``).

    ``features`` are labels of ``extract.features``; ``model`` holds ``fusion.create_model``
    arguments; ``fallback`` an MLP on one stream (``{"stream": label, "hidden": 128}``) or
    null; ``trainer`` is passed to ``lightning.Trainer`` (accelerator, devices, strategy,
    num_nodes, ...).

    Video-level tasks (EMI, A/H): a training sample is ``frames_per_video`` frames spread over
    the whole video at a random offset (every frame at prediction), each video drawn
    ``draws_per_video`` times an epoch (a few dozen videos make short epochs); the EMI loss is
    ``emi_mse`` x MSE + ``emi_pearson`` x (1 - Pearson r), per dimension across the batch.
    """

    task: str = "expr"
    features: list[str] = field(default_factory=list)
    model: dict[str, Any] = field(default_factory=lambda: {"name": "fusion_moe", "hidden": 128})
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
    frames_per_video: int = 32
    draws_per_video: int = 4
    emi_mse: float = 0.3
    emi_pearson: float = 0.7
    num_workers: int = 0
    deterministic: bool = True
    resume: str | None = None
    trainer: dict[str, Any] = field(default_factory=lambda: {"accelerator": "cpu", "devices": 1})


# The prediction sources of a track's arrays that a CV run scores (``cv.primary``,
# ``cv.secondary``), and what reports call them.
SOURCES = {"fusion": "trained head", "fallback": "fallback MLP", "emotion_logits": "pretrained logits"}


@dataclass(frozen=True)
class CVConfig:
    """Cross-validation and post-processing (``abaw cv``).

    ``primary`` / ``secondary`` name the two sources of the EXPR confidence fallback:
    ``fusion`` (the fusion model), ``fallback`` (the MLP), ``emotion_logits`` (a pretrained
    emotion classifier's logits cached by the EfficientNet extractor), or null. ``search``
    narrows the post-processing candidates tuned out of fold (``fill``, ``window``, ``filter``,
    ``tau``; see ``abaw.postprocess.search_space``), as a recipe fixes its smoothing.
    ``ensemble``: how ``abaw predict`` averages the fold models, ``probabilities`` or
    ``logits`` (the mean log-odds, then back to probabilities). ``personalise``: the test-time
    personalisation methods (``abaw.personalise``: ``t3a``, ``cap``) scored out of fold on the
    classification tasks of people (EXPR, A/H) and so candidates for ``abaw predict``; ``[]``
    scores none (and saves the extra prediction pass over every track).
    """

    primary: str = "fusion"
    secondary: str | None = "fallback"
    search: dict[str, list] = field(default_factory=dict)
    ensemble: str = "probabilities"
    personalise: list[str] = field(default_factory=lambda: ["t3a", "cap"])


@dataclass(frozen=True)
class RunConfig:
    """``abaw run``: per-task configs are ``<tasks_dir>/<task>.yaml`` beside the run config.

    ``variants`` maps a table label to another task config in ``tasks_dir`` (e.g. another
    feature stream for one task): cross-validated after the tasks, in its own CV directory
    (``<name>-<file stem>``), and shown as a row of the table; no submission is written for it.
    """

    tasks_dir: str = "task"
    variants: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Config:
    """The whole configuration of a run. YAML files and overrides change fields of this tree."""

    name: str = "abaw"
    seed: int = 0
    tasks: list[str] = field(default_factory=list)  # empty: every task the dataset root holds
    runs_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    sample: SampleConfig = field(default_factory=SampleConfig)
    folds: FoldsConfig = field(default_factory=FoldsConfig)
    extract: ExtractConfig = field(default_factory=ExtractConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    cv: CVConfig = field(default_factory=CVConfig)
    run: RunConfig = field(default_factory=RunConfig)

    @property
    def folds_path(self) -> Path:
        """The folds file; a relative ``folds.file`` lives in ``runs_dir``."""
        path = Path(self.folds.file)
        return path if path.is_absolute() else Path(self.runs_dir) / path


def _read_layers(path: Path, seen: tuple[Path, ...] = ()) -> list:
    """The YAML file at ``path`` preceded by the files its ``defaults:`` list names
    (relative to it), recursively."""
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"{path}: defaults form a cycle")
    if not path.is_file():
        raise ConfigError(f"{path}: config file not found")
    try:
        layer = OmegaConf.load(path)
    except yaml.YAMLError as e:
        raise ConfigError(yaml_error(path, e)) from None
    except (OmegaConfBaseException, ValueError) as e:
        raise ConfigError(f"{path}: {str(e).splitlines()[0]}") from None
    layers = []
    defaults = layer.pop("defaults", None) if isinstance(layer, DictConfig) else None
    for name in defaults or []:
        layers += _read_layers(path.parent / str(name), seen + (path,))
    return layers + [(path, layer)]


def load_config(path: str | Path | list | None = None, overrides: list[str] | None = None) -> Config:
    """Defaults, then the YAML file(s) at ``path`` in order (each preceded by the files its
    ``defaults:`` list names), then ``key=value`` overrides.

    Raises:
        ConfigError: a missing or malformed file, an unknown key or a value of the wrong type
            (:func:`abaw.config_checks.config_problems` included: an option the model or the
            fallback MLP does not take, an unknown prediction source), in one line naming the
            file and line, or the override, that set it.
    """
    merged = OmegaConf.structured(Config)
    paths = [] if path is None else [path] if isinstance(path, (str, Path)) else list(path)
    sources: list[tuple[Path | str, DictConfig]] = []  # what set which key: files, then overrides
    for file, layer in [pair for p in paths for pair in _read_layers(Path(p))]:
        try:
            merged = OmegaConf.merge(merged, layer)
        except (OmegaConfBaseException, ValueError) as e:
            raise ConfigError(f"{_origin(file, getattr(e, 'full_key', None))}: {_message(e)}") from None
        sources.append((file, layer))
    for override in overrides or []:
        if "=" not in override:
            raise ConfigError(f"override {override!r} is not key=value")
        try:
            layer = OmegaConf.from_dotlist([override])
            merged = OmegaConf.merge(merged, layer)
        except (OmegaConfBaseException, ValueError) as e:
            raise ConfigError(f"override {override!r}: {_message(e)}") from None
        sources.append((override, layer))
    config = OmegaConf.to_object(merged)
    problems = config_problems(config, SOURCES)
    if problems:  # named where the last file or override that set the key did
        key, problem = problems[0]
        setters = [source for source, layer in sources if OmegaConf.select(layer, key, default=None) is not None]
        raise ConfigError(f"{_origin(setters[-1], key)}: {key}: {problem}" if setters else f"{key}: {problem}")
    return config


def check_config(config: Config) -> None:
    """:func:`abaw.config_checks.config_problems` of a configuration built in code (a loaded one
    has passed them), raised as the first one's :class:`ConfigError`."""
    problems = config_problems(config, SOURCES)
    if problems:
        key, problem = problems[0]
        raise ConfigError(f"{key}: {problem}")


def _origin(source: Path | str, key: str | None) -> str:
    """Where ``key`` was set: ``<file>:<line>`` (or the file) for a YAML file, else the override."""
    if isinstance(source, str):
        return f"override {source!r}"
    line = key_line(source, key) if key else None
    return f"{source}:{line}" if line is not None else str(source)


def _message(error: Exception) -> str:
    """OmegaConf's first line, and for a key no dataclass field has, the valid ones and the closest."""
    message = str(error).splitlines()[0]
    kind, key = getattr(error, "object_type", None), getattr(error, "key", None)
    if isinstance(error, ConfigKeyError) and dataclasses.is_dataclass(kind) and key is not None:
        valid = [f.name for f in dataclasses.fields(kind)]
        message = message.split(". Did you mean")[0]  # OmegaConf's own suggestion, for some keys only
        message += f"; valid: {', '.join(valid)}{did_you_mean(key, valid)}"
    return message


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


# The run directory of the main process, inherited by the rank processes a launcher starts.
RUN_DIR_ENV = "ABAW_RUN_DIR"


def is_main_process() -> bool:
    """False in a process started for a distributed rank other than 0.

    Lightning's ``ddp`` strategy runs the same command line again in every rank process (with
    ``LOCAL_RANK``/``NODE_RANK`` set), torchrun and SLURM set ``RANK``/``SLURM_PROCID``: what a
    command does outside ``Trainer.fit`` (directories, predictions, files) must happen once.
    """
    for name in ("RANK", "SLURM_PROCID"):
        if os.environ.get(name, "").isdigit():
            return int(os.environ[name]) == 0
    return os.environ.get("NODE_RANK", "0") == "0" and os.environ.get("LOCAL_RANK", "0") == "0"


def make_run_dir(config: Config, kind: str, argv: list[str] | None = None, path: Path | None = None) -> Path:
    """Create ``<runs_dir>/<name>-<kind>-<time>/`` (or ``path``, which may already exist)
    holding the resolved ``config.yaml`` and ``run.json`` (git commit, command line, time).

    Only the main process creates and writes; it also exports the directory (``ABAW_RUN_DIR``)
    so that the rank processes a launcher starts from it use the same one without writing.
    """
    if not is_main_process():
        return path or Path(os.environ.get(RUN_DIR_ENV) or tempfile.mkdtemp(prefix=f"{config.name}-{kind}-rank-"))
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S-%f")
    run_dir = path or Path(config.runs_dir) / f"{config.name}-{kind}-{stamp}"
    run_dir.mkdir(parents=True, exist_ok=path is not None)
    os.environ[RUN_DIR_ENV] = str(run_dir)
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


def load_run_config(run_dir: str | Path) -> Config:
    """The resolved configuration a run directory was made with."""
    return load_config(Path(run_dir) / "config.yaml")
