"""Card loading: every shipped card validates; malformed cards fail naming file and key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgepath import cards
from edgepath.errors import ConfigError

TINY = Path(__file__).resolve().parents[1] / "teachers" / "tiny-teacher.toml"


@pytest.mark.parametrize("kind", sorted(cards.KINDS))
def test_every_shipped_card_loads(kind: str) -> None:
    loaded = list(cards.load_all(kind))
    assert loaded, f"no shipped {kind} cards"
    for card in loaded:
        assert card.name
        assert getattr(card, "description", "x")


def test_load_by_name_and_by_path_agree() -> None:
    by_name = cards.load("teachers", "tiny-teacher")
    by_path = cards.load("teachers", TINY)
    assert by_name == by_path
    assert by_name.stand_in is True
    assert by_name.input.mean == (0.485, 0.456, 0.406)
    assert by_name.embedding.definition == "cls+mean_patch"


def _write(tmp_path: Path, text: str, name: str = "bad.toml") -> Path:
    p = tmp_path / name
    p.write_text(text)
    return p


def test_unknown_key_names_file_and_key(tmp_path: Path) -> None:
    p = _write(tmp_path, TINY.read_text().replace("[input]", "[input]\nmpp_typo = 3"))
    with pytest.raises(ConfigError) as err:
        cards.load("teachers", p)
    assert str(p) in str(err.value)
    assert "input.mpp_typo" in str(err.value)


def test_missing_key_names_file_key_and_type(tmp_path: Path) -> None:
    text = "\n".join(line for line in TINY.read_text().splitlines() if not line.startswith("mpp"))
    p = _write(tmp_path, text)
    with pytest.raises(ConfigError, match=r"missing key 'input.mpp' \(expected float\)"):
        cards.load("teachers", p)


def test_wrong_type_names_expected(tmp_path: Path) -> None:
    p = _write(tmp_path, TINY.read_text().replace("tile_px = 224", 'tile_px = "224"'))
    with pytest.raises(ConfigError, match=r"key 'input.tile_px' is '224', expected int"):
        cards.load("teachers", p)


def test_tuple_length_is_checked(tmp_path: Path) -> None:
    p = _write(tmp_path, TINY.read_text().replace("mean = [0.485, 0.456, 0.406]", "mean = [0.5]"))
    with pytest.raises(ConfigError, match="input.mean"):
        cards.load("teachers", p)


def test_cross_field_validation(tmp_path: Path) -> None:
    p = _write(tmp_path, TINY.read_text().replace("tile_px = 224", "tile_px = 225"))
    with pytest.raises(ConfigError, match="not a multiple of tokens.patch_size"):
        cards.load("teachers", p)


def test_bad_toml_syntax(tmp_path: Path) -> None:
    p = _write(tmp_path, "description = \n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        cards.load("teachers", p)


def test_unknown_name_lists_known() -> None:
    with pytest.raises(ConfigError, match="known: .*tiny-teacher"):
        cards.load("teachers", "no-such-teacher")


def test_user_cards_dir_from_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "teachers").mkdir()
    (tmp_path / "teachers" / "my-teacher.toml").write_text(
        TINY.read_text().replace("Tiny random", "My own")
    )
    monkeypatch.setenv(cards.ENV_VAR, str(tmp_path))
    assert "my-teacher" in cards.card_paths("teachers")
    assert cards.load("teachers", "my-teacher").description.startswith("My own")


def test_cli_malformed_card_exits_2_one_line(tmp_path: Path, run_cli) -> None:
    p = _write(tmp_path, TINY.read_text().replace("[tokens]", "[tokens]\nbogus = 1"))
    code, out, err = run_cli("cards", "show", str(p))
    assert code == 2
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert str(p) in lines[0] and "tokens.bogus" in lines[0]
    assert "Traceback" not in err


def test_cli_debug_shows_traceback(tmp_path: Path, run_cli) -> None:
    p = _write(tmp_path, TINY.read_text().replace("[tokens]", "[tokens]\nbogus = 1"))
    code, _, err = run_cli("--debug", "cards", "show", str(p))
    assert code == 2
    assert "Traceback" in err


def test_cli_cards_list_and_show_json(run_cli) -> None:
    code, out, _ = run_cli("cards", "list", "--json")
    assert code == 0
    data = json.loads(out)
    assert "tiny-teacher" in [c["name"] for c in data["cards"]["teachers"]]
    code, out, _ = run_cli("cards", "show", "tiny-teacher", "--json")
    assert code == 0
    shown = json.loads(out)
    assert shown["card"]["embedding"] == {"definition": "cls+mean_patch", "dim": 256}


@pytest.mark.parametrize(
    ("kind", "card"),
    [("teachers", "teachers/tiny-teacher.toml"), ("distill", "distill/xmag.toml")],
)
def test_cli_show_infers_kind_of_a_card_outside_its_folder(
    tmp_path: Path, run_cli, kind: str, card: str
) -> None:
    src = Path(__file__).resolve().parents[1] / card
    p = tmp_path / "mine.toml"
    p.write_text(src.read_text())
    code, out, err = run_cli("cards", "show", str(p), "--json")
    assert code == 0, err
    assert json.loads(out)["kind"] == kind
