"""Card loading: every shipped card validates; malformed cards fail naming file and key."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from edgepath import cards
from edgepath.errors import ConfigError
from tests.conftest import TEST_CARDS

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


def _fixtures() -> set[str]:
    names = {p.stem for p in TEST_CARDS.rglob("*.toml")}
    assert names >= {"vit-test14", "int8-generic-broken"}
    return names


def test_test_fixtures_are_cards_the_tests_find() -> None:
    from edgepath.models.students import STUDENTS

    assert "vit-test14" in STUDENTS and STUDENTS["vit-test14"].width == 64
    assert cards.load("quantize", "int8-generic-broken").model_type == "generic"
    for p in TEST_CARDS.rglob("*.toml"):  # each in its kind's folder, as in a user card folder
        assert p.parent.name in cards.KINDS and p.parent.parent == TEST_CARDS
        assert not (Path(__file__).resolve().parents[1] / p.parent.name / p.name).exists()


def test_user_listings_show_no_test_fixture(run_cli, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(cards.ENV_VAR, raising=False)  # a user's environment
    fixtures = _fixtures()
    code, out, _ = run_cli("cards", "list", "--json")
    assert code == 0
    listed = json.loads(out)["cards"]
    assert set(listed) == set(cards.KINDS)
    names = {r["name"] for rows in listed.values() for r in rows}
    assert "vit-s14" in names and not names & fixtures
    code, out, _ = run_cli("cards", "list")
    assert code == 0 and not [f for f in fixtures if f in out]
    code, out, _ = run_cli("teachers", "list", "--json")
    assert code == 0 and not {r["name"] for r in json.loads(out)["teachers"]} & fixtures

    from edgepath.models.cards import InputSpec
    from edgepath.models.students import STUDENTS, student_spec

    assert set(STUDENTS) >= {"vit-s14", "vit-b14", "vit-mini14"} and not set(STUDENTS) & fixtures
    with pytest.raises(ConfigError, match="unknown student 'vit-test14'") as err:
        student_spec("vit-test14", input=InputSpec(224, 0.5, (0.5,) * 3, (0.5,) * 3))
    assert "vit-s14" in str(err.value) and "--cards-dir" in str(err.value)


def test_cards_list_shows_stand_ins_in_their_own_section(run_cli) -> None:
    stand_ins = {c.name for c in cards.load_all("teachers") if c.stand_in}
    assert stand_ins >= {"tiny-teacher", "histo-teacher"}
    code, out, _ = run_cli("cards", "list", "teachers")
    assert code == 0
    real, title, rest = out.partition("teachers: stand-ins, not pathology models")
    assert title and rest.startswith(f" ({len(stand_ins)})")
    listed = {line.split()[0] for line in rest.splitlines()[1:] if line.startswith("  ")}
    assert listed == stand_ins
    assert "uni2-h" in real and not {line.split()[0] for line in real.splitlines()[1:]} & stand_ins
    code, out, _ = run_cli("cards", "list", "teachers", "--json")
    rows = json.loads(out)["cards"]["teachers"]
    assert {r["name"] for r in rows if r["stand_in"]} == stand_ins
    assert [r["stand_in"] for r in rows] == sorted(r["stand_in"] for r in rows)  # stand-ins last
