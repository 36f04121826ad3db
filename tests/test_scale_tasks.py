"""Which tasks a run trains by default: those with labelled tracks, not those with a test
template alone (training one would stop part-way with "0 training tracks")."""

from __future__ import annotations

import shutil

import pytest

from abaw.data import DataError, load_tracks, present_tasks, resolve_tasks
from abaw.tasks import AU


def _au_template_only(root):
    """AU with a test template and test list but no annotations; its test track test3 is in
    no other task."""
    shutil.rmtree(root / "annotations" / "AU_Detection_Challenge")
    (root / "batch2" / "test3.mp4").write_bytes(b"")
    rows = [f"test3/{i:05d}.jpg," for i in (1, 2, 3, 4)]
    (root / "test_set_examples" / "CVPR_6th_ABAW_AU_test_set_example.txt").write_text(
        ",".join(AU.submission_header) + "\n" + "\n".join(rows) + "\n")
    (root / "names_of_videos_in_each_test_set" / AU.test_list).write_text("test3\n")
    return root


def test_a_task_with_only_a_test_template_is_not_trained_by_default(affwild2_root):
    root = _au_template_only(affwild2_root)
    assert [t.id for t in load_tracks(root, AU)] == ["test3"]  # the template is read ...
    assert [t.name for t in present_tasks(root)] == ["expr", "va"]  # ... but AU is not trainable
    assert [t.name for t in resolve_tasks(root, [])] == ["expr", "va"]
    with pytest.raises(DataError, match=r"task\(s\) au requested but absent .*no train or validation annotations"):
        resolve_tasks(root, ["au"])


def test_extraction_still_covers_the_template_only_task_tracks(affwild2_root, tmp_path):
    from abaw.extraction import jobs_for
    from tests.conftest import config_of

    root = _au_template_only(affwild2_root)
    jobs = {job.id: job.frames for job in jobs_for(config_of(root, tmp_path / "cache"), "affwild2")}
    assert jobs["test3"] == 4


def test_a_dvd_root_with_only_test_videos_trains_nothing(dvd_root):
    for split in ("Training", "Validation"):
        shutil.rmtree(dvd_root / split)
    with pytest.raises(DataError, match="no task with train or validation annotations"):
        present_tasks(dvd_root)
