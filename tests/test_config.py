import json

import pytest
import yaml

from abaw.config import ConfigError, load_config, make_run_dir


def test_defaults_yaml_and_overrides_merge_in_order(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: mine\nfolds:\n  k: 3\n")
    config = load_config(path, ["folds.seed=7", "tasks=[expr,vd]"])
    assert (config.name, config.folds.k, config.folds.seed, config.tasks) == ("mine", 3, 7, ["expr", "vd"])
    assert config.data.root == "data/sample"  # untouched default
    with pytest.raises(Exception):
        config.name = "other"  # frozen


@pytest.mark.parametrize(
    "content, overrides, match",
    [
        ("nmae: x\n", [], r"c\.yaml:1: Key 'nmae' not in 'Config'; valid: name, seed, .*; did you mean 'name'\?"),
        ("train:\n  epochs: 3\n  epoch: 4\n", [], r"c\.yaml:3: Key 'epoch' not in 'TrainConfig'.*did you mean 'epochs'\?"),
        ("", ["folds.k=abc"], r"override 'folds.k=abc'"),
        ("", ["folds.k"], "is not key=value"),
    ],
)
def test_bad_config_names_file_or_override(tmp_path, content, overrides, match):
    path = tmp_path / "c.yaml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=match):
        load_config(path, overrides)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "none.yaml")


def test_run_dir_holds_resolved_config_and_commit(tmp_path):
    config = load_config(None, [f"runs_dir={tmp_path}", "name=t"])
    run_dir = make_run_dir(config, "train", argv=["x"])
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["runs_dir"] == str(tmp_path)
    info = json.loads((run_dir / "run.json").read_text())
    assert info["argv"] == ["x"] and "git_commit" in info
    # The tests run inside the project's git checkout, so the commit is known.
    assert len(info["git_commit"].split("-")[0]) == 40
