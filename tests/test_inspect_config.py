"""``abaw inspect --config``: the root from the configuration, judged against the face source it
extracts from (no missing-crops warning when faces are detected in the raw videos)."""

from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from abaw.cli import main
from abaw.config import load_config
from abaw.extraction import configured_faces

NO_CROPS = "no cropped_aligned/ folder"


def _config(tmp_path: Path, root: Path, faces: str | None = None, features: dict | None = None) -> Path:
    extract: dict = {"cache": str(tmp_path / "cache"), "features": features or {}}
    if faces is not None:
        extract["faces"] = {"affwild2": faces}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump({"tasks": ["expr"], "data": {"root": str(root)}, "extract": extract}))
    return path


def _inspect(capsys, *argv: str) -> tuple[int, str]:
    status = main(["inspect", "--skip-videos", *argv])
    return status, capsys.readouterr().out


def _without_crops(root: Path) -> Path:
    shutil.rmtree(root / "cropped_aligned")
    return root


def test_detected_faces_need_no_crops(affwild2_root, tmp_path, capsys):
    status, out = _inspect(capsys, "--config", str(_config(tmp_path, _without_crops(affwild2_root), "detected")))
    assert status == 0
    assert NO_CROPS not in out and "crop folder" not in out
    assert "EXPR  train" in out and "VA    " not in out  # the config's tasks only


def test_configured_crops_that_are_missing_are_a_clear_warning(affwild2_root, tmp_path, capsys):
    status, out = _inspect(capsys, "--config", str(_config(tmp_path, _without_crops(affwild2_root), "crops")))
    assert status == 0
    assert (f"{affwild2_root}: warning: {NO_CROPS}: the frames of all 6 tracks are face-absent, as "
            "extract.faces.affwild2 is crops; extract.faces.affwild2: detected finds faces in the raw videos "
            "instead") in out


def test_without_a_config_the_hint_names_the_sources_that_exist(affwild2_root, capsys):
    _, out = _inspect(capsys, str(_without_crops(affwild2_root)))
    line = next(line for line in out.splitlines() if NO_CROPS in line)
    assert "(frame)" not in line
    assert "extract.faces.affwild2: detected finds faces in the raw videos" in line
    assert "abaw inspect --config CONFIG" in line


def test_detected_faces_warn_of_tracks_without_a_raw_video(affwild2_root, tmp_path, capsys):
    (affwild2_root / "batch1" / "video2.mp4").unlink()
    _, out = _inspect(capsys, "--config", str(_config(tmp_path, affwild2_root, "detected")))
    assert (f"{affwild2_root}: warning: 1 track(s) have no raw video under videos/ or batch*/ (video2): with "
            "extract.faces.affwild2: detected their rows have no face, and no audio") in out


def test_a_feature_with_its_own_face_source_counts(affwild2_root, tmp_path):
    features = {"face": {"extractor": "efficientnet", "faces": {"affwild2": "detected"}},
                "voice": {"extractor": "logmel"}}
    config = load_config(_config(tmp_path, affwild2_root, "crops", features))
    assert configured_faces(config, "affwild2") == {"detected"}  # the audio stream takes no pixels
    assert configured_faces(load_config(_config(tmp_path, affwild2_root)), "affwild2") == {"crops"}


def test_a_root_and_a_config_together_are_refused(affwild2_root, tmp_path, capsys):
    assert main(["inspect", str(affwild2_root), "--config", str(_config(tmp_path, affwild2_root))]) == 1
    assert "abaw inspect takes a dataset root or --config CONFIG" in capsys.readouterr().err
    assert main(["inspect"]) == 1
