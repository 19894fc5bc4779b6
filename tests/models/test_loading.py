"""Weights loading: every supported file layout round-trips strictly; clear errors otherwise."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from edgepath import cards
from edgepath.errors import ConfigError, MissingWeightsError
from edgepath.models import load_teacher, resolve
from edgepath.models.artifact import save_encoder
from edgepath.models.loading import random_encoder
from edgepath.models.weights import WeightsMismatchError

TINY = Path(__file__).resolve().parents[2] / "teachers" / "tiny-teacher.toml"


@pytest.fixture(scope="module")
def real_card(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny card as if it were a real teacher: weights expected from a (fake) Hub repo."""
    text = TINY.read_text().replace("stand_in = true", "stand_in = false")
    text += 'hf_repo = "edgepath-tests/no-such-repo"\nfiles = ["model.safetensors"]\n'
    p = tmp_path_factory.mktemp("cards") / "tiny-real.toml"
    p.write_text(text)
    return p


@pytest.fixture(scope="module")
def source(real_card: Path):
    """A tiny encoder with random weights that the layouts below are written from."""
    return random_encoder(cards.load("teachers", real_card).spec, seed=123)


@pytest.fixture(scope="module")
def x() -> torch.Tensor:
    return torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))


def _state(enc) -> dict[str, torch.Tensor]:
    return {k: v.clone().contiguous() for k, v in enc.backbone.state_dict().items()}


def _write_layout(layout: str, folder: Path, state: dict[str, torch.Tensor]) -> Path:
    if layout == "safetensors":
        save_file(state, str(folder / "model.safetensors"))
        return folder / "model.safetensors"
    if layout == "bin":
        torch.save(state, folder / "pytorch_model.bin")
        return folder / "pytorch_model.bin"
    if layout == "pth-module-prefix":
        torch.save({f"module.{k}": v for k, v in state.items()}, folder / "ckpt.pth")
        return folder / "ckpt.pth"
    if layout == "pth-model-container":
        torch.save(
            {"model": {f"model.{k}": v for k, v in state.items()}, "epoch": 3},
            folder / "checkpoint.pth",
        )
        return folder / "checkpoint.pth"
    if layout == "dino-teacher-backbone":
        wrapped = {f"backbone.{k}": v for k, v in state.items()}
        wrapped["dino_head.last_layer.weight"] = torch.zeros(4, 4)
        torch.save({"teacher": wrapped}, folder / "teacher_checkpoint.pth")
        return folder / "teacher_checkpoint.pth"
    if layout == "sharded-folder":
        keys = sorted(state)
        half = len(keys) // 2
        shards = {
            "model-00001-of-00002.safetensors": keys[:half],
            "model-00002-of-00002.safetensors": keys[half:],
        }
        for name, ks in shards.items():
            save_file({k: state[k] for k in ks}, str(folder / name))
        index = {"weight_map": {k: n for n, ks in shards.items() for k in ks}}
        (folder / "model.safetensors.index.json").write_text(json.dumps(index))
        return folder
    if layout == "card-folder":
        save_file(state, str(folder / "model.safetensors"))
        (folder / "README.md").write_text("weights")
        return folder
    raise AssertionError(layout)


LAYOUTS = [
    "safetensors",
    "bin",
    "pth-module-prefix",
    "pth-model-container",
    "dino-teacher-backbone",
    "sharded-folder",
    "card-folder",
]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_layout_loads_back_strictly(layout, tmp_path, real_card, source, x) -> None:
    target = _write_layout(layout, tmp_path, _state(source))
    enc = load_teacher(real_card, weights=target)
    with torch.no_grad():
        assert torch.equal(enc(x), source(x))
    for k, v in source.backbone.state_dict().items():
        assert torch.equal(enc.backbone.state_dict()[k], v), k


def test_env_var_points_at_weights(tmp_path, real_card, source, x, monkeypatch) -> None:
    path = _write_layout("safetensors", tmp_path, _state(source))
    monkeypatch.setenv("EDGEPATH_WEIGHTS_TINY_REAL", str(path))
    m = resolve(real_card)
    enc = m.encoder
    assert m.source == "teacher" and m.random_weights is False
    assert m.files == (str(path),)
    with torch.no_grad():
        assert torch.equal(enc(x), source(x))


