"""The CV report: ``report.md`` with the score table and PNG plots, in the CV directory."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only; no display on training machines
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from abaw.config import SOURCES  # noqa: E402
from abaw.tasks import Task  # noqa: E402


def save_figure(figure, path: Path) -> str:
    """Save ``figure`` as ``path`` (PNG), close it, and return its name for report.md."""
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path.name


def fold_bars(summary: dict, path: Path) -> str:
    folds = sorted(summary["folds"], key=int)
    raw = [summary["folds"][k]["raw"] for k in folds]
    post = [summary["folds"][k]["post"] for k in folds]
    figure, axis = plt.subplots(figsize=(6, 3.5))
    x = np.arange(len(folds))
    axis.bar(x - 0.2, raw, 0.4, label=SOURCES.get(summary.get("primary"), "model"))
    axis.bar(x + 0.2, post, 0.4, label="post-processed")
    axis.set_xticks(x, [f"fold {k}" for k in folds])
    axis.set_ylabel("official score")
    axis.legend()
    return save_figure(figure, path)


def part_bars(task: Task, summary: dict, path: Path) -> str:
    parts = summary["pooled_post"]["parts"]
    figure, axis = plt.subplots(figsize=(7, 3.5))
    axis.bar(list(parts), list(parts.values()))
    axis.set_ylabel("CCC" if task.kind == "regression" else "F1")
    axis.set_title("pooled out-of-fold, post-processed")
    axis.tick_params(axis="x", rotation=45)
    return save_figure(figure, path)


def decided_by(task: Task, summary: dict) -> str:
    """What the post-processed decisions of a CV summary come from: its primary source, and for
    EXPR the secondary one the confidence fallback turns to, when the folds predicted one."""
    source = SOURCES.get(summary.get("primary"), "model")
    secondary = summary.get("secondary")
    if task.kind == "multiclass" and secondary in SOURCES:
        return f"{source}, {SOURCES[secondary]} where it is unsure"
    return source


def confusion(task: Task, labels: np.ndarray, decisions: np.ndarray, valid: np.ndarray, path: Path,
              title: str = "") -> str:
    names = task.labels if task.kind == "multiclass" else ("0", "1")
    keep = valid[:, 0]
    truth, predicted = labels[keep, 0].astype(int), decisions[keep, 0].astype(int)
    matrix = np.zeros((len(names), len(names)), dtype=int)
    np.add.at(matrix, (truth, predicted), 1)
    rates = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
    figure, axis = plt.subplots(figsize=(6, 5))
    axis.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    for i in range(len(names)):
        for j in range(len(names)):
            axis.text(j, i, matrix[i, j], ha="center", va="center", fontsize=7)
    axis.set_xticks(range(len(names)), names, rotation=45, ha="right")
    axis.set_yticks(range(len(names)), names)
    axis.set_xlabel("predicted")
    axis.set_ylabel("true")
    axis.set_title(title, fontsize=9)
    return save_figure(figure, path)


def va_timeline(track_id: str, labels: np.ndarray, decisions: np.ndarray, valid: np.ndarray, path: Path) -> str:
    figure, axes = plt.subplots(2, 1, figsize=(8, 4), sharex=True)
    for c, (axis, name) in enumerate(zip(axes, ("valence", "arousal"))):
        truth = np.where(valid[:, c], labels[:, c], np.nan)
        axis.plot(truth, label="annotation")
        axis.plot(decisions[:, c], label="prediction")
        axis.set_ylabel(name)
        axis.set_ylim(-1.05, 1.05)
    axes[0].legend(loc="upper right")
    axes[0].set_title(f"track {track_id}")
    axes[1].set_xlabel("frame")
    return save_figure(figure, path)


def personalisation_lines(entry: dict | None) -> list[str]:
    """The report's test-time personalisation table: per fold the trained head's argmax without
    and with each method, whose parameters for fold k were chosen on the other folds only."""
    if not entry:
        return []
    methods = list(entry["methods"])
    lines = [f"## Test-time personalisation ({entry['mode']})", "",
             "| fold | without | " + " | ".join(methods) + " |", "|---" * (len(methods) + 2) + "|"]
    for k in sorted(entry["without"]["folds"], key=int):
        cells = [f"{entry['methods'][m]['folds'][k]['score']:.4f}" for m in methods]
        lines.append(f"| {k} | {entry['without']['folds'][k]:.4f} | " + " | ".join(cells) + " |")
    cells = [f"{entry['methods'][m]['mean']:.4f} ± {entry['methods'][m]['std']:.4f}" for m in methods]
    lines.append(f"| mean ± std | {entry['without']['mean']:.4f} ± {entry['without']['std']:.4f} | "
                 + " | ".join(cells) + " |")
    unit = {"participant": "each participant's held-out videos together",
            "track": "each held-out track on its own"}[entry.get("unit", "track")]
    lines += ["", f"Argmax of the trained head, no post-processing, {unit}; each method's parameters for "
              "fold k were chosen on the other folds only.", ""]
    lines += [f"- {m}: gain {entry['methods'][m]['gain']:+.4f}, parameters on all folds "
              f"`{entry['methods'][m]['params']}`" for m in methods]
    post, chosen = entry.get("post"), entry.get("chosen")
    if post:  # the best method again, as predict runs it: then post-processed
        lines += ["", f"Post-processed (parameters for fold k tuned on the other folds, as in the table above): "
                  f"without {post['without']['mean']:.4f} ± {post['without']['std']:.4f}, with {post['method']} "
                  f"{post['with']['mean']:.4f} ± {post['with']['std']:.4f} ({post['gain']:+.4f})."]
    if chosen:
        lines += ["", f"Chosen for the test set: {chosen}" + (", and postprocess.json tuned on its predictions"
                                                                  if post else "")]
    elif post:
        lines += ["", f"Chosen for the test set: none ({post['method']} gained on the argmax but not once "
                  "post-processed)"]
    else:
        lines += ["", "Chosen for the test set: none (no method gained out of fold)"]
    return lines + [""]


def absent_section(task: Task, absent: dict[str, list[str]] | None) -> list[str]:
    """The report's warning of classes a fold's held-out part has and its training part lacks
    (``abaw.folds.absent_from_training``), by fold; nothing when there are none."""
    if not absent:
        return []
    return ["", "**Classes absent from a fold's training part** (its model never saw them; its score for them is 0):",
            ""] + [f"- fold {k}: {', '.join(names)}" for k, names in sorted(absent.items(), key=lambda i: int(i[0]))]


def write_report(task: Task, run_dir: Path, summary: dict, pooled: dict, per_fold: dict) -> Path:
    """Write the plots and ``report.md`` into ``run_dir``; return the report's path."""
    images = [fold_bars(summary, run_dir / "fold_scores.png"), part_bars(task, summary, run_dir / "parts.png")]
    labels, decisions, valid = (np.concatenate(pooled[k]) for k in ("labels", "post", "valid"))
    source, rows = decided_by(task, summary), "videos" if task.level == "video" else "frames"
    captions = {"confusion": f"Confusion matrix of the post-processed decisions ({source}) on the held-out {rows} "
                             "of every fold, each fold decided with the parameters tuned on the other folds; rows: "
                             "true class, columns: decision, colour: share of the row."}
    if task.kind in ("multiclass", "binary"):
        images.append(confusion(task, labels, decisions, valid, run_dir / "confusion.png",
                                f"Post-processed decisions: {source}\nheld-out {rows} of every fold"))
    if task.kind == "regression":
        held_out = next(iter(per_fold.values()))[0]
        track = held_out[0]
        images.append(va_timeline(track.id, track.labels, pooled["post"][0], track.valid, run_dir / "timeline.png"))
    sources = [name for name in SOURCES if name in summary.get("sources", {})]
    header = [SOURCES[name] + (" (primary)" if name == summary.get("primary") else "") for name in sources]
    lines = [f"# {task.name.upper()} cross-validation", "",
             "| fold | " + " | ".join(header + ["post-processed"]) + " |", "|---" * (len(sources) + 2) + "|"]
    for k in sorted(summary["folds"], key=int):
        cells = [f"{summary['sources'][name]['folds'][k]:.4f}" for name in sources]
        lines.append(f"| {k} | " + " | ".join(cells + [f"{summary['folds'][k]['post']:.4f}"]) + " |")
    cells = [f"{summary['sources'][n]['mean']:.4f} ± {summary['sources'][n]['std']:.4f}" for n in sources]
    lines.append("| mean ± std | " + " | ".join(cells + [f"{summary['post']['mean']:.4f} ± "
                                                          f"{summary['post']['std']:.4f}"]) + " |")
    lines += absent_section(task, summary.get("absent_from_training"))
    lines += ["", "Each source column is that source's argmax (or threshold 0.5), no post-processing. "
              "Post-processed: the primary source, with the fallback between sources where configured, "
              "filled, smoothed and decided."]
    lines += ["", "Post-processed scores of fold k use parameters tuned on the other folds only.", "",
              "| part | pooled, primary source | pooled, post-processed |", "|---|---|---|"]
    for name, value in summary["pooled_post"]["parts"].items():
        lines.append(f"| {name} | {summary['pooled_raw']['parts'][name]:.4f} | {value:.4f} |")
    tuned_on = ("all folds, personalised with " + summary["personalisation"]["chosen"]
                if (summary.get("personalisation") or {}).get("chosen") else "all folds")
    lines += ["", f"Parameters for the test set (tuned on {tuned_on}): `{summary['postprocess']}`", ""]
    lines += personalisation_lines(summary.get("personalisation"))
    for image in images:
        lines += [f"![{Path(image).stem}]({image})"] + ([captions[Path(image).stem], ""]
                                                         if Path(image).stem in captions else [])
    report = run_dir / "report.md"
    report.write_text("\n".join(lines) + "\n")
    return report
