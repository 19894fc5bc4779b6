"""A wheel built from the repo, installed in a fresh venv outside the repo, finds its cards."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_wheel_ships_cards_and_runs_outside_repo(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
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
        cwd=tmp_path,
    )
    wheel = next(dist.glob("edgepath-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    assert "edgepath/_cards/teachers/tiny-teacher.toml" in names
    assert "edgepath/data/slides/cmu-1-small-region.svs" in names
    assert "edgepath/data/NOTICE.md" in names

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = venv / "bin" / "python"
    # The card commands need only click (torch etc. are imported lazily by other verbs).
    subprocess.run(
        [str(py), "-m", "pip", "install", "-q", "--no-deps", str(wheel), "click"], check=True
    )
    res = subprocess.run(
        [str(venv / "bin" / "edgepath"), "cards", "show", "tiny-teacher", "--json"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert res.returncode == 0, res.stderr
    assert "/_cards/teachers/tiny-teacher.toml" in res.stdout
