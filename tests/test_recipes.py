"""The published recipes as ready configs: each resolves, names registry entries that exist,
and differs from the shared real-data defaults only where the recipe does."""

from pathlib import Path

import pytest

from abaw.config import load_config
from abaw.postprocess import search_space
from abaw.tasks import TASKS
from fusion import create_model

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
RECIPES = ("hsemotion", "dinov2-moe", "offline")
FRAME_TASKS = ("expr", "va", "au", "vd")


def recipe(name: str, task: str):
    return load_config([CONFIGS / "recipes" / name / f"{task}.yaml", CONFIGS / "recipes" / name / "run.yaml"])


@pytest.mark.parametrize("name", RECIPES)
@pytest.mark.parametrize("task", FRAME_TASKS)
def test_every_recipe_config_resolves_to_a_model_that_builds(name, task):
    config = recipe(name, task)
    assert config.name == name and config.train.task == task
    assert set(config.train.features) <= set(config.extract.features)
    model = dict(config.train.model)
    create_model(model.pop("name"), visual={"v": 8}, audio={"a": 4}, output_size=TASKS[task].output_size, **model)
    search_space(config.cv.search)  # valid post-processing candidates


def test_the_recipes_say_what_they_publish():
    hsemotion = recipe("hsemotion", "expr")
    assert hsemotion.train.features == ["hsemotion"] and hsemotion.train.model["name"] == "mlp"
    assert (hsemotion.cv.primary, hsemotion.cv.secondary) == ("emotion_logits", "fusion")
    assert hsemotion.cv.search == {"fill": ["interpolate"], "filter": ["mean"], "window": [101]}
    assert recipe("hsemotion", "au").cv.search["window"] == [11]
    assert recipe("hsemotion", "vd").train.model.get("temporal") is True
    dino = recipe("dinov2-moe", "expr")
    assert dino.train.features == ["dinov2", "wav2vec2"] and dino.train.fallback is None
    assert dino.train.model["name"] == "fusion_moe" and dino.cv.ensemble == "logits"
    assert dino.cv.search == {"fill": ["skip"], "filter": ["median"], "window": [101]}
    assert tuple(dino.extract.features["dinov2"]["scales"]) == (0.9, 1.2, 1.5)
    assert dino.extract.faces_of("dinov2", "affwild2") == "detected"  # from the raw video, as the entry
    assert hsemotion.extract.faces_of("hsemotion", "affwild2") == "crops"
    assert dino.extract.features["wav2vec2"]["layers"] == 4


def test_the_offline_recipe_needs_no_weights_beyond_its_install():
    from abaw.extraction import missing_weights

    for task in FRAME_TASKS:
        config = recipe("offline", task)
        assert missing_weights(config) == [], task
        assert config.extract.faces_of("face", "affwild2") == "detected"  # no cropped_aligned/ needed
        assert config.extract.faces_of("face", "dvd") == "frame"
        assert set(config.extract.features) == {"face", "voice"}
    assert recipe("offline", "expr").train.fallback == {"stream": "face", "hidden": 128}
