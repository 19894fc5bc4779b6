"""Fixtures: a tiny student artifact with torch weights and an ONNX graph (runs on every engine)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest


def wait_for(cond, timeout: float, what: str, *, poll: float = 0.02) -> None:
    """Poll ``cond()`` until true; fail the test naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(poll)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """``vit-test14`` (random seeded weights) saved as an artifact with ``model.onnx``."""
    from edgepath.export.onnx import export_onnx
    from edgepath.models import resolve
    from edgepath.models.artifact import save_encoder, write_manifest

    folder = tmp_path_factory.mktemp("models") / "tiny"
    enc = resolve("vit-test14").encoder
    manifest = save_encoder(folder, enc, kind="student", name="vit-test14")
    export_onnx(enc, folder / "model.onnx")
    manifest["files"]["onnx"] = "model.onnx"
    write_manifest(folder, manifest)
    return folder


@pytest.fixture()
def slides_dir(tmp_path, sample_slide) -> Path:
    """A folder with two copies of the sample slide (distinct files, so distinct outputs)."""
    import shutil

    d = tmp_path / "slides"
    d.mkdir()
    shutil.copy(sample_slide, d / "a.svs")
    shutil.copy(sample_slide, d / "b.svs")
    return d
