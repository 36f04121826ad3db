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
