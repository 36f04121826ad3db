"""A typo in a configuration is one line naming the file and line (or the override), the valid
keys and the closest one: never a traceback, never a run that fails hours later."""

import pytest

from abaw.cli import main
from abaw.config import ConfigError, load_config


def run_cli(capsys, *argv) -> tuple[int, str]:
    code = main(list(argv))
    return code, capsys.readouterr().err


def assert_one_line(err: str) -> str:
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


@pytest.mark.parametrize("command", ["train", "cv"])
def test_a_misspelt_model_option_in_yaml_names_file_line_valid_keys_and_the_closest(tmp_path, capsys, command):
    config = tmp_path / "expr.yaml"
    config.write_text(f"data:\n  root: {tmp_path / 'absent'}\nruns_dir: {tmp_path / 'runs'}\n"
                      "train:\n  task: expr\n  model:\n    name: fusion_moe\n    hiden: 64\n")
    code, err = run_cli(capsys, command, "--config", str(config))
    line = assert_one_line(err)
    assert code == 1
    assert line.startswith(f"abaw: error: {config}:8: train.model.hiden: model 'fusion_moe' has no option 'hiden'")
    assert "valid: name, depth, dropout, experts, hidden" in line and line.endswith("did you mean 'hidden'?")
    assert not (tmp_path / "runs").exists()  # refused before anything was written


def test_a_misspelt_fallback_option_in_a_flow_mapping_names_its_line(tmp_path, capsys):
    config = tmp_path / "expr.yaml"
    config.write_text("train:\n  features: [face]\n  fallback: {stream: face, hiden: 128}\n")
    code, err = run_cli(capsys, "train", "--config", str(config))
    line = assert_one_line(err)
    assert code == 1
    assert line.startswith(f"abaw: error: {config}:3: train.fallback.hiden: the fallback MLP has no option 'hiden'; "
                           "valid: stream, dropout, hidden")
    assert line.endswith("did you mean 'hidden'?")


@pytest.mark.parametrize("override, key, closest", [
    ("train.model={name: fusion_moe, hiden: 64}", "train.model.hiden", "hidden"),
    ("train.model.expert=2", "train.model.expert", "experts"),
    ("train.fallback={stream: face, hiden: 128}", "train.fallback.hiden", "hidden"),
    ("train.model.name=fusion_mo", "train.model.name", "fusion_moe"),
])
def test_a_misspelt_option_given_on_the_command_line_names_the_override(tmp_path, capsys, override, key, closest):
    config = tmp_path / "expr.yaml"
    config.write_text("train:\n  task: expr\n")
    code, err = run_cli(capsys, "cv", "--config", str(config), override)
    line = assert_one_line(err)
    assert code == 1
    assert line.startswith(f"abaw: error: override {override!r}: {key}: ")
    assert "valid: " in line and line.endswith(f"did you mean {closest!r}?")


def test_the_override_that_set_a_bad_key_is_named_rather_than_the_file(tmp_path):
    config = tmp_path / "expr.yaml"
    config.write_text("train:\n  model: {name: fusion_moe, hidden: 64}\n")
    with pytest.raises(ConfigError, match=r"^override 'train.model.hiden=3': train.model.hiden: "):
        load_config(config, ["train.model.hiden=3"])


def test_a_yaml_syntax_error_is_one_line_with_file_and_line(tmp_path, capsys):
    config = tmp_path / "expr.yaml"
    config.write_text("train:\n  task: expr\n  model: {name: fusion_moe\n  epochs: [1\n")
    code, err = run_cli(capsys, "train", "--config", str(config))
    line = assert_one_line(err)
    assert code == 1
    assert line.startswith(f"abaw: error: {config}:4: not valid YAML: ")
    assert "from line 3" in line  # where the unclosed mapping began


def test_a_yaml_error_in_a_defaults_file_names_that_file(tmp_path):
    (tmp_path / "base.yaml").write_text("name: x\n  folds: 3\n")
    config = tmp_path / "expr.yaml"
    config.write_text("defaults: [base.yaml]\n")
    with pytest.raises(ConfigError, match=rf"^{tmp_path / 'base.yaml'}:2: not valid YAML: "):
        load_config(config)


def test_an_unknown_prediction_source_is_refused_when_the_configuration_is_read(tmp_path, capsys):
    config = tmp_path / "expr.yaml"
    config.write_text(f"runs_dir: {tmp_path / 'runs'}\ncv:\n  secondary: fallbak\n")
    code, err = run_cli(capsys, "cv", "--config", str(config), "cv.primary=fusoin")
    line = assert_one_line(err)
    assert code == 1 and not (tmp_path / "runs").exists()
    assert line == ("abaw: error: override 'cv.primary=fusoin': cv.primary: unknown prediction source 'fusoin'; "
                    "valid: fusion, fallback, emotion_logits; did you mean 'fusion'?")
    with pytest.raises(ConfigError, match=rf"^{config}:3: cv.secondary: unknown prediction source 'fallbak'; "
                                          r"valid: fusion, fallback, emotion_logits, null; did you mean 'fallback'\?"):
        load_config(config)
    with pytest.raises(ConfigError, match=r"cv.primary: the fallback source is the MLP of train.fallback"):
        load_config(config, ["cv.secondary=null", "cv.primary=fallback"])


def test_a_model_of_the_other_level_is_refused(tmp_path):
    with pytest.raises(ConfigError, match=r"^override 'train.model.name=fusion_moe': train.model.name: EMI is a "
                                          r"video-level task and 'fusion_moe' a model of the other level; valid for "
                                          r"it: attention_mil, stats_pool$"):
        load_config(None, ["train.task=emi", "train.model.name=fusion_moe"])


def test_every_shipped_configuration_passes_the_checks():
    from pathlib import Path

    configs = Path(__file__).resolve().parents[1] / "configs"
    for path in sorted(configs.rglob("*.yaml")):
        load_config(path)


def test_abaw_run_reads_every_task_configuration_before_it_starts(tmp_path, capsys):
    tasks = tmp_path / "task"
    tasks.mkdir()
    (tasks / "expr.yaml").write_text("train:\n  task: expr\n  features: [face]\n"
                                     "  model: {name: fusion_moe, hiden: 8}\n")
    (tasks / "va.yaml").write_text("train:\n  task: va\n")
    run = tmp_path / "run.yaml"
    run.write_text(f"data:\n  root: {tmp_path / 'absent'}\nruns_dir: {tmp_path / 'runs'}\ntasks: [va, expr]\n")
    code, err = run_cli(capsys, "run", str(run))
    line = assert_one_line(err)
    assert code == 1 and not (tmp_path / "runs").exists()  # before the dataset, the run directory, extraction
    assert line.startswith(f"abaw: error: {tasks / 'expr.yaml'}:4: train.model.hiden: model 'fusion_moe' has no "
                           "option 'hiden'")


def test_a_fallback_stream_the_head_does_not_read_is_refused():
    with pytest.raises(ConfigError, match=r"^override 'train.fallback=\{stream: fase\}': train.fallback.stream: the "
                                          r"fallback MLP reads one of the head's streams, and 'fase' is not in "
                                          r"train.features \(face, voice\); did you mean 'face'\?$"):
        load_config(None, ["train.features=[face,voice]", "train.fallback={stream: fase}"])
