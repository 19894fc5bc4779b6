"""Embedding definitions on the tiny stand-in teacher: CLS, CLS ⊕ mean patch, registers excluded."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from edgepath.models import load_teacher
from edgepath.models.encoder import Encoder, to_tensor


@pytest.fixture(scope="module")
def teacher() -> Encoder:
    return load_teacher("tiny-teacher")  # 4 registers, CLS ⊕ mean patch, 256-d


@pytest.fixture(scope="module")
def x(teacher: Encoder) -> torch.Tensor:
    from edgepath.models.check import sample_tile

    tiles = torch.stack([torch.from_numpy(sample_tile(224))] * 2)
    tiles[1] = tiles[1].flip(0)  # two different real tiles
    return to_tensor(tiles.numpy(), teacher.spec)


def _with(teacher: Encoder, definition: str, dim: int) -> Encoder:
    spec = teacher.spec
    emb = dataclasses.replace(spec.embedding, definition=definition, dim=dim)
    return Encoder(teacher.backbone, dataclasses.replace(spec, embedding=emb)).eval()


def test_token_split_cls_registers_patches(teacher: Encoder, x: torch.Tensor) -> None:
    with torch.no_grad():
        seq = teacher.sequence(x)
        tok = teacher.forward_tokens(x)
    assert seq.shape == (2, 1 + 4 + 196, 128)
    assert torch.equal(tok.cls, seq[:, 0])
    assert torch.equal(tok.registers, seq[:, 1:5])
    assert torch.equal(tok.patches, seq[:, 5:])
    assert tok.grid == 14


def test_cls_plus_mean_patch_excludes_registers(teacher: Encoder, x: torch.Tensor) -> None:
    with torch.no_grad():
        seq = teacher.sequence(x)
        emb = teacher(x)
    assert emb.shape == (2, 256) and teacher.embed_dim == 256
    torch.testing.assert_close(emb[:, :128], seq[:, 0])
    torch.testing.assert_close(emb[:, 128:], seq[:, 5:].mean(1))
    # what a loader that forgot the registers (or the CLS) would have produced instead
    assert not torch.allclose(emb[:, 128:], seq[:, 1:].mean(1), atol=1e-4)
    assert not torch.allclose(emb[:, 128:], seq.mean(1), atol=1e-4)


def test_cls_and_mean_patch_definitions(teacher: Encoder, x: torch.Tensor) -> None:
    with torch.no_grad():
        seq = teacher.sequence(x)
        cls = _with(teacher, "cls", 128)(x)
        mean = _with(teacher, "mean_patch", 128)(x)
    torch.testing.assert_close(cls, seq[:, 0])
    torch.testing.assert_close(mean, seq[:, 5:].mean(1))
    assert not torch.allclose(cls, mean)
