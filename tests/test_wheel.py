"""A wheel built from the repo, installed in a fresh venv outside the repo, finds its cards.

The wheel carries the package and the shipped cards only: no research/, no tests/, and none of
the test-only cards of tests/cards/ (the ``vit-test14`` student, the ``int8-generic-broken``
preset).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from edgepath import cards
from tests.conftest import REPO, TEST_CARDS


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dist = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            str(REPO),
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(dist),
        ],
        check=True,
        cwd=dist,
    )
    return next(dist.glob("edgepath-*.whl"))


@pytest.mark.slow
def test_wheel_ships_cards_and_runs_outside_repo(wheel: Path, tmp_path: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "edgepath/_cards/teachers/tiny-teacher.toml" in names
    assert "edgepath/_cards/students/vit-s14.toml" in names
    assert "edgepath/data/slides/cmu-1-small-region.svs" in names
    assert "edgepath/data/NOTICE.md" in names
    for n in (460, 2713, 5426, 8139):  # plismbench's tile subsets, read at run time
        assert f"edgepath/data/plism/tiles_subset_{n}.npy" in names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    # The card commands need only click (torch etc. are imported lazily by other verbs).
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel), "click"], check=True
    )
    env = {k: v for k, v in os.environ.items() if k != cards.ENV_VAR}  # a user's environment
    res = subprocess.run(
        [str(venv / "bin" / "edgepath"), "cards", "show", "tiny-teacher", "--json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert res.returncode == 0, res.stderr
    assert "/_cards/teachers/tiny-teacher.toml" in res.stdout

    res = subprocess.run(
        [str(venv / "bin" / "edgepath"), "cards", "list", "--json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
    )
    assert res.returncode == 0, res.stderr
    listed = json.loads(res.stdout)["cards"]
    assert set(listed) == set(cards.KINDS)
    for kind, rows in listed.items():
        shipped = {p.stem for p in (REPO / kind).glob("*.toml")}
        assert {r["name"] for r in rows} == shipped, kind
        assert all("/_cards/" in r["path"] for r in rows)


@pytest.mark.slow
def test_wheel_holds_no_research_tests_or_test_cards(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert tops == {"edgepath", wheel.name.split("-py")[0] + ".dist-info"}, tops
    assert not [n for n in names if "research" in n.split("/") or "tests" in n.split("/")]
    fixtures = sorted(TEST_CARDS.rglob("*.toml"))
    assert {p.stem for p in fixtures} >= {"vit-test14", "int8-generic-broken"}
    for p in fixtures:
        assert not [n for n in names if n.endswith(f"/{p.name}")], p.name
    # every shipped card, and only those, under edgepath/_cards/KIND/
    for kind in cards.KINDS:
        shipped = {f"edgepath/_cards/{kind}/{p.name}" for p in (REPO / kind).glob("*.toml")}
        in_wheel = {n for n in names if n.startswith(f"edgepath/_cards/{kind}/")}
        assert in_wheel == shipped, kind