def test_missing_and_unexpected_keys_are_summarised(tmp_path, real_card, source) -> None:
    state = _state(source)
    del state["reg_token"]
    state["head.weight"] = torch.zeros(3, 128)
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    with pytest.raises(WeightsMismatchError) as err:
        load_teacher(real_card, weights=path)
    msg = str(err.value)
    assert str(path) in msg and "\n" not in msg
    assert "1 missing (reg_token)" in msg and "1 unexpected (head.weight)" in msg


def test_shape_mismatch_is_reported(tmp_path, real_card, source) -> None:
    state = _state(source)
    state["blocks.0.attn.qkv.weight"] = torch.zeros(12, 128)
    path = tmp_path / "bad.safetensors"
    save_file(state, str(path))
    with pytest.raises(WeightsMismatchError, match=r"1 shape mismatches \(blocks.0.attn.qkv"):
        load_teacher(real_card, weights=path)


def test_offline_missing_weights_message(real_card, monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path))  # an empty cache
    monkeypatch.delenv("EDGEPATH_WEIGHTS_TINY_REAL", raising=False)
    with pytest.raises(MissingWeightsError) as err:
        load_teacher(real_card)
    msg = str(err.value)
    assert "\n" not in msg
    assert "teacher 'tiny-real'" in msg
    assert "model.safetensors from hf:edgepath-tests/no-such-repo" in msg
    assert "--weights PATH" in msg and "$EDGEPATH_WEIGHTS_TINY_REAL" in msg


def test_folder_without_the_card_files_names_what_it_found(real_card, tmp_path) -> None:
    (tmp_path / "a.pth").write_bytes(b"")
    (tmp_path / "b.pth").write_bytes(b"")
    with pytest.raises(MissingWeightsError, match=r"found a.pth, b.pth"):
        load_teacher(real_card, weights=tmp_path)


def test_stand_in_gets_seeded_random_weights(x) -> None:
    m = resolve("tiny-teacher")
    a, b = m.encoder, load_teacher("tiny-teacher")
    assert m.random_weights is True and m.stand_in is True
    with torch.no_grad():
        assert torch.equal(a(x), b(x))
    assert a.embed_dim == 256 and a(x).shape == (2, 256)


def test_student_name_and_artifact_folder(tmp_path, x) -> None:
    m = resolve("vit-test14")
    enc = m.encoder
    assert m.source == "student" and m.random_weights is True
    save_encoder(tmp_path / "art", enc, name="my-student")
    m2 = resolve(tmp_path / "art")
    again = m2.encoder
    assert m2.source == "artifact" and m2.name == "my-student"
    assert len(m2.sha256) == 64
    with torch.no_grad():
        assert torch.equal(again(x), enc(x))
    # student name + weights file: loads them strictly
    save_file(_state(enc), str(tmp_path / "s.safetensors"))
    m3 = resolve("vit-test14", weights=tmp_path / "s.safetensors")
    loaded = m3.encoder
    assert m3.random_weights is False
    with torch.no_grad():
        assert torch.equal(loaded(x), enc(x))


def test_unknown_reference_says_what_is_accepted() -> None:
    with pytest.raises(ConfigError, match="not an artifact folder, a teacher card or a student"):
        resolve("no-such-model")


def test_unreadable_checkpoints_are_one_line_errors(real_card, tmp_path) -> None:
    import argparse

    torch.save(
        {"model": {"w": torch.zeros(1)}, "args": argparse.Namespace(lr=1)}, tmp_path / "a.pth"
    )
    with pytest.raises(MissingWeightsError, match="Python objects besides tensors"):
        load_teacher(real_card, weights=tmp_path / "a.pth")
    (tmp_path / "b.safetensors").write_bytes(b"\x00" * 16)
    with pytest.raises(MissingWeightsError, match="not a readable safetensors file"):
        load_teacher(real_card, weights=tmp_path / "b.safetensors")
    (tmp_path / "c.bin").write_bytes(b"garbage")
    with pytest.raises(MissingWeightsError, match="cannot read as a torch checkpoint"):
        load_teacher(real_card, weights=tmp_path / "c.bin")
