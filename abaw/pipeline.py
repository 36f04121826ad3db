"""``abaw run CONFIG``: the whole workflow from one configuration, frame-wise and video-level
tasks alike.

sample data (when configured and absent) -> inspect -> extract -> cross-validation of every
task (``<tasks_dir>/<task>.yaml`` beside the run config, then the run config itself, then
the overrides) -> fold-ensemble test predictions -> submission files, ending with the table
of CV scores and the files written. Every step reuses what an earlier run finished.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np

from abaw.baseline import constant_rows, trivial_values
from abaw.config import SOURCES, Config, is_main_process, load_config, make_run_dir
from abaw.cv import run_cv
from abaw.data import frame_level, resolve_tasks
from abaw.data.records import DataError
from abaw.extraction import configured_faces, run_extract
from abaw.folds import ensure_folds
from abaw.inspection import format_report, inspect_root
from abaw.metrics import score
from abaw.predict import predict
from abaw.runtime import stderr_log
from abaw.submit import submit
from abaw.tasks import TASKS, Task, get_task
from abaw.training.train import wait_for_main, wait_timeout
from abaw.videocv import run_video_cv


def _cell(mean: float, std: float) -> str:
    return f"{mean:>8.4f} ± {std:.4f}"


log = stderr_log  # every progress line of the pipeline


def baseline_cv(config: Config, task: Task) -> tuple[float, float]:
    """Mean ± std over the folds of the trivial baseline learnt on the other folds."""
    folds, tracks = ensure_folds(config.data.root, task.dataset, config.folds_path, k=config.folds.k,
                                 seed=config.folds.seed)
    values = []
    for k in range(folds.k):
        train = [t for t in tracks[task] if folds.fold_of(t) != k]
        held_out = [t for t in tracks[task] if folds.fold_of(t) == k]
        rows = constant_rows(held_out, trivial_values(task, train))
        values.append(score(task, np.concatenate([t.labels for t in held_out]),
                            np.concatenate([rows[t.id].values for t in held_out]),
                            np.concatenate([t.valid for t in held_out])).value)
    return float(np.mean(values)), float(np.std(values))


def ensure_dataset(config: Config) -> Path:
    root = Path(config.data.root)
    if root.exists() and any(root.iterdir()):
        log(f"[1/5] using the dataset in {root}")
        return root
    if not config.data.generate:
        # generate=true makes a sample dataset, never the user's: it is no remedy for a missing root.
        what = "dataset root not found" if not root.exists() else "dataset root is empty"
        raise DataError(root, f"{what}: set data.root to the folder holding your dataset "
                              "(check it first with abaw inspect ROOT)")
    if not is_main_process():
        # torchrun and SLURM start every rank at once: rank 0 generates, and generate() moves the
        # dataset into place only when it is complete, so its appearance is the signal.
        log(f"[1/5] waiting for rank 0 to generate the sample dataset in {root}")
        deadline = time.monotonic() + wait_timeout().total_seconds()
        while not (root.exists() and any(root.iterdir())):
            if time.monotonic() > deadline:
                raise DataError(root, "rank 0 did not generate the sample dataset within ABAW_WAIT_FOR_MAIN_S")
            time.sleep(1.0)
        return root
    from abaw.sample import generate  # the generator's heavy imports, only when it runs

    log(f"[1/5] generating the sample dataset in {root}")
    options = {k: v for k, v in (("tracks", config.sample.tracks), ("seconds", config.sample.seconds)) if v}
    generate(root, seed=config.sample.seed, **options)
    return root


def run(config_path: str | Path, overrides: list[str] | None = None) -> int:
    """Run the configured workflow; returns the process exit status."""
    config_path = Path(config_path)
    overrides = list(overrides or [])
    config = load_config(config_path, overrides)
    tasks_dir = config_path.parent / config.run.tasks_dir
    # Every task configuration the run reads is read now: a typo in one is said before hours of extraction.
    for file in [f"{name}.yaml" for name in config.tasks or TASKS] + list(config.run.variants.values()):
        if (tasks_dir / file).is_file():
            load_config([tasks_dir / file, config_path], overrides)
    root = ensure_dataset(config)
    # Under Lightning's ddp (or torchrun, SLURM) every rank process runs this command too: only
    # rank 0 makes the run directory and writes; the others write nothing, here or in the fits.
    main = is_main_process()
    run_dir = make_run_dir(config, "run") if main else None
    if main:
        log(f"      run directory: {run_dir}")

    tasks = resolve_tasks(root, config.tasks)
    if main:  # a report: rank 0's is the run's (Lightning's launcher starts the others after it)
        log(f"[2/5] inspecting the dataset (tasks: {', '.join(t.name for t in tasks)})")
        # Judged as this run extracts, and a task it will predict must have its test template.
        stats, problems = inspect_root(root, log=log, tasks=tasks, faces=configured_faces(config, "affwild2"),
                                       need_templates=True)
        (run_dir / "inspect.txt").write_text(format_report(stats, problems) + "\n")
        if any(p.severity == "error" for p in problems):
            print(format_report(stats, problems))
            log("the dataset has errors; fix them first (see above)")
            return 1

    log("[3/5] extracting features (tracks already in the cache are skipped)")
    if run_extract(config, log=log) != 0:
        log("some tracks failed to extract (see above); fix them and rerun")
        return 1

    submission_dir = Path(config.runs_dir) / f"{config.name}-submission"
    table, written = [], []
    for task in tasks:
        name = task.name
        if task.level == "video" and not (tasks_dir / f"{name}.yaml").is_file():
            # A frame-wise recipe holds no video-level head; the root's EMI or BAH part waits for one.
            log(f"[4/5] {name.upper()}: no {tasks_dir / f'{name}.yaml'}, skipped")
            continue
        task_config = load_config([tasks_dir / f"{name}.yaml", config_path], overrides)
        log(f"[4/5] {name.upper()}: {task_config.folds.k}-fold cross-validation")
        # EMI and A/H label videos: the same protocol, their own report part (abaw.videocv).
        cv_dir, summary = (run_cv if task in frame_level(tasks) else run_video_cv)(task_config, log=log)
        if main:  # a rank process only joins the fits; rank 0 predicts, submits and reports
            log(f"[5/5] {name.upper()}: test predictions and submission")
            predict(cv_dir, "test", log=log)
            written += submit(cv_dir, submission_dir)
            table.append((name, summary, baseline_cv(task_config, task), cv_dir))
        # Not in the next task's fit: rank 0's summary and test predictions can outlast its timeout.
        wait_for_main()
    for label, file in config.run.variants.items():
        task_config = load_config([tasks_dir / file, config_path], overrides + [f"name={config.name}-{Path(file).stem}"])
        task = get_task(task_config.train.task)
        if task not in tasks:
            continue
        log(f"[4/5] {label}: {task_config.folds.k}-fold cross-validation ({tasks_dir / file})")
        cv_dir, summary = run_cv(task_config, log=log)
        if main:
            table.append((label, summary, baseline_cv(task_config, task), cv_dir))
        wait_for_main()

    if not main:
        return 0
    width = max(5, *(len(row[0]) for row in table))
    lines = [f"{'task':<{width}} {'trivial baseline':>17}" + "".join(f" {label:>17}" for label in SOURCES.values())
             + f" {'post-processed':>17}"]
    for name, summary, (base_mean, base_std), _ in table:
        cells = [_cell(base_mean, base_std)]
        cells += [_cell(part["mean"], part["std"]) if (part := summary["sources"].get(source)) else f"{'-':>17}"
                  for source in SOURCES]
        lines.append(f"{name.upper() if name in TASKS else name:<{width}} "
                     + " ".join(cells + [_cell(summary["post"]["mean"], summary["post"]["std"])]))
    result = "\n".join(lines)
    (run_dir / "scores.txt").write_text(result + "\n")
    (run_dir / "scores.json").write_text(json.dumps({name: {"baseline": [b, s], "sources": summ["sources"],
                                                            "post": summ["post"], "cv_dir": str(d)}
                                                     for name, summ, (b, s), d in table}, indent=1) + "\n")
    print(f"\n{config.folds.k}-fold cross-validation on train ∪ validation (official metric, mean ± std: each "
          "source as it is, then post-processed)")
    print(result)
    print("\nreports: " + ", ".join(str(d / "report.md") for *_, d in table))
    print("submission files:")
    for path in written:
        print(f"  {path}")
    tip = own_data_tip(root)
    if tip:
        print("\n" + tip)
    return 0


def own_data_tip(root: Path) -> str | None:
    """Where a demo's user goes next; None after a run on the user's own data (not the sample)."""
    from abaw.sample import is_sample

    if not is_sample(root):
        return None
    return ("your own data: put it under data/abaw/ (README, 'Real data'), check it with abaw inspect data/abaw, "
            "then abaw run configs/recipes/offline/run.yaml (weights that ship with the install) "
            "or configs/real/run.yaml")
