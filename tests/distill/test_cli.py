"""``edgepath distill``: one JSON object with --json, one-line errors with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from .conftest import TINY


def _sets() -> list[str]:
    return [a for o in TINY for a in ("--set", o)]


def test_distill_json(run_cli, tile_dir: Path, tmp_path: Path) -> None:
    code, out, err = run_cli(
        "distill",
        "expert",
        "--teacher",
        "tiny-teacher",
        "--teacher",
        "tiny-teacher",
        "--student",
        "vit-test14",
        "--tiles",
        str(tile_dir),
        "-o",
        str(tmp_path / "run"),
        "--steps",
        "2",
        *_sets()[2:],
        "--set",
        "data.holdout=0.4",
        "--json",
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["recipe"] == "expert" and data["teachers"] == ["tiny-teacher", "tiny-teacher"]
    assert data["steps"] == 2 and data["stand_in"] is True
    assert data["fidelity"]["n_tiles"] > 0 and "centered_cosine" in data["fidelity_init"]
    man = json.loads((tmp_path / "run" / "edgepath.json").read_text())
    assert len(man["fidelity"]["per_teacher"]) == 2
    assert (tmp_path / "run" / "recipe.toml").is_file()
    assert (tmp_path / "run" / "scalars.csv").is_file()


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["h0mini"], "exactly one of --slides DIR or --tiles DIR"),
        (["xmag", "--tiles", "TILES"], "pass --slides DIR, not --tiles"),
        (["h0mini", "--tiles", "TILES", "--teacher-weights", "w.pt"], "one --teacher-weights"),
        (["h0mini", "--tiles", "TILES", "--set", "optim.nope=1"], "unknown key 'optim.nope'"),
        (["no-such-recipe", "--tiles", "TILES"], "no distill card named 'no-such-recipe'"),
        (["xmag", "--tiles", "TILES", "--set", "train.strategy=fsdp"], "FSDP is not supported"),
    ],
)
def test_user_errors_exit_2(
    run_cli, tile_dir: Path, tmp_path: Path, args: list[str], match: str
) -> None:
    args = [str(tile_dir) if a == "TILES" else a for a in args]
    code, out, err = run_cli("distill", *args, "-o", str(tmp_path / "r"), *_sets())
    assert code == 2, err
    assert out == ""
    assert match in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
