"""``abaw cv`` never costs a finished fold: the whole configuration is built before the CV
directory is touched, and a fold is retrained beside its directory, replacing it only once
finished."""

import dataclasses
import shutil
from pathlib import Path

import pytest
import yaml

from abaw.cli import main
from abaw.config import ConfigError, load_config
from abaw.cv import run_cv
from abaw.training.epochlog import EpochLog


def write_config(tmp: Path, root: Path, cache: Path) -> Path:
    from tests.test_training import FEATURES

    config = tmp / "expr.yaml"
    config.write_text(yaml.safe_dump({
        "name": "safe", "data": {"root": str(root)}, "runs_dir": str(tmp / "runs"), "folds": {"k": 2},
        "extract": {"cache": str(cache), "features": FEATURES}, "cv": {"personalise": []},
        "train": {"task": "expr", "features": ["face", "voice"], "epochs": 1, "window": 16, "batch_size": 8,
                  "model": {"name": "fusion_moe", "hidden": 16, "experts": 2}}}))
    return config


@pytest.fixture(scope="module")
def finished(sample_root, tmp_path_factory) -> tuple[Path, Path]:
    """(root, cache) of the sample with synthetic features, and a finished 2-fold EXPR CV run
    under ``<tmp>/runs`` (``<tmp>`` returned first)."""
    from tests.test_training import write_synthetic_features

    tmp = tmp_path_factory.mktemp("finished")
    write_synthetic_features(sample_root, tmp / "cache")
    assert main(["cv", "--config", str(write_config(tmp, sample_root, tmp / "cache"))]) == 0
    assert (tmp / "runs" / "safe-cv-expr" / "cv.json").is_file()
    return tmp, sample_root


@pytest.fixture
def run(finished, tmp_path) -> tuple[Path, Path]:
    """This test's own copy of the finished run: (config file, CV directory)."""
    tmp, root = finished
    shutil.copytree(tmp / "runs", tmp_path / "runs")
    return write_config(tmp_path, root, tmp / "cache"), tmp_path / "runs" / "safe-cv-expr"


def snapshot(folder: Path) -> dict[str, tuple[bytes, int]]:
    return {p.relative_to(folder).as_posix(): (p.read_bytes(), p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_a_trainer_typo_is_one_line_and_touches_no_file_of_the_finished_run(run, capsys):
    config, cv_dir = run
    before = snapshot(cv_dir)
    capsys.readouterr()
    assert main(["cv", "--config", str(config), "train.trainer.devics=1"]) == 1
    err = capsys.readouterr().err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert err.startswith("abaw: error: train.trainer.devics: unknown lightning.Trainer argument 'devics'; valid: ")
    assert err.strip().endswith("did you mean 'devices'?")
    assert snapshot(cv_dir) == before  # config.yaml included: nothing was written


def test_a_model_that_cannot_be_built_is_refused_before_the_cv_directory_is_touched(run):
    config_path, cv_dir = run
    config = load_config(config_path)
    # Built in code, so load_config's checks never saw it: the model is built before any fold.
    bad = dataclasses.replace(config, train=dataclasses.replace(config.train, model={"name": "mlp", "hiden": 64}))
    before = snapshot(cv_dir)
    with pytest.raises(ConfigError, match=r"^train.model.hiden: model 'mlp' has no option 'hiden'"):
        run_cv(bad)
    wrong_type = dataclasses.replace(config, train=dataclasses.replace(config.train, model={"name": "mlp",
                                                                                          "hidden": "wide"}))
    with pytest.raises(ConfigError, match=r"^train.model / train.fallback: the head cannot be built: "):
        run_cv(wrong_type)
    assert snapshot(cv_dir) == before


def test_a_fit_that_fails_midway_leaves_the_finished_fold_whole(run, monkeypatch, capsys):
    config, cv_dir = run
    fold0 = snapshot(cv_dir / "fold0")

    def interrupted(self, trainer, module):
        raise RuntimeError("interrupted after an epoch")

    with monkeypatch.context() as patch:
        patch.setattr(EpochLog, "on_train_epoch_end", interrupted)
        with pytest.raises(RuntimeError, match="interrupted after an epoch"):
            main(["cv", "--config", str(config), "--folds", "0", "train.lr=0.01"])
    assert snapshot(cv_dir / "fold0") == fold0
    assert (cv_dir / "fold0.training" / "stream_statistics.json").is_file()  # where the failed fit wrote

    # Once a retraining succeeds, it replaces the fold and nothing is left beside it.
    assert main(["cv", "--config", str(config), "--folds", "0", "train.lr=0.01"]) == 0
    assert snapshot(cv_dir / "fold0") != fold0
    assert sorted(p.name for p in cv_dir.iterdir() if p.is_dir()) == ["fold0", "fold1"]
    done = yaml.safe_load((cv_dir / "fold0" / "done.json").read_text())
    assert done["checkpoint"] == "fold0/checkpoints/last.ckpt" and (cv_dir / done["checkpoint"]).is_file()
    assert "fold 0: trained under another configuration, training again" in capsys.readouterr().err


def test_the_trial_build_leaves_the_random_state_to_the_fit(tmp_path):
    """check_fit builds the head to see that it can be built; the fit seeded before it must
    still draw the initial weights it draws without the check (the demo's figures depend on it)."""
    from types import SimpleNamespace

    import torch

    from abaw.training.train import check_fit

    config = load_config(write_config(tmp_path, tmp_path / "root", tmp_path / "cache"),
                         ["train.fallback={stream: face, hidden: 8}"])
    streams = {"face": SimpleNamespace(modality="visual", dim=12), "voice": SimpleNamespace(modality="audio", dim=6)}
    torch.manual_seed(0)
    expected = torch.rand(4)
    torch.manual_seed(0)
    check_fit(config, streams)
    assert torch.equal(torch.rand(4), expected)
