"""Test-time personalisation in ``abaw cv``: scored per fold with parameters chosen elsewhere."""

from pathlib import Path

import numpy as np
import pytest
import torch

from abaw.cv import FoldViews, class_indices, nested_personalisation, personalisation_scores
from abaw.data.records import Track
from abaw.metrics import score
from abaw.personalise import LinearView, param_grid, personalise_view
from abaw.report import personalisation_lines
from abaw.tasks import EXPR


def planted_table(folds: int = 5) -> dict:
    """A score table where parameter set i of t3a is excellent on fold i and poor elsewhere,
    against a model that scores 0.5 everywhere: a gain only tuning on the fold itself can find."""
    grid = param_grid("t3a")[:folds]
    return {"none": [({}, {k: 0.5 for k in range(folds)})],
            "t3a": [(params, {k: 0.9 if k == i else 0.1 for k in range(folds)}) for i, params in enumerate(grid)]}


def test_nested_personalisation_reports_the_honest_number_not_the_leaky_one():
    table = planted_table()
    # Tuned on the held-out fold itself, every fold finds its own 0.9: a gain of +0.4.
    leaky = np.mean([max(scores[k] for _, scores in table["t3a"]) for k in range(5)])
    assert leaky - 0.5 > 0.39
    entry = nested_personalisation(table)
    t3a = entry["methods"]["t3a"]
    assert t3a["mean"] == 0.1 and t3a["gain"] < 0  # chosen on the other folds, each set is poor on fold k
    assert all(f["params"] != table["t3a"][k][0] for k, f in t3a["folds"].items())  # never fold k's own best
    assert entry["without"]["mean"] == 0.5 and entry["chosen"] is None  # predict must not apply it
    assert t3a["params"] == table["t3a"][0][0]  # on all folds: a tie, the first in grid order


def test_a_method_that_helps_on_every_fold_is_chosen():
    grid = param_grid("t3a")
    table = {"none": [({}, {0: 0.4, 1: 0.5, 2: 0.6})],
             "t3a": [(grid[0], {0: 0.3, 1: 0.3, 2: 0.3}), (grid[1], {0: 0.6, 1: 0.7, 2: 0.8})]}
    entry = nested_personalisation(table)
    assert entry["chosen"] == "t3a" and abs(entry["methods"]["t3a"]["gain"] - 0.2) < 1e-9
    assert all(f["params"] == grid[1] for f in entry["methods"]["t3a"]["folds"].values())
    text = "\n".join(personalisation_lines(entry))
    assert "| 1 | 0.5000 | 0.7000 |" in text and "Chosen for the test set: t3a" in text


def _track(name: str, labels: np.ndarray) -> Track:
    y = labels[:, None].astype(np.float32)
    return Track(name, "expr", "train", name, None, Path(name), np.arange(1, len(y) + 1), y, np.ones_like(y, bool))


def test_scores_are_the_pooled_argmax_of_each_personalised_track():
    rng = np.random.default_rng(0)
    weight = torch.tensor(rng.normal(size=(8, 6)), dtype=torch.float32)
    folds = {}
    for k in range(2):
        tracks, views = [], []
        for i in range(2):
            y = rng.integers(0, 8, 40)
            z = weight[y] + 0.8 * torch.randn(40, 6) + torch.randn(6)  # a person's own offset
            tracks.append(_track(f"f{k}t{i}", y))
            views.append(LinearView(z, weight, torch.zeros(8)))
        folds[k] = FoldViews([(t,) for t in tracks], views, [torch.ones(40, dtype=torch.bool)] * 2, None)
    table = personalisation_scores(EXPR, folds, methods=("none", "t3a"))
    assert [p for p, _ in table["t3a"]] == param_grid("t3a")
    for params, scores in table["t3a"]:
        for k, fold in folds.items():
            decided = np.concatenate([personalise_view("t3a", v, params).argmax(dim=-1).numpy()
                                      for v in fold.views])[:, None]
            labels = np.concatenate([t.labels for (t,) in fold.units])
            assert scores[k] == score(EXPR, labels, decided, np.ones_like(labels, bool)).value
    plain = table["none"][0][1]
    for k, fold in folds.items():
        decided = np.concatenate([v.logits().argmax(dim=-1).numpy() for v in fold.views])[:, None]
        labels = np.concatenate([t.labels for (t,) in fold.units])
        assert plain[k] == score(EXPR, labels, decided, np.ones_like(labels, bool)).value


def test_class_indices_mark_unlabelled_frames():
    track = _track("t", np.array([3, 0, 5]))
    track.valid[1, 0] = False
    assert class_indices(track).tolist() == [3, -1, 5]


