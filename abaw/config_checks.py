"""Checks of the configuration values its dataclasses cannot type: the model and fallback
blocks (free-form mappings handed to a model's constructor) and the ``cv`` prediction sources;
and where in a YAML file a key is written, so that an error names the file and the line.

Apart from :mod:`abaw.config` because the checks read the model registry (:mod:`fusion`, which
imports torch), which imports the configuration.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml


def did_you_mean(word: object, valid: Iterable[object]) -> str:
    """``"; did you mean 'hidden'?"`` for the entry of ``valid`` closest to ``word``, or ``""``."""
    close = difflib.get_close_matches(str(word), [str(v) for v in valid], n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


def unknown(what: str, word: object, valid: Iterable[object]) -> str:
    """``unknown <what> 'fusoin'; valid: fusion, fallback; did you mean 'fusion'?``"""
    valid = [str(v) for v in valid]
    return f"unknown {what} {word!r}; valid: {', '.join(valid)}{did_you_mean(word, valid)}"


def yaml_error(path: Path, error: yaml.YAMLError) -> str:
    """One line for a YAML syntax error: ``<path>:<line>: not valid YAML: <problem>``."""
    mark = getattr(error, "problem_mark", None)
    where = f"{path}:{mark.line + 1}" if mark is not None else str(path)
    problem = getattr(error, "problem", None) or str(error).splitlines()[0]
    context, start = getattr(error, "context", None), getattr(error, "context_mark", None)
    if context and start is not None:
        problem += f" ({context} from line {start.line + 1})"
    return f"{where}: not valid YAML: {problem}"


def key_line(path: Path, key: str) -> int | None:
    """1-based line where the dotted ``key`` (``train.model.hiden``) is written in the YAML file
    at ``path``; None when the file does not write it as nested mappings."""
    try:
        node = yaml.compose(path.read_text(), Loader=yaml.SafeLoader)
    except (OSError, yaml.YAMLError):
        return None
    line = None
    for part in key.split("."):
        if not isinstance(node, yaml.MappingNode):
            return None
        match = next(((k, v) for k, v in node.value if k.value == part), None)
        if match is None:
            return None
        line, node = match[0].start_mark.line + 1, match[1]
    return line


def config_problems(config: Any, sources: Iterable[str]) -> list[tuple[str, str]]:
    """``(dotted key, problem)`` of every value of ``config`` (an :class:`abaw.config.Config`,
    not imported: that module imports this one) that would fail only once a run has started: a
    model or fallback option its constructor does not take (found on its keyword parameters), a
    model unknown or of the other level (frame-wise or video-level) than the task's, and a
    ``cv.primary`` / ``cv.secondary`` that is none of the prediction ``sources``."""
    from abaw.tasks import TASKS
    from fusion.models import model_options, registered_models

    problems = []
    model = dict(config.train.model)
    task = TASKS.get(str(config.train.task).lower())
    name = model.get("name")
    models = registered_models(task.level if task is not None else None)
    if name in registered_models() and name not in models:
        problems.append(("train.model.name", f"{task.name.upper()} is a {task.level}-level task and {name!r} a model "
                                             f"of the other level; valid for it: {', '.join(models)}"))
    elif name not in models:
        problems.append(("train.model.name", unknown("model", name, models)))
    else:
        problems += _option_problems("train.model", model, f"model {name!r}", ["name"], model_options(name))
    if config.train.fallback is not None:
        fallback = dict(config.train.fallback)
        features = list(config.train.features)
        if fallback.get("stream") is None:
            problems.append(("train.fallback", "the fallback MLP names no stream; e.g. {stream: face, hidden: 128}"))
        elif features and fallback["stream"] not in features:  # an empty list is refused when training starts
            stream = fallback["stream"]
            problems.append(("train.fallback.stream", f"the fallback MLP reads one of the head's streams, and "
                                                      f"{stream!r} is not in train.features ({', '.join(features)})"
                                                      f"{did_you_mean(stream, features)}"))
        problems += _option_problems("train.fallback", fallback, "the fallback MLP", ["stream"], model_options("mlp"))
    sources = list(sources)
    if config.cv.primary not in sources:
        problems.append(("cv.primary", unknown("prediction source", config.cv.primary, sources)))
    elif config.cv.primary == "fallback" and config.train.fallback is None:
        problems.append(("cv.primary", "the fallback source is the MLP of train.fallback, which is not configured "
                                       "(e.g. train.fallback={stream: face})"))
    if config.cv.secondary is not None and config.cv.secondary not in sources:
        problems.append(("cv.secondary", unknown("prediction source", config.cv.secondary, sources + ["null"])))
    return problems


def _option_problems(block: str, options: dict, owner: str, own: list[str],
                     valid: list[str] | None) -> list[tuple[str, str]]:
    """The entries of ``options`` (the mapping at ``block``) that are neither ``own`` keys nor
    keyword options ``valid`` of the constructor (None: it takes any)."""
    if valid is None:
        return []
    allowed = own + valid
    return [(f"{block}.{key}", f"{owner} has no option {key!r}; valid: {', '.join(allowed)}"
                               f"{did_you_mean(key, allowed)}") for key in options if key not in allowed]
