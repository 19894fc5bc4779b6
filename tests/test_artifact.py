"""Artifact folders: save a student, read it back bit-exactly; broken manifests fail clearly."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from edgepath.errors import ArtifactError
from edgepath.io import sha256_file
from edgepath.models import artifact
from edgepath.models.cards import InputSpec
from edgepath.models.encoder import build_encoder
from edgepath.models.students import student_spec

INPUT = InputSpec(224, 2.0, (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))


def test_roundtrip_student(tmp_path: Path) -> None:
    torch.manual_seed(0)
    enc = build_encoder(student_spec("vit-test14", input=INPUT, embedding="cls+mean_patch")).eval()
    manifest = artifact.save_encoder(tmp_path / "a", enc, name="test-student", recipe="xmag")
    assert manifest["input"]["mpp"] == 2.0
    assert manifest["embedding"] == {"definition": "cls+mean_patch", "dim": 128}
    back = artifact.load_encoder(tmp_path / "a")
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(enc(x), back(x))
    assert manifest["sha256"] == sha256_file(tmp_path / "a" / "model.safetensors")
    assert not list((tmp_path / "a").glob(".*tmp*")), "temporary files left behind"


def test_missing_and_corrupt_manifest(tmp_path: Path) -> None:
    with pytest.raises(ArtifactError, match="not an edgepath artifact"):
        artifact.read_manifest(tmp_path)
    (tmp_path / artifact.MANIFEST).write_text("{not json")
    with pytest.raises(ArtifactError, match="unreadable manifest"):
        artifact.read_manifest(tmp_path)
    (tmp_path / artifact.MANIFEST).write_text(json.dumps({"format_version": 1}))
    with pytest.raises(ArtifactError, match="no 'kind'"):
        artifact.read_manifest(tmp_path)


def test_weights_that_do_not_match_the_spec(tmp_path: Path) -> None:
    enc = build_encoder(student_spec("vit-test14", input=INPUT))
    artifact.save_encoder(tmp_path, enc)
    m = json.loads((tmp_path / artifact.MANIFEST).read_text())
    m["spec"]["architecture"]["kwargs"]["depth"] = 3
    (tmp_path / artifact.MANIFEST).write_text(json.dumps(m))
    with pytest.raises(ArtifactError, match="do not match"):
        artifact.load_encoder(tmp_path)


def test_failed_artifact_is_never_run_or_exported(tmp_path: Path) -> None:
    from edgepath.export.run import export
    from edgepath.runtime import open_engine

    enc = build_encoder(student_spec("vit-test14", input=INPUT))
    artifact.save_encoder(tmp_path / "a", enc, status="failed")
    with pytest.raises(ArtifactError, match="gate failed.*refusing to run"):
        open_engine(tmp_path / "a", engine="torch")
    with pytest.raises(ArtifactError, match="gate failed.*refusing to export"):
        export(tmp_path / "a", target="onnx", out=tmp_path / "out")
    assert not (tmp_path / "out").exists()
