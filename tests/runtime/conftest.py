"""Fixtures for runtime tests: a tiny student encoder, its artifact and its ONNX export."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def tiny_encoder():
    import torch

    from edgepath import cards
    from edgepath.models.encoder import build_encoder
    from edgepath.models.students import student_spec

    torch.manual_seed(0)
    teacher = cards.load("teachers", "tiny-teacher")
    spec = student_spec("vit-test14", input=teacher.input, embedding="cls+mean_patch")
    return build_encoder(spec).eval()
