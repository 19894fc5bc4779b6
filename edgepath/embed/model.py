"""Open the model an embedding run uses, and describe it for the feature files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from edgepath.embed.run import ModelInfo


def open_model(
    ref: str | Path,
    *,
    engine: str = "auto",
    threads: int | None = None,
    device: str | None = None,
    precision: str | None = None,
) -> tuple[Any, ModelInfo]:
    """Resolve ``ref`` (``edgepath.models.resolve``), open it on an engine, and describe it.

    Args:
        ref: An artifact folder (any kind), a teacher card name/path or ``student[@mpp]``.
        engine: ``auto``, ``torch``, ``onnxruntime``, ``openvino`` or ``tensorrt``.
        threads: Engine threads (``None``: the runtime's default).
        device: The torch engine's device (``cpu``, ``cuda``, ``auto``; default ``cpu``).
        precision: The torch engine's precision (``fp32``; ``fp16`` / ``bf16`` on CUDA).

    Returns:
        The engine and the model's id and identity hash (the one child manifests record as
        their parent's ``sha256``).
    """
    from edgepath.models import resolve
    from edgepath.runtime import open_engine

    model = resolve(ref)
    eng = open_engine(model, engine=engine, threads=threads, device=device, precision=precision)
    return eng, ModelInfo(
        id=model.label,
        sha256=model.sha256,
        engine=eng.name,
        precision=str(getattr(eng, "precision", "")),
        name=model.name,
    )
