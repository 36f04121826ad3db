"""Test-time personalisation in ``abaw cv``: scored per fold with parameters chosen elsewhere."""

from pathlib import Path

import numpy as np
import pytest
import torch

from abaw.cv import (FoldViews, class_indices, nested_personalisation, nested_postprocess, personalisation_scores,
                     personalised_postprocess, personalised_predictions, track_output)
from abaw.data.records import Track
from abaw.metrics import score
from abaw.personalise import LinearView, param_grid, personalise
from abaw.postprocess import apply, tune
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
            views.append(LinearView(z=z, weight=weight, bias=torch.zeros(8)))
        folds[k] = FoldViews([(t,) for t in tracks], views, [torch.ones(40, dtype=torch.bool)] * 2, None)
    table = personalisation_scores(EXPR, folds, methods=("none", "t3a"))
    assert [p for p, _ in table["t3a"]] == param_grid("t3a")
    for params, scores in table["t3a"]:
        for k, fold in folds.items():
            decided = np.concatenate([personalise("t3a", [v], params)[0].argmax(dim=-1).numpy()
                                      for v in fold.views])[:, None]
            labels = np.concatenate([t.labels for (t,) in fold.units])
            assert scores[k] == score(EXPR, labels, decided, np.ones_like(labels, bool)).value
    plain = table["none"][0][1]
    for k, fold in folds.items():
        decided = np.concatenate([v.logits().argmax(dim=-1).numpy() for v in fold.views])[:, None]
        labels = np.concatenate([t.labels for (t,) in fold.units])
        assert plain[k] == score(EXPR, labels, decided, np.ones_like(labels, bool)).value


