"""The abaw command: one sub-command per step of the workflow.

Every entry point is ``main(argv) -> int`` so tests call it directly. The first line of this
docstring is the description ``abaw --help`` prints, so it holds no markup.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from abaw.config import Config, ConfigError, is_main_process  # noqa: E402
from abaw.data.records import DataError  # noqa: E402
from abaw.tasks import TASKS, get_task  # noqa: E402
from features.media import MediaError  # noqa: E402


def _sample_data(args: argparse.Namespace) -> int:
    from abaw.sample import generate

    options = {k: v for k, v in (("tracks", args.tracks), ("seconds", args.seconds)) if v is not None}
    manifest = generate(Path(args.out), seed=args.seed, progress=lambda m: print(m, file=sys.stderr), **options)
    print(f"wrote sample dataset to {args.out} ({len(manifest['tracks'])} task tracks, "
          f"{len(manifest['videos'])} videos)")
    return 0


def _inspect(args: argparse.Namespace) -> int:
    from abaw.inspection import main_inspect

    if (args.root is None) == (args.config is None):
        raise ConfigError("abaw inspect takes a dataset root or --config CONFIG (its data.root), not both")
    tasks = [get_task(name) for name in args.task] if args.task else None
    if args.config is None:
        return main_inspect(args.root, probe_videos=not args.skip_videos, tasks=tasks)
    from abaw.config import load_config
    from abaw.extraction import configured_faces

    config = load_config(args.config)
    print(f"inspecting {config.data.root} (data.root of {args.config}); Aff-Wild2 faces from "
          f"{', '.join(sorted(configured_faces(config, 'affwild2')))}", file=sys.stderr)
    if tasks is None and config.tasks:
        tasks = [get_task(name) for name in config.tasks]
    return main_inspect(config.data.root, probe_videos=not args.skip_videos, tasks=tasks,
                        faces=configured_faces(config, "affwild2"))


def _score(args: argparse.Namespace) -> int:
    from abaw.score import score_submission

    task = get_task(args.task)
    result = score_submission(task, args.predictions, args.root, args.split)
    print(f"{task.name.upper()} {args.split}: {result.value:.6f}")
    for name, value in result.parts.items():
        print(f"  {name:<12} {value:.6f}")
    return 0


def _folds(args: argparse.Namespace) -> int:
    from abaw.folds import absent_from_training, absent_lines, distribution_names, ensure_folds, fold_distributions

    task = get_task(args.task)
    folds, tracks = ensure_folds(args.root, task.dataset, args.out, k=args.k, seed=args.seed, rebuild=args.rebuild)
    if task not in tracks:
        raise DataError(Path(args.root), f"no {task.name.upper()} annotations to describe")
    per_fold, pooled, distance = fold_distributions(task, tracks[task], folds)
    counts = [sum(1 for t in tracks[task] if folds.fold_of(t) == f) for f in range(folds.k)]
    print(f"{task.name.upper()} folds (k={folds.k}, seed={folds.seed}) saved in {args.out}")
    grouped = "participants with several videos" if task.dataset == "bah" else "sources cut into several videos"
    print(f"{grouped}, each kept in one fold: {len(folds.merged_sources)}")
    names = distribution_names(task)
    widths = [max(5, len(name)) for name in names]

    def row(values) -> str:
        return " ".join(f"{v:>{w}.3f}" for v, w in zip(values, widths))

    print(f"fold  tracks  L2-to-pooled  {' '.join(f'{n:>{w}}' for n, w in zip(names, widths))}")
    for fold in range(folds.k):
        print(f"{fold:>4}  {counts[fold]:>6}  {distance[fold]:>12.4f}  {row(per_fold[fold])}")
    print(f"pooled                      {row(pooled)}")
    print(f"largest L2 distance to the pooled distribution: {distance.max():.4f}")
    for line in absent_lines(task, absent_from_training(task, folds, tracks[task])):
        print(line)
    return 0


def _extract(args: argparse.Namespace) -> int:
    from abaw.config import load_config
    from abaw.extraction import run_extract

    overrides = list(args.overrides)
    if args.devices is not None:
        overrides.append(f"extract.devices={args.devices}")
    if args.num_nodes is not None:
        overrides.append(f"extract.num_nodes={args.num_nodes}")
    return run_extract(load_config(args.config, overrides))


def _train(args: argparse.Namespace) -> int:
    from abaw.config import load_config, make_run_dir
    from abaw.training.train import train

    config = load_config(args.config, list(args.overrides))
    suffix = "" if args.fold is None else f"-fold{args.fold}"
    # Created once train() has read its inputs: a refused run leaves no empty directory behind.
    result = train(config, lambda: make_run_dir(config, f"train-{config.train.task}{suffix}"), fold=args.fold)
    if not is_main_process():  # a rank process of a distributed fit: rank 0 reports
        return 0
    print(f"{config.train.task.upper()} best validation score {result.best_score:.4f}")
    print(f"run directory: {result.run_dir}")
    return 0


def _cv(args: argparse.Namespace) -> int:
    from abaw.config import load_config
    from abaw.cv import run_cv
    from abaw.config import SOURCES
    from abaw.videocv import run_video_cv

    config = load_config(args.config, list(args.overrides))
    task = get_task(config.train.task)
    if task.template_key and is_main_process():  # said now, not after the folds have trained
        from abaw.data import affwild2

        missing = affwild2.missing_template(affwild2.find_layout(config.data.root), task)
        if missing is not None:
            print(f"abaw: warning: {missing}; abaw predict needs it for the test set", file=sys.stderr)
    folds = [int(f) for f in args.folds.split(",")] if args.folds else None
    # EMI, A/H: the same protocol, and a report about videos
    cross_validate = run_video_cv if task.level == "video" else run_cv
    run_dir, summary = cross_validate(config, folds)
    if not is_main_process():
        return 0
    if summary is None:
        print(f"folds trained; the report needs every fold. CV directory: {run_dir}")
        return 0
    scores = [f"{SOURCES[name]} {part['mean']:.4f} ± {part['std']:.4f}" for name, part in summary["sources"].items()]
    print(f"{config.train.task.upper()} CV: {', '.join(scores)}, "
          f"post-processed {summary['post']['mean']:.4f} ± {summary['post']['std']:.4f}")
    print(f"report: {run_dir / 'report.md'}")
    return 0


def _predict(args: argparse.Namespace) -> int:
    from abaw.predict import predict

    print(f"wrote {predict(args.run, args.split)}")
    return 0


def _submit(args: argparse.Namespace) -> int:
    from abaw.submit import submit

    for path in submit(args.run, args.out, args.split, args.format, args.probabilities):
        print(f"wrote {path}")
    return 0


def _faces(args: argparse.Namespace) -> int:
    from abaw.faces import run_faces
    from features.faces import DetectorSpec

    settings = {k: v for k, v in (("detect_size", args.detect_size), ("frame_step", args.frame_step),
                                  ("min_face_size", args.min_face_size)) if v is not None}
    if settings.get("detect_size") == 0:
        settings["detect_size"] = None
    return run_faces(args.videos, args.out, DetectorSpec(**settings), overrides=args.overrides, device=args.device)


def _run(args: argparse.Namespace) -> int:
    from abaw.pipeline import run

    return run(args.config, args.overrides)


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every sub-command."""
    parser = argparse.ArgumentParser(prog="abaw", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     help="the step to run (abaw COMMAND --help for its options)")

    p = commands.add_parser("sample-data", help="write the procedurally generated sample dataset")
    p.add_argument("out", help="folder to create (must not exist or be empty)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed writes the same bytes "
                                                       "(default: %(default)s)")
    p.add_argument("--tracks", type=int, default=None, help="Aff-Wild2 train+validation videos")
    p.add_argument("--seconds", type=float, default=None, help="typical video duration")
    p.set_defaults(handler=_sample_data)

    p = commands.add_parser("inspect", help="validate a dataset root and summarise it")
    p.add_argument("root", nargs="?", help="dataset root: the Aff-Wild2 and/or DVD folder, or the folder holding them")
    p.add_argument("--config", default=None,
                   help="read the root from this config's data.root (and its tasks), and judge the faces against "
                        "its extract.faces (no missing-crops warning when faces are detected)")
    p.add_argument("--task", action="append", choices=sorted(TASKS),
                   help="inspect only this task (repeatable; default: every task, absent ones reported)")
    p.add_argument("--skip-videos", action="store_true", help="do not open raw videos (no fps column)")
    p.set_defaults(handler=_inspect)

    p = commands.add_parser("score", help="score a submission-format prediction file with the official metric")
    p.add_argument("--task", required=True, choices=sorted(TASKS), help="the task the predictions are for")
    p.add_argument("--split", default="Validation_Set",
                   help="the annotated split to score against, e.g. Train_Set (default: %(default)s)")
    p.add_argument("predictions", help="file (Aff-Wild2), or folder/zip of per-track files")
    p.add_argument("root", help="dataset root with the annotations")
    p.set_defaults(handler=_score)

    p = commands.add_parser("folds", help="build (or read) grouped, balanced CV folds and describe them")
    p.add_argument("--task", required=True, choices=sorted(TASKS),
                   help="the task whose label distribution is described (folds cover its whole dataset)")
    p.add_argument("--k", type=int, default=5, help="number of folds (default: %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="seed of the fold assignment (default: %(default)s)")
    p.add_argument("--out", default=str(Config().folds_path),
                   help="the folds file, shared with abaw cv (default: %(default)s); read if it holds "
                        "folds of this root")
    p.add_argument("--rebuild", action="store_true", help="replace folds saved for this dataset")
    p.add_argument("root", help="dataset root with the train and validation annotations")
    p.set_defaults(handler=_folds)

    p = commands.add_parser("faces", help="detect and track faces in raw videos: one CSV of boxes per video")
    p.add_argument("videos", nargs="+", metavar="VIDEO_OR_ROOT", help="video files, or folders searched for videos")
    p.add_argument("--out", required=True, help="folder of the <video stem>.csv files (a rerun resumes)")
    p.add_argument("--device", default="auto", help="auto (GPU when there is one), cpu or cuda")
    p.add_argument("--overrides", default=None, help="per-video settings (YAML): identity, min_face_size, "
                                                      "threshold, box, no_face")
    p.add_argument("--detect-size", type=int, default=None,
                   help="longest side of the frames the detector sees (default 640; 0: as decoded)")
    p.add_argument("--frame-step", type=int, default=None,
                   help="detect on every N-th frame, interpolate between (default 1)")
    p.add_argument("--min-face-size", type=int, default=None, help="smallest face in full-frame pixels (default 20)")
    p.set_defaults(handler=_faces)

    p = commands.add_parser("extract", help="extract features once into the cache (resumable)")
    p.add_argument("--config", required=True, help="e.g. configs/extract/sample.yaml")
    p.add_argument("--devices", type=int, default=None, help="processes per node (Lightning Fabric)")
    p.add_argument("--num-nodes", type=int, default=None, help="machines taking part (Lightning Fabric)")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the config")
    p.set_defaults(handler=_extract)

    p = commands.add_parser("train", help="train one task's head on the feature cache")
    p.add_argument("--config", required=True, help="e.g. configs/task/expr.yaml")
    p.add_argument("--fold", type=int, default=None, help="train on the other folds, validate on this one")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the config")
    p.set_defaults(handler=_train)

    p = commands.add_parser("cv", help="K-fold cross-validation, post-processing tuning and report")
    p.add_argument("--config", required=True, help="e.g. configs/task/expr.yaml")
    p.add_argument("--folds", default=None, help="comma-separated folds to run (default: all)")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the config")
    p.set_defaults(handler=_cv)

    p = commands.add_parser("predict", help="fold-ensemble predictions with the tuned post-processing")
    p.add_argument("--run", required=True, help="a CV directory written by abaw cv")
    p.add_argument("--split", default="test", help="test (default), or Validation_Set/Train_Set")
    p.set_defaults(handler=_predict)

    p = commands.add_parser("submit", help="write the challenge files, checked against the templates")
    p.add_argument("--run", required=True, help="a CV directory with predictions (abaw predict)")
    p.add_argument("--out", required=True, help="output folder")
    p.add_argument("--split", default="test",
                   help="the split abaw predict wrote predictions for (default: %(default)s)")
    p.add_argument("--format", default="per-task", choices=["per-task", "per-track"],
                   help="Aff-Wild2: one file per task (6th edition on) or one per track (before)")
    p.add_argument("--probabilities", action="store_true",
                   help="A/H: video_path,p0,p1,pred (the fold ensemble's class probabilities) instead of video_path,pred")
    p.set_defaults(handler=_submit)

    p = commands.add_parser("run", help="run the whole workflow from a config file")
    p.add_argument("config", help="e.g. configs/demo.yaml or configs/real/run.yaml")
    p.add_argument("overrides", nargs="*", help="key=value overrides of the config")
    p.set_defaults(handler=_run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``abaw`` console script."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except (DataError, ConfigError, MediaError, ValueError, FileNotFoundError) as e:
        print(f"abaw: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
