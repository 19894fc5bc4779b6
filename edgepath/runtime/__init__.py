"""One ``Engine`` interface over torch, onnxruntime, openvino and tensorrt (runtimes load lazily)."""

from __future__ import annotations

from edgepath.models.preprocess import normalize
from edgepath.runtime.base import Engine
from edgepath.runtime.select import ENGINES, artifact_files, available_engines, open_engine

__all__ = ["ENGINES", "Engine", "artifact_files", "available_engines", "normalize", "open_engine"]