def test_abaw_cv_scores_personalisation_of_expr_and_predict_applies_the_chosen_one(sample_root, tmp_path, capsys):
    import json

    import yaml

    from abaw.cli import main
    from tests.test_training import FEATURES, write_synthetic_features

    cache = tmp_path / "cache"
    write_synthetic_features(sample_root, cache)
    config = tmp_path / "expr.yaml"
    config.write_text(yaml.safe_dump({
        "name": "tta", "data": {"root": str(sample_root)}, "runs_dir": str(tmp_path / "runs"), "folds": {"k": 2},
        "extract": {"cache": str(cache), "features": FEATURES},
        "train": {"task": "expr", "features": ["face", "voice"], "epochs": 1, "window": 16, "batch_size": 8,
                  "model": {"name": "fusion_moe", "hidden": 16, "experts": 2}}}))
    assert main(["cv", "--config", str(config)]) == 0
    cv_dir = tmp_path / "runs" / "tta-cv-expr"
    summary = json.loads((cv_dir / "cv.json").read_text())
    entry = summary["personalisation"]
    assert set(entry["methods"]) == {"t3a", "cap"} and entry["mode"] == "offline"
    # Without personalisation is the trained head's own argmax: the fusion source's score.
    for k, value in entry["without"]["folds"].items():
        assert abs(value - summary["sources"]["fusion"]["folds"][k]) < 1e-9
    for result in entry["methods"].values():
        assert set(result["folds"]) == {"0", "1"} and "params" in result
    assert entry["chosen"] in (None, "t3a", "cap")
    report = (cv_dir / "report.md").read_text()
    assert "## Test-time personalisation (offline)" in report and "| fold | without | t3a | cap |" in report

    # predict: the model's own probabilities when no method gained, the chosen one's otherwise.
    from abaw.rundir import load_predictions

    entry["chosen"] = None
    (cv_dir / "cv.json").write_text(json.dumps(summary))
    err = capsys.readouterr().err  # abaw cv, then the first predict
    assert "EXPR personalisation (offline, parameters chosen on the other folds): without" in err
    assert main(["predict", "--run", str(cv_dir)]) == 0
    assert "personalisation: none applied" in capsys.readouterr().err
    plain = load_predictions(cv_dir / "predictions-test.npz")
    entry["chosen"] = "cap"  # uses a source bank: the fold models' training tracks are read too
    (cv_dir / "cv.json").write_text(json.dumps(summary))
    assert main(["predict", "--run", str(cv_dir)]) == 0
    assert "personalisation: cap (offline)" in capsys.readouterr().err
    personalised = load_predictions(cv_dir / "predictions-test.npz")
    assert set(personalised) == set(plain)
    for track_id, arrays in personalised.items():
        assert "features" not in arrays and arrays["probabilities"].shape == plain[track_id]["probabilities"].shape
        assert np.allclose(arrays["probabilities"].sum(axis=1), 1, atol=1e-5)
    assert any(not np.allclose(personalised[t]["probabilities"], plain[t]["probabilities"]) for t in plain)


def test_predict_frames_returns_the_embedding_behind_each_probability_row(sample_root, tmp_path):
    from abaw.config import make_run_dir
    from abaw.data import load_tracks
    from abaw.personalise import linear_view
    from abaw.training.module import TaskModule
    from abaw.training.train import predict_frames, train
    from tests.test_training import config_for, write_synthetic_features

    cache = tmp_path / "cache"
    write_synthetic_features(sample_root, cache)
    config = config_for(sample_root, cache, tmp_path, "expr", "train.epochs=1", "train.model.temporal=true")
    result = train(config, make_run_dir(config, "temporal"), log=lambda m: None)
    tracks = load_tracks(sample_root, EXPR, splits=("validation",))
    plain = predict_frames(result.best_checkpoint, config, tracks)
    rows = predict_frames(result.best_checkpoint, config, tracks, features=True)
    shifted = predict_frames(result.best_checkpoint, config, tracks, offset=3, batch_size=2, features=True)
    model = TaskModule.load_from_checkpoint(result.best_checkpoint, map_location="cpu").eval().model
    for track in tracks:
        assert "features" not in plain[track.id]  # opt-in: nothing else changes
        np.testing.assert_array_equal(plain[track.id]["probabilities"], rows[track.id]["probabilities"])
        np.testing.assert_allclose(rows[track.id]["features"], shifted[track.id]["features"], rtol=1e-5, atol=1e-5)
        logits = linear_view(model, torch.from_numpy(rows[track.id]["features"])).logits()
        np.testing.assert_allclose(logits.softmax(dim=-1).numpy(), rows[track.id]["probabilities"], atol=1e-5)


def test_cv_personalise_names_the_methods_and_an_unknown_one_is_refused_before_training(tmp_path):
    from abaw.config import ConfigError, load_config
    from abaw.cv import run_cv

    config = tmp_path / "c.yaml"
    config.write_text(f"name: p\nruns_dir: {tmp_path / 'runs'}\ndata: {{root: {tmp_path / 'nowhere'}}}\n")
    assert load_config(config).cv.personalise == ["t3a", "cap"]
    assert load_config(config, ["cv.personalise=[]"]).cv.personalise == []
    with pytest.raises(ConfigError, match=r"cv.personalise: unknown method\(s\) t3b; valid: t3a, cap"):
        run_cv(load_config(config, ["cv.personalise=[t3b]"]))
    assert not (tmp_path / "runs").exists()  # refused before a directory or a fold
