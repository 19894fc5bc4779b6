"""Fixtures for export tests: a tiny student encoder, its artifact and its ONNX export."""

from __future__ import annotations

from pathlib import Path

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


@pytest.fixture(scope="session")
def student_artifact(tiny_encoder, tmp_path_factory) -> Path:
    from edgepath.artifact import save_encoder

    folder = tmp_path_factory.mktemp("student")
    save_encoder(folder, tiny_encoder, kind="student", name="vit-test14")
    return folder


@pytest.fixture(scope="session")
def tiles():
    from edgepath.export.parity import parity_tiles

    return parity_tiles(224, n=6)
