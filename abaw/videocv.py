"""Cross-validation of the video-level tasks (EMI, A/H): the frame-wise protocol, a video
being a track of one row, and a report that speaks of videos.

Everything :mod:`abaw.cv` guarantees holds as it is, because it is that code: the CV
directory (:class:`abaw.rundir.CVDir`), folds grouped by participant (BAH) or by video (EMI)
and balanced on the labels (:mod:`abaw.folds`), each fold model its last epoch, out-of-fold
predictions (one row per video, from every frame: :func:`abaw.training.video.predict_videos`),
post-processing tuned on the other folds only (the A/H decision threshold; EMI's clip to
[0, 1]: :mod:`abaw.postprocess` on one-row tracks). What is added here is the report's
video-level part: Pearson r per intensity and per fold (EMI), the confusion matrix of the
videos (A/H), and the parts plot under its metric's name; the frame-wise timeline plot, which
has one point per video, is dropped.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from abaw.config import Config
from abaw.cv import nested_postprocess, run_cv, track_output
from abaw.folds import ensure_folds
from abaw.metrics import score
from abaw.rundir import CVDir
from abaw.runtime import stderr_log
from abaw.tasks import Task, get_task

METRIC_NAMES = {"pearson": "Pearson r", "macro_f1": "F1", "ccc": "CCC", "f1": "F1"}


def run_video_cv(config: Config, folds_to_run: list[int] | None = None, log=None) -> tuple[Path, dict | None]:
    """``abaw cv`` of EMI or A/H: :func:`abaw.cv.run_cv`, then the video-level report part
    once every fold is finished. Returns the CV directory and the summary (None until then)."""
    log = log or stderr_log
    task = get_task(config.train.task)
    if task.level != "video":
        raise ValueError(f"{task.name.upper()} is a frame-wise task: use abaw.cv.run_cv")
    run_dir, summary = run_cv(config, folds_to_run, log)
    if summary is not None:
        write_video_report(config, CVDir(run_dir), summary)
    return run_dir, summary


def held_out_decisions(config: Config, cv: CVDir) -> dict[int, tuple[np.ndarray, np.ndarray]]:
    """Per fold, the held-out videos' (N, C) labels and post-processed decisions, each fold
    decided with parameters tuned on the other folds (what the CV score counts)."""
    task = get_task(config.train.task)
    folds, tracks = ensure_folds(config.data.root, task.dataset, config.folds_path, k=config.folds.k,
                                 seed=config.folds.seed)
    per_fold = {}
    for k in range(folds.k):
        oof = cv.oof(k)
        videos = [t for t in tracks[task] if folds.fold_of(t) == k]
        per_fold[k] = (videos, [track_output(oof[t.id], config.cv.primary, config.cv.secondary) for t in videos])
    _, pooled, _ = nested_postprocess(task, per_fold, config.cv.search)
    decided, start = {}, 0
    for k, (videos, _) in per_fold.items():
        end = start + len(videos)
        decided[k] = (np.concatenate(pooled["labels"][start:end]), np.concatenate(pooled["post"][start:end]))
        start = end
    return decided


def confusion_counts(labels: np.ndarray, decisions: np.ndarray) -> np.ndarray:
    """(2, 2) videos by true class (rows) and decided class (columns)."""
    matrix = np.zeros((2, 2), dtype=int)
    np.add.at(matrix, (labels[:, 0].astype(int), decisions[:, 0].astype(int)), 1)
    return matrix


def write_video_report(config: Config, cv: CVDir, summary: dict) -> Path:
    """Complete ``report.md`` of a video-level CV directory (see the module docstring)."""
    from abaw.report import save_figure, plt

    task = get_task(config.train.task)
    decided = held_out_decisions(config, cv)
    report = cv.path / "report.md"
    lines = [line for line in report.read_text().splitlines() if "timeline.png" not in line]
    (cv.path / "timeline.png").unlink(missing_ok=True)
    metric = METRIC_NAMES[task.metric]
    parts = summary["pooled_post"]["parts"]
    figure, axis = plt.subplots(figsize=(7, 3.5))
    axis.bar(list(parts), list(parts.values()))
    axis.set_ylabel(metric)
    axis.set_title("pooled over the held-out videos, post-processed")
    axis.tick_params(axis="x", rotation=45)
    save_figure(figure, cv.path / "parts.png")
    videos = sum(len(labels) for labels, _ in decided.values())
    lines += ["", f"## Videos ({videos} held out across {len(decided)} folds)", ""]
    lines += _emi_lines(task, decided) if task.metric == "pearson" else _ah_lines(decided, summary)
    report.write_text("\n".join(lines) + "\n")
    return report


def _emi_lines(task: Task, decided: dict[int, tuple[np.ndarray, np.ndarray]]) -> list[str]:
    """Pearson r of every intensity in every fold, and the fold mean (the official score)."""
    lines = ["Pearson r per intensity across each fold's held-out videos (post-processed: clipped to [0, 1]):", "",
             "| fold | " + " | ".join(task.labels) + " | mean |", "|---" * (len(task.labels) + 2) + "|"]
    for k, (labels, decisions) in decided.items():
        result = score(task, labels, decisions)
        lines.append(f"| {k} | " + " | ".join(f"{result.parts[n]:.3f}" for n in task.labels) + f" | {result.value:.4f} |")
    return lines


def _ah_lines(decided: dict[int, tuple[np.ndarray, np.ndarray]], summary: dict) -> list[str]:
    """The confusion matrix of every held-out video's decision, and the tuned thresholds."""
    matrix = sum(confusion_counts(labels, decisions) for labels, decisions in decided.values())
    threshold = summary["postprocess"]["thresholds"]
    return ["Confusion matrix of the held-out videos (rows: true class; columns: decision, each fold at the "
            "threshold tuned on the other folds):", "",
            "| true \\ decided | 0 (no A/H) | 1 (A/H) |", "|---|---|---|",
            f"| 0 (no A/H) | {matrix[0, 0]} | {matrix[0, 1]} |", f"| 1 (A/H) | {matrix[1, 0]} | {matrix[1, 1]} |", "",
            f"Decision threshold for the test videos (tuned on every fold): {threshold[0] if threshold else 0.5:g}"]