def people_folds(folds: int = 3, tracks: int = 2, rows: int = 60, seed: int = 0):
    """Fold views of tracks whose people each shift every embedding by their own offset, and
    the out-of-fold arrays of the model's own probabilities over them (no face missing)."""
    rng = np.random.default_rng(seed)
    weight = torch.tensor(rng.normal(size=(8, 6)), dtype=torch.float32)
    views, oof, per_fold = {}, {}, {}
    for k in range(folds):
        held, fold_views = [], []
        for i in range(tracks):
            y = np.repeat(rng.integers(0, 8, rows // 10), 10)  # stretches of one expression, as in video
            z = weight[y] + 0.8 * torch.randn(rows, 6) + 1.5 * torch.randn(6)
            held.append(_track(f"f{k}t{i}", y))
            fold_views.append(LinearView(z=z, weight=weight, bias=torch.zeros(8)))
        views[k] = FoldViews([(t,) for t in held], fold_views, [torch.ones(rows, dtype=torch.bool)] * tracks, None)
        oof[k] = {t.id: {"probabilities": torch.softmax(v.logits(), dim=-1).numpy(), "present": np.ones(rows, bool)}
                  for t, v in zip(held, fold_views)}
        per_fold[k] = (held, [track_output(oof[k][t.id], "fusion", None) for t in held])
    return views, oof, per_fold


def test_the_chosen_method_is_scored_again_post_processed_and_kept_only_if_it_still_gains():
    from dataclasses import replace

    from abaw.config import Config, CVConfig

    views, oof, per_fold = people_folds()
    table = personalisation_scores(EXPR, views, methods=("none", "t3a"))
    config = replace(Config(), cv=CVConfig(secondary=None))
    plain_post, _, plain_final = nested_postprocess(EXPR, per_fold)
    for without, kept in ((plain_post["post"], None), ({"mean": 1.0, "std": 0.0}, False),
                          ({"mean": 0.0, "std": 0.0}, True)):
        entry = nested_personalisation(table)
        entry["chosen"] = "t3a"  # whatever the argmax said: the post-processed comparison decides
        logs = []
        final = personalised_postprocess(config, EXPR, entry, views, oof, per_fold, without, logs.append)
        post = entry["post"]
        assert post["method"] == "t3a" and post["without"] == without
        assert abs(post["gain"] - (post["with"]["mean"] - without["mean"])) < 1e-12
        # Fold k: its tracks personalised with the parameters chosen on the other folds, then
        # post-processed with parameters tuned on the other folds' personalised predictions.
        personalised = {k: personalised_predictions(oof[k], views[k], "t3a",
                                                    entry["methods"]["t3a"]["folds"][k]["params"]) for k in views}
        for k, (held, _) in per_fold.items():
            tuned = tune("expr", *_others(personalised, per_fold, k))
            decided = [apply(EXPR, tuned, track_output(personalised[k][t.id], "fusion", None)) for t in held]
            expected = score(EXPR, np.concatenate([t.labels for t in held]), np.concatenate(decided),
                             np.concatenate([t.valid for t in held])).value
            assert abs(post["folds"][k] - expected) < 1e-12
        if kept is None:
            kept = post["gain"] > 0
        assert (entry["chosen"] == "t3a") is kept and (final is not None) is kept
        text = "\n".join(personalisation_lines(entry))
        assert "Post-processed (parameters for fold k tuned on the other folds" in text
        assert ("postprocess.json tuned on its predictions" in text) is kept
        assert ("gained on the argmax but not once post-processed" in text) is not kept
        if kept:  # postprocess.json: tuned on every fold personalised as predict will (all-fold parameters)
            applied = {k: personalised_predictions(oof[k], views[k], "t3a", entry["methods"]["t3a"]["params"])
                       for k in views}
            assert final.to_json() == tune("expr", *_others(applied, per_fold, None)).to_json()
    assert plain_final is not None


def _others(personalised, per_fold, k):
    """(outputs, labels, valid) of every fold but ``k`` (None: every fold), personalised."""
    outputs, labels, valid = [], [], []
    for j, (held, _) in per_fold.items():
        if j == k:
            continue
        outputs += [track_output(personalised[j][t.id], "fusion", None) for t in held]
        labels += [t.labels for t in held]
        valid += [t.valid for t in held]
    return outputs, labels, valid


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
    if entry["chosen"]:  # kept only if it gains once post-processed too, as predict runs it
        assert entry["post"]["method"] == entry["chosen"] and entry["post"]["gain"] > 0
        assert entry["post"]["without"] == summary["post"]
    elif "post" in entry:  # the argmax gained, the post-processed pipeline did not
        assert entry["post"]["gain"] <= 0 and entry["methods"][entry["post"]["method"]]["gain"] > 0
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
    entry.pop("post", None)  # a summary that never scored it post-processed: refused, naming the file
    (cv_dir / "cv.json").write_text(json.dumps(summary))
    assert main(["predict", "--run", str(cv_dir)]) == 1
    err = capsys.readouterr().err
    assert str(cv_dir / "cv.json") in err and "run abaw cv again" in err
    entry["post"] = {"method": "cap", "without": summary["post"], "with": summary["post"], "folds": {}, "gain": 0.0}
    (cv_dir / "cv.json").write_text(json.dumps(summary))
    assert main(["predict", "--run", str(cv_dir)]) == 0
    assert "personalisation: cap (offline)" in capsys.readouterr().err
    personalised = load_predictions(cv_dir / "predictions-test.npz")
    assert set(personalised) == set(plain)
    for track_id, arrays in personalised.items():
        assert "view" not in arrays and arrays["probabilities"].shape == plain[track_id]["probabilities"].shape
        assert np.allclose(arrays["probabilities"].sum(axis=1), 1, atol=1e-5)
    assert any(not np.allclose(personalised[t]["probabilities"], plain[t]["probabilities"]) for t in plain)


def test_predict_frames_returns_the_embedding_behind_each_probability_row(sample_root, tmp_path):
    from abaw.config import make_run_dir
    from abaw.data import load_tracks
    from abaw.personalise import linear_view, view_of_rows
    from abaw.training.data import open_streams
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
    module = TaskModule.load_from_checkpoint(result.best_checkpoint, map_location="cpu").eval()
    model, streams = module.model, open_streams(config, "affwild2", list(module.hparams["streams"]))
    for track in tracks:
        assert "view" not in plain[track.id] and "logits" not in plain[track.id]  # opt-in: nothing else changes
        # The logits kept are those the probabilities came from, and a view of the rows uses them.
        np.testing.assert_allclose(torch.from_numpy(rows[track.id]["logits"]).softmax(dim=-1).numpy(),
                                   rows[track.id]["probabilities"], atol=1e-6)
        assert torch.equal(view_of_rows(model, torch.from_numpy(rows[track.id]["view"]),
                                        torch.from_numpy(rows[track.id]["logits"])).logits(),
                           torch.from_numpy(rows[track.id]["logits"]))
        # With the view, the head's own probabilities (computed once with z: the same operations).
        np.testing.assert_array_equal(plain[track.id]["probabilities"], rows[track.id]["probabilities"])
        np.testing.assert_array_equal(plain[track.id]["fallback"], rows[track.id]["fallback"])
        np.testing.assert_allclose(rows[track.id]["view"], shifted[track.id]["view"], rtol=1e-5, atol=1e-5)
        view = view_of_rows(model, torch.from_numpy(rows[track.id]["view"]))
        np.testing.assert_allclose(view.logits().softmax(dim=-1).numpy(), rows[track.id]["probabilities"], atol=1e-5)
        # The rows are the view of the model's own embedding of the whole track (a temporal model:
        # every row with its full context, whatever the windows).
        batch = {"streams": {k: torch.from_numpy(np.array(s.store.read(track.id)))[None]
                             for k, s in streams.items()},
                 "present": {k: torch.from_numpy(np.array(s.store.read(track.id, "valid")))[None]
                             for k, s in streams.items()}}
        whole = linear_view(model, model.forward_features({k: v.float() for k, v in batch["streams"].items()},
                                                          batch["present"]))
        np.testing.assert_allclose(rows[track.id]["view"], whole.z.numpy(), rtol=1e-4, atol=1e-4)
    # In-sample prediction: the same tracks held out and trained on; their kept rows serve both.
    from abaw.cv import fold_views

    fold = fold_views(config, result.best_checkpoint, tracks, tracks, rows)
    assert fold.source is not None and len(fold.views) == len(tracks)
    for track, view in zip(tracks, fold.views):
        assert torch.equal(view.z, torch.from_numpy(rows[track.id]["view"]))
        assert torch.equal(view.logits(), torch.from_numpy(rows[track.id]["logits"]))


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
