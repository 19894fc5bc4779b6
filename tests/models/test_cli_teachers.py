"""``edgepath teachers list | show | check`` end to end, in-process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

TINY = Path(__file__).resolve().parents[2] / "teachers" / "tiny-teacher.toml"


def test_list_json_has_every_card(run_cli) -> None:
    code, out, _ = run_cli("teachers", "list", "--json")
    assert code == 0
    rows = {r["name"]: r for r in json.loads(out)["teachers"]}
    assert {"uni", "uni2-h", "virchow2", "conch", "tiny-teacher"} <= set(rows)
    assert rows["virchow2"]["embed_dim"] == 2560 and rows["virchow2"]["gated"] is True
    assert rows["uni2-h"]["env_var"] == "EDGEPATH_WEIGHTS_UNI2_H"


def test_list_shows_stand_ins_in_their_own_section(run_cli) -> None:
    from edgepath import cards

    stand_ins = {c.name for c in cards.load_all("teachers") if c.stand_in}
    code, out, _ = run_cli("teachers", "list")
    assert code == 0
    real, title, rest = out.partition("stand-ins, not pathology models")
    assert title and rest.startswith(f" ({len(stand_ins)})")
    assert {line.split()[0] for line in rest.strip().splitlines()[1:]} == stand_ins
    names = {line.split()[0] for line in real.strip().splitlines()[1:]}
    assert {"uni", "uni2-h", "virchow2"} <= names and not names & stand_ins
    code, out, _ = run_cli("teachers", "list", "--json")
    rows = json.loads(out)["teachers"]
    assert {r["name"] for r in rows if r["stand_in"]} == stand_ins
    assert [r["stand_in"] for r in rows] == sorted(r["stand_in"] for r in rows)  # stand-ins last


def test_show_json_params_and_embed_dim_on_meta(run_cli) -> None:
    code, out, _ = run_cli("teachers", "show", "uni2-h", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["name"] == "uni2-h" and data["embed_dim"] == 1536
    assert abs(data["params"] / 681e6 - 1) < 0.02
    assert data["tokens"]["num_registers"] == 8 and data["tokens"]["num_patches"] == 256
    code, out, _ = run_cli("teachers", "show", "uni2-h")
    assert code == 0 and "681.4 M" in out and "EDGEPATH_WEIGHTS_UNI2_H" in out


def test_check_stand_in_embeds_the_real_sample_tile(run_cli) -> None:
    code, out, _ = run_cli("teachers", "check", "tiny-teacher", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["embed_dim"] == 256 and data["finite"] is True and data["random_weights"]
    assert len(data["checksum"]) == 16
    from edgepath.models.check import check_teacher

    assert check_teacher("tiny-teacher")["checksum"] == data["checksum"]  # seeded: reproducible


def test_check_with_weights_file(run_cli, tmp_path: Path) -> None:
    from edgepath.models import load_teacher

    card = tmp_path / "tiny-real.toml"
    card.write_text(TINY.read_text().replace("stand_in = true", "stand_in = false"))
    enc = load_teacher(card, random_weights=True)
    import torch

    torch.save({"model": enc.backbone.state_dict()}, tmp_path / "ckpt.pth")
    code, out, err = run_cli(
        "teachers", "check", str(card), "--weights", str(tmp_path / "ckpt.pth"), "--json"
    )
    assert code == 0, err
    data = json.loads(out)
    assert data["random_weights"] is False and data["files"] == [str(tmp_path / "ckpt.pth")]


def test_check_offline_without_weights_is_one_line_exit_2(run_cli, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))
    monkeypatch.delenv("EDGEPATH_WEIGHTS_VIRCHOW2", raising=False)
    code, out, err = run_cli("teachers", "check", "virchow2")
    assert code == 2 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err
    assert (
        "teacher 'virchow2'" in lines[0]
        and "pytorch_model.bin from hf:paige-ai/Virchow2" in lines[0]
    )
    assert "--weights PATH" in lines[0] and "$EDGEPATH_WEIGHTS_VIRCHOW2" in lines[0]


@pytest.mark.parametrize("name", ["no-such-teacher"])
def test_unknown_teacher_lists_known(run_cli, name: str) -> None:
    code, _, err = run_cli("teachers", "show", name)
    assert code == 2 and "known:" in err and "uni2-h" in err


def test_check_bad_device_is_a_user_error(run_cli) -> None:
    code, out, err = run_cli("teachers", "check", "tiny-teacher", "--device", "bogus")
    assert code == 2 and out == "" and "not a torch device" in err
