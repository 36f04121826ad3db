"""``abaw run CONFIG``: the whole workflow, step after step, from one configuration.

Steps so far: sample data (when configured and absent) -> inspect -> folds -> score the trivial
baseline on the validation split through the submission writer and ``abaw score``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from abaw.baseline import constant_rows, trivial_values
from abaw.config import load_config, make_run_dir
from abaw.data import load_tracks
from abaw.data.records import DataError
from abaw.folds import ensure_folds
from abaw.inspection import format_report, inspect_root
from abaw.score import score_submission
from abaw.tasks import get_task
from submissions.writer import write_dvd_folder, write_task_file


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run(config_path: str | Path, overrides: list[str] | None = None) -> int:
    """Run the configured workflow; returns the process exit status."""
    config = load_config(config_path, overrides)
    tasks = [get_task(name) for name in config.tasks]
    root = Path(config.data.root)
    if not root.exists() or not any(root.iterdir()):
        if not config.data.generate:
            raise DataError(root, "dataset root not found (set data.generate=true to create the sample dataset)")
        from abaw.data.sample import generate

        log(f"[1/4] generating the sample dataset in {root}")
        options = {k: v for k, v in (("tracks", config.sample.tracks), ("seconds", config.sample.seconds)) if v}
        generate(root, seed=config.sample.seed, progress=log, **options)
    else:
        log(f"[1/4] using the dataset in {root}")
    run_dir = make_run_dir(config, "run")
    log(f"      run directory: {run_dir}")

    log("[2/4] inspecting the dataset")
    stats, problems = inspect_root(root, log=log)
    report = format_report(stats, problems)
    (run_dir / "inspect.txt").write_text(report + "\n")
    print(report)
    if any(p.severity == "error" for p in problems):
        log("the dataset has errors; fix them first (see above)")
        return 1

    log(f"[3/4] cross-validation folds in {config.folds_path}")
    for dataset in sorted({t.dataset for t in tasks}):
        folds, _ = ensure_folds(root, dataset, config.folds_path, k=config.folds.k, seed=config.folds.seed)
        sizes = [sum(1 for f in folds.videos.values() if f == k) for k in range(folds.k)]
        log(f"      {dataset}: {len(folds.videos)} videos in {folds.k} folds of {sizes} videos")

    log("[4/4] trivial baseline on the validation split, written and scored as a submission")
    scores = {}
    for task in tasks:
        train = load_tracks(root, task, splits=("train",))
        validation = load_tracks(root, task, splits=("validation",))
        rows = constant_rows(validation, trivial_values(task, train))
        expected = {t.id: t.frames for t in validation}
        target = run_dir / "baseline" / (task.name if task.dataset == "dvd" else f"{task.name}.txt")
        if task.dataset == "dvd":
            write_dvd_folder(target, expected, rows)
        else:
            write_task_file(target, task, expected, rows)
        scores[task.name] = score_submission(task, target, root, "validation").value
    (run_dir / "scores.json").write_text(json.dumps({"baseline_validation": scores}, indent=1) + "\n")
    print("\ntask  trivial baseline (validation)")
    for name, value in scores.items():
        print(f"{name.upper():<5} {value:.4f}")
    print(f"\nrun directory: {run_dir}")
    return 0
