"""The generated sample dataset read back through the public commands."""

import json

from abaw.cli import main
from abaw.inspection import inspect_root
from abaw.tasks import AFFWILD2_TASKS


def test_inspect_counts_match_what_the_generator_wrote(sample_root, capsys):
    assert main(["inspect", str(sample_root)]) == 0
    assert "0 error(s)" in capsys.readouterr().out
    manifest = json.loads((sample_root / "sample_manifest.json").read_text())
    stats, problems = inspect_root(sample_root)
    assert not [p for p in problems if p.severity == "error"]
    for task in AFFWILD2_TASKS:
        for split, expected in manifest["affwild2"][task.name].items():
            got = stats["affwild2"][task.name][split]
            assert (got["tracks"], got["lines"], got["missing_crops"]) == (
                expected["tracks"], expected["lines"], expected["missing_crops"]), (task.name, split)
            if "valid" in expected:
                assert got["valid"] == expected["valid"], (task.name, split)
            if "class_counts" in expected:
                assert got["class_counts"] == expected["class_counts"]
    for split, expected in manifest["dvd"].items():
        got = stats["dvd"]["vd"][split]
        assert (got["tracks"], got["lines"]) == (expected["tracks"], expected["lines"])
        if "positives" in expected:
            assert got["class_counts"][1] == expected["positives"]
    fps = [v["fps"] for v in manifest["videos"].values() if v["dataset"] == "affwild2" and v["fps"]]
    low, high = stats["affwild2"]["expr"]["train"]["fps"]
    assert low >= min(fps) - 0.01 and high <= max(fps) + 0.01
