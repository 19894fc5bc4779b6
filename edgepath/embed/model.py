"""Open the model an embedding run uses and pin down its identity (id + weights hash)."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

from edgepath.embed.run import ModelInfo

log = logging.getLogger(__name__)


def artifact_sha256(folder: str | Path, manifest: dict[str, Any]) -> str:
    """SHA-256 over every file an artifact's manifest lists (weights, graph, engine plans)."""
    from edgepath.io import sha256_file

    folder = Path(folder)
    h = hashlib.sha256()
    for role, name in sorted(manifest.get("files", {}).items()):
        p = folder / str(name)
        if p.is_file():
            h.update(f"{role}={sha256_file(p)};".encode())
        elif p.is_dir():  # bundle folders
            for q in sorted(x for x in p.rglob("*") if x.is_file()):
                h.update(f"{role}/{q.relative_to(p)}={sha256_file(q)};".encode())
    return h.hexdigest()


def open_model(
    ref: str | Path,
    *,
    engine: str = "auto",
    threads: int | None = None,
    device: str | None = None,
    precision: str | None = None,
) -> tuple[Any, ModelInfo]:
    """Open ``ref`` on an engine and describe it for the feature files.

    Args:
        ref: An artifact folder (any kind), a teacher card name/path or a student name.
        engine: ``auto``, ``torch``, ``onnxruntime``, ``openvino`` or ``tensorrt``.
        threads: Engine threads (``None``: the runtime's default).
        device: The torch engine's device (``cpu``, ``cuda``, ``auto``; default ``cpu``).
        precision: The torch engine's precision (``fp32``; ``fp16`` / ``bf16`` on CUDA).

    Returns:
        The engine and the model's identity.
    """
    from edgepath.artifact import is_artifact, read_manifest
    from edgepath.runtime import open_engine

    if is_artifact(ref):
        folder = Path(ref)
        manifest = read_manifest(folder)
        sha = artifact_sha256(folder, manifest)
        eng = open_engine(
            folder, engine=engine, threads=threads, device=device, precision=precision
        )
        model_id = f"{manifest.get('name', folder.name)} ({manifest['kind']}: {folder.name})"
    else:
        from edgepath.models import load_model

        encoder, info = load_model(str(ref))
        sha = str(info.get("sha256") or "")
        eng = open_engine(
            encoder, engine=engine, threads=threads, device=device, precision=precision
        )
        model_id = str(info.get("name", ref))
        if info.get("random_weights"):
            model_id += " (random weights)"
    return eng, ModelInfo(
        id=model_id, sha256=sha, engine=eng.name, precision=str(getattr(eng, "precision", ""))
    )
