"""Test lists and templates under the names real releases and teams use: recognised by the
task's words, printed per task by abaw inspect, and every candidate that was not recognised
named, so a misnamed template is found before a run trains anything."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from abaw.cli import main
from abaw.config import load_config, make_run_dir
from abaw.data import affwild2, load_tracks
from abaw.data.records import DataError
from abaw.data.testfiles import tasks_named
from abaw.inspection import inspect_root
from abaw.tasks import AU, EXPR, VA

LIST = "names_of_videos_in_each_test_set"
TEMPLATE = "test_set_examples/CVPR_6th_ABAW_Expr_test_set_example.txt"


def _inspect(root: Path, capsys, *options: str) -> tuple[int, str]:
    status = main(["inspect", "--skip-videos", "--task", "expr", *options, str(root)])
    return status, capsys.readouterr().out


@pytest.mark.parametrize("name, task", [
    ("Expression_Recognition_Challenge_test_set_release.txt", EXPR), ("EXPR_test_set.txt", EXPR),
    ("CVPR_6th_ABAW_Expr_test_set_example.txt", EXPR), ("expr_test_template.csv", EXPR),
    ("Valence_Arousal_Estimation_Challenge_test_set_release.txt", VA), ("CVPR_6th_ABAW_VA_test_set_example.txt", VA),
    ("Action_Unit_Detection_Challenge_test_set_release.txt", AU), ("au-test list.txt", AU),
])
def test_release_and_team_names_name_their_task(name, task):
    assert tasks_named(name) == [task]


def test_other_names_name_no_task():
    assert tasks_named("test_set_release.txt") == [] and tasks_named("vaexpr.txt") == []
    assert tasks_named("va_and_expr_test.txt") == [EXPR, VA]


def test_lenient_names_are_read_and_printed(affwild2_root, capsys):
    (affwild2_root / LIST / EXPR.test_list).rename(affwild2_root / LIST / "EXPR_test_set.txt")
    (affwild2_root / "templates").mkdir()
    (affwild2_root / TEMPLATE).rename(affwild2_root / "templates" / "expr_test_template.txt")
    shutil.rmtree(affwild2_root / "test_set_examples")
    tests = [t.id for t in load_tracks(affwild2_root, EXPR, splits=("test",))]
    assert tests == ["test1", "test2_right"]
    status, out = _inspect(affwild2_root, capsys)
    assert status == 0
    assert f"EXPR  test list: {LIST}/EXPR_test_set.txt; template: templates/expr_test_template.txt" in out


def test_the_list_is_still_checked_under_its_lenient_name(affwild2_root):
    (affwild2_root / LIST / EXPR.test_list).unlink()
    (affwild2_root / LIST / "expr.txt").write_text("test1\n")
    with pytest.raises(DataError, match=r"test2_right, which is not in the test list expr\.txt"):
        load_tracks(affwild2_root, EXPR, splits=("test",))


def test_a_misnamed_template_is_named_and_warned_of(affwild2_root, capsys):
    (affwild2_root / TEMPLATE).rename(affwild2_root / "test_set_examples" / "submission_rows.txt")
    _, out = _inspect(affwild2_root, capsys)
    assert f"EXPR  test list: {LIST}/{EXPR.test_list}; template: none" in out
    assert "test_set_examples/submission_rows.txt: warning: not read as a template: its name names no task" in out
    assert ("warning: no EXPR test template: looked in test_set_examples/ for a .txt or .csv file whose name "
            "contains 'expr' or 'expression' or 'expressions'") in out
    assert "not recognised: test_set_examples/submission_rows.txt" in out


def test_a_misnamed_test_list_is_named_and_warned_of(affwild2_root, capsys):
    (affwild2_root / LIST / EXPR.test_list).rename(affwild2_root / LIST / "test_videos.txt")
    _, out = _inspect(affwild2_root, capsys)
    assert f"EXPR  test list: none; template: {TEMPLATE}" in out
    assert f"{LIST}/test_videos.txt: warning: not read as a test list: its name names no task" in out
    assert f"warning: no EXPR test list: looked in {LIST}/ for a .txt or .csv file" in out


def test_files_for_a_task_elsewhere_second_ones_and_ambiguous_ones_are_warnings(affwild2_root, capsys):
    (affwild2_root / "EXPR_test_set.txt").write_text("test1\n")
    (affwild2_root / "my_tests").mkdir()
    (affwild2_root / "my_tests" / "expr_template.txt").write_text("image_location,Neutral\n")
    (affwild2_root / "test_set_examples" / "expr_template_v2.txt").write_text("image_location,Neutral\n")
    (affwild2_root / "test_set_examples" / "va_and_expr.txt").write_text("")
    (affwild2_root / "test_set_examples" / "._CVPR_6th_ABAW_Expr_test_set_example.txt").write_bytes(b"\0\1")
    layout = affwild2.find_layout(affwild2_root)
    assert layout.templates == {"expr": affwild2_root / TEMPLATE}  # the first in name order; ._ skipped
    warned = {p.path.relative_to(affwild2_root).as_posix(): p.message for p in layout.problems}
    assert set(warned) == {"EXPR_test_set.txt", "my_tests/expr_template.txt", "test_set_examples/expr_template_v2.txt",
                           "test_set_examples/va_and_expr.txt"}
    assert all(p.severity == "warning" for p in layout.problems)
    assert warned["EXPR_test_set.txt"].startswith("not read: named for EXPR (a test list or template?), but test "
                                                  f"lists are read from {LIST}/")
    assert warned["test_set_examples/expr_template_v2.txt"] == f"a second EXPR template, not read; reading " \
                                                               f"{affwild2_root / TEMPLATE}"
    assert "names several tasks (EXPR, VA)" in warned["test_set_examples/va_and_expr.txt"]
    status, _ = _inspect(affwild2_root, capsys)
    assert status == 0


def test_a_test_list_without_its_template_is_not_read_quietly(affwild2_root, capsys):
    (affwild2_root / TEMPLATE).unlink()
    status, out = _inspect(affwild2_root, capsys)
    assert status == 0 and "warning: no EXPR test template" in out
    # Its tracks' crop folders are still those of known tracks.
    assert "crop folder for a track that no annotation file" not in out


def test_the_tasks_of_the_root_only(affwild2_root):
    _, problems = inspect_root(affwild2_root, probe_videos=False, tasks=[EXPR, VA])
    # VA is annotated here but has neither a list nor a template: both said; AU not inspected.
    assert sorted(p.message.split(":")[0] for p in problems) == ["no VA test list", "no VA test template"]


def _run_config(tmp_path: Path, root: Path) -> Path:
    path = tmp_path / "run.yaml"
    path.write_text(yaml.safe_dump({"name": "lists", "tasks": ["expr"], "data": {"root": str(root)},
                                    "runs_dir": str(tmp_path / "runs"), "extract": {"cache": str(tmp_path / "cache")}}))
    return path


def test_run_stops_before_extraction_without_a_template(affwild2_root, tmp_path, capsys):
    for folder in ("batch1", "batch2"):  # empty files: no video errors in the way
        shutil.rmtree(affwild2_root / folder)
    (affwild2_root / TEMPLATE).rename(affwild2_root / "test_set_examples" / "rows.txt")
    assert main(["run", str(_run_config(tmp_path, affwild2_root))]) == 1
    out, err = capsys.readouterr()
    assert f"{affwild2_root}: no EXPR test template: looked in test_set_examples/" in out
    assert "not recognised: test_set_examples/rows.txt" in out
    assert "[3/5]" not in err and not (tmp_path / "cache").exists()


def test_cv_warns_and_predict_says_where_the_template_was_looked_for(affwild2_root, tmp_path, capsys):
    (affwild2_root / TEMPLATE).unlink()
    path = _run_config(tmp_path, affwild2_root)
    main(["cv", "--config", str(path)])  # this root's 3 sources then fill no 5 folds: the warning comes first
    assert "abaw: warning: no EXPR test template" in capsys.readouterr().err
    config = load_config(path)
    cv_dir = make_run_dir(config, "cv-expr", path=tmp_path / "cv")
    assert main(["predict", "--run", str(cv_dir)]) == 1
    err = capsys.readouterr().err
    assert f"abaw: error: {affwild2_root}: no EXPR test template: looked in test_set_examples/" in err
