"""Cross-validation scoring must never tune on the frames it scores."""

from pathlib import Path

import numpy as np

from abaw.cv import nested_postprocess
from abaw.data.records import Track
from abaw.metrics import score
from abaw.postprocess import TrackOutput, apply, tune
from abaw.tasks import VD


def planted_folds(seed: int = 0) -> dict:
    """VD folds whose probabilities separate the classes perfectly at a threshold that is
    different in every fold: a leak signal only tuning on the fold itself can exploit."""
    rng = np.random.default_rng(seed)
    per_fold = {}
    for k, threshold in enumerate((0.15, 0.35, 0.55, 0.75, 0.9)):
        tracks, outputs = [], []
        for i in range(3):
            y = rng.integers(0, 2, 200)
            p = np.clip(threshold + np.where(y == 1, 1, -1) * rng.uniform(0.005, 0.04, 200), 0, 1)
            labels = y[:, None].astype(np.float32)
            tracks.append(Track(f"f{k}t{i}", "vd", "train", f"f{k}t{i}", None, Path("x"), np.arange(1, 201),
                                labels, np.ones_like(labels, bool)))
            outputs.append(TrackOutput(p[:, None], np.ones(200, bool)))
        per_fold[k] = (tracks, outputs)
    return per_fold


def test_nested_scores_cannot_exploit_a_signal_that_lives_only_in_the_held_out_fold():
    per_fold = planted_folds()
    summary, _, final = nested_postprocess(VD, per_fold)
    leaky = []
    for tracks, outputs in per_fold.values():
        labels, valid = [t.labels for t in tracks], [t.valid for t in tracks]
        params = tune("vd", outputs, labels, valid)  # tuned on the very frames it is scored on
        decided = np.concatenate([apply(VD, params, o) for o in outputs])
        leaky.append(score(VD, np.concatenate(labels), decided, np.concatenate(valid)).value)
    assert min(leaky) > 0.99  # the leak is real: seeing the fold gives a perfect score
    assert summary["post"]["mean"] < 0.8  # the nested scores did not see it
    assert len(final.thresholds) == 1 and set(summary["folds"]) == set(range(5))


def test_a_cv_directory_never_mixes_folds_of_two_configurations(sample_root, tmp_path, capsys):
    import yaml

    from abaw.cli import main
    from tests.test_training import FEATURES, write_synthetic_features

    cache = tmp_path / "cache"
    write_synthetic_features(sample_root, cache)
    config = tmp_path / "expr.yaml"
    config.write_text(yaml.safe_dump({
        "name": "mix", "data": {"root": str(sample_root)}, "runs_dir": str(tmp_path / "runs"), "folds": {"k": 2},
        "extract": {"cache": str(cache), "features": FEATURES},
        "train": {"task": "expr", "features": ["face", "voice"], "epochs": 1, "window": 16, "batch_size": 8,
                  "model": {"name": "fusion_moe", "hidden": 16, "experts": 2}}}))
    cv_dir = tmp_path / "runs" / "mix-cv-expr"
    assert main(["cv", "--config", str(config), "--folds", "0"]) == 0
    assert main(["cv", "--config", str(config), "--folds", "1", "train.lr=0.01"]) == 0
    err = capsys.readouterr().err
    assert "fold(s) 0 of" in err and "trained under another configuration" in err
    assert not (cv_dir / "cv.json").exists()  # not summarised together
    assert main(["predict", "--run", str(cv_dir)]) == 1  # nor predicted together
    assert "fold(s) 0 trained under another configuration" in capsys.readouterr().err
    first = (cv_dir / "fold1" / "done.json").stat().st_mtime_ns
    assert main(["cv", "--config", str(config), "train.lr=0.01"]) == 0  # all folds: fold 0 retrained
    err = capsys.readouterr().err
    assert "fold 0: trained under another configuration, training again" in err
    assert "fold 1: finished earlier, reused" in err
    assert (cv_dir / "fold1" / "done.json").stat().st_mtime_ns == first
    assert (cv_dir / "cv.json").exists() and main(["predict", "--run", str(cv_dir)]) == 0
    # Each fold keeps only the checkpoint it uses.
    for k in (0, 1):
        assert [p.name for p in (cv_dir / f"fold{k}" / "checkpoints").iterdir()] == ["last.ckpt"]


def test_only_sources_shaped_like_the_task_are_scored():
    from abaw.cv import source_scores
    from abaw.tasks import AU

    rng = np.random.default_rng(0)
    labels = (rng.random((20, 12)) < 0.3).astype(np.float32)
    track = Track("t", "au", "train", "t", None, Path("t"), np.arange(1, 21), labels, np.ones_like(labels, bool))
    oof = {0: {"t": {"probabilities": rng.random((20, 12)), "emotion_logits": rng.normal(size=(20, 8)),
                     "present": np.ones(20, bool)}}}
    # The emotion classifier's 8 logits are no AU prediction: scored they would crash the summary.
    assert list(source_scores(AU, {0: [track]}, oof)) == ["fusion"]
