"""The Encoder interface: token split and embedding definitions on a tiny model."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from edgepath.models.cards import InputSpec
from edgepath.models.encoder import Encoder, build_encoder, count_parameters, to_tensor
from edgepath.models.students import STUDENTS, student_spec

INPUT = InputSpec(224, 0.5, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def test_token_layout_cls_registers_patches() -> None:
    enc = build_encoder(student_spec("vit-test14", input=INPUT)).eval()
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        seq = enc.sequence(x)
        tok = enc.forward_tokens(x)
    assert seq.shape == (2, 1 + 4 + 256, 64)
    assert torch.equal(tok.cls, seq[:, 0])
    assert torch.equal(tok.registers, seq[:, 1:5])
    assert torch.equal(tok.patches, seq[:, 5:])
    assert tok.grid == 16


def test_embedding_definitions_exclude_registers() -> None:
    spec = student_spec("vit-test14", input=INPUT, embedding="cls+mean_patch")
    enc = build_encoder(spec).eval()
    x = torch.randn(3, 3, 224, 224)
    with torch.no_grad():
        seq = enc.sequence(x)
        emb = enc(x)
    assert emb.shape == (3, 128)
    assert torch.allclose(emb[:, :64], seq[:, 0])
    assert torch.allclose(emb[:, 64:], seq[:, 5:].mean(1))
    # a mean that wrongly included registers would differ
    assert not torch.allclose(emb[:, 64:], seq[:, 1:].mean(1))
    cls_only = Encoder(
        enc.backbone,
        dataclasses.replace(
            spec, embedding=dataclasses.replace(spec.embedding, definition="cls", dim=64)
        ),
    )
    with torch.no_grad():
        assert torch.allclose(cls_only(x), seq[:, 0])


@pytest.mark.parametrize(
    ("name", "millions"), [("vit-s14", 22.0), ("vit-b14", 86.6), ("vit-b14-swiglu", 86.0)]
)
def test_student_parameter_counts(name: str, millions: float) -> None:
    n = count_parameters(student_spec(name, input=INPUT))
    assert abs(n / 1e6 - millions) / millions < 0.02, n
    assert name in STUDENTS


def test_to_tensor_normalises_uint8_nhwc() -> None:
    tiles = torch.full((1, 224, 224, 3), 255, dtype=torch.uint8)
    x = to_tensor(tiles.numpy(), student_spec("vit-test14", input=INPUT))
    assert x.shape == (1, 3, 224, 224)
    assert torch.allclose(x, torch.full_like(x, 2.0))
