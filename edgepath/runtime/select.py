"""Pick and open an engine for a model reference: artifact folder, ``Encoder``, card or student."""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

from edgepath.errors import ArtifactError, ConfigError, MissingDependencyError
from edgepath.models.artifact import NON_MODEL_ROLES
from edgepath.runtime.base import Engine

log = logging.getLogger(__name__)

ENGINES: tuple[str, ...] = ("torch", "onnxruntime", "openvino", "tensorrt")

#: Which file suffix each engine runs.
SUFFIXES: dict[str, tuple[str, ...]] = {
    "torch": (".safetensors",),
    "onnxruntime": (".onnx",),
    "openvino": (".xml", ".onnx"),
    "tensorrt": (".plan", ".engine"),
}

#: Engines whose runtime comes from a pip extra (``edgepath[openvino]``, ``edgepath[tensorrt]``):
#: engine -> extra; each engine's module has the engine's name. torch and onnxruntime are
#: dependencies of edgepath itself.
_EXTRAS: dict[str, str] = {"openvino": "openvino", "tensorrt": "tensorrt"}


def _installed(engine: str) -> bool:
    """Whether the engine's runtime can be imported here."""
    return engine not in _EXTRAS or importlib.util.find_spec(engine) is not None


def _cuda() -> bool:
    try:
        import torch

        return bool(torch.cuda.is_available())
    except Exception:  # pragma: no cover - broken torch install
        return False


def available_engines() -> list[str]:
    """Engines whose runtime is installed here (TensorRT only with a CUDA GPU), fastest first.

    Order on this machine's hardware: with a CUDA GPU, tensorrt > onnxruntime > torch; on CPU,
    openvino > onnxruntime > torch (measured in docs/export.md on x86: OpenVINO's CPU plugin
    beats onnxruntime's default CPU provider on ViTs, and both beat eager torch).
    """
    found = [e for e in ENGINES if _installed(e)]
    if "tensorrt" in found and not _cuda():
        found.remove("tensorrt")
    order = (
        ("tensorrt", "onnxruntime", "torch", "openvino")
        if _cuda()
        else (
            "openvino",
            "onnxruntime",
            "torch",
        )
    )
    return [e for e in order if e in found]


def artifact_files(folder: Path, manifest: dict[str, Any]) -> dict[str, Path]:
    """The model files of an artifact by engine that can run them (existing files only)."""
    # Only model files: a distilled student also lists its training heads and recipe.
    roles = {k: v for k, v in manifest.get("files", {}).items() if k not in NON_MODEL_ROLES}
    files = [folder / str(f) for f in roles.values()]
    out: dict[str, Path] = {}
    for engine, suffixes in SUFFIXES.items():
        for suffix in suffixes:  # an engine's preferred format first (.xml before .onnx)
            hit = next((f for f in files if f.suffix == suffix and f.is_file()), None)
            if hit is not None:
                out[engine] = hit
                break
    return out


def open_engine(
    ref: Any,
    *,
    engine: str = "auto",
    threads: int | None = None,
    device: str | None = None,
    precision: str | None = None,
    compile: bool = False,
) -> Engine:
    """Open a model on an engine.

    Args:
        ref: A ``ModelHandle`` (``edgepath.models.resolve``), an ``Encoder``, or any reference
            ``resolve`` takes (artifact folder, teacher card, ``student[@mpp]``).
        engine: ``auto`` (the fastest installed engine that can run the artifact's files),
            ``torch``, ``onnxruntime``, ``openvino`` or ``tensorrt``.
        threads: Intra-op threads.
        device: Engine-specific device (``cpu``, ``cuda:0``, OpenVINO ``GPU`` …); ``auto`` is the
            torch engine's (``cuda`` when torch sees a GPU) and every other engine's default.
        precision: The torch engine's precision (``fp32``, or ``fp16`` / ``bf16`` autocast on
            CUDA); other engines run the artifact's own precision.
        compile: ``torch.compile`` the torch engine's encoder.

    Raises:
        ConfigError: Unknown engine, or an engine that cannot run this artifact.
        MissingDependencyError: The engine's runtime is not installed.
    """
    from edgepath.models.resolver import ModelHandle, resolve

    if engine != "auto" and engine not in ENGINES:
        raise ConfigError(
            f"unknown engine '{engine}'; expected auto or one of: {', '.join(ENGINES)}"
        )
    if engine != "auto" and not _installed(engine):
        raise MissingDependencyError(engine, _EXTRAS[engine], purpose=f"--engine {engine}")
    torch_opts = {"precision": precision or "fp32", "compile": compile}
    if hasattr(ref, "forward_tokens") and hasattr(ref, "spec"):  # an Encoder
        return _torch(ref, engine, threads=threads, device=device, **torch_opts)
    model = ref if isinstance(ref, ModelHandle) else resolve(ref)
    if model.folder is not None:
        return _open_artifact(model, engine, threads=threads, device=device, **torch_opts)
    return _torch(model.encoder, engine, threads=threads, device=device, **torch_opts)


def _torch(encoder: Any, engine: str, *, threads: int | None, device: str | None, **opts) -> Engine:
    if engine not in ("auto", "torch"):
        raise ConfigError(
            f"--engine {engine} needs an exported model; run edgepath export first (a torch "
            "model runs on --engine torch)"
        )
    from edgepath.runtime.torch_engine import TorchEngine

    return TorchEngine(encoder, threads=threads, device=device, **opts)


def _auto_engine(
    folder: Path, manifest: dict[str, Any], runnable: dict[str, Path], *, torch_options: bool
) -> str:
    """The engine ``--engine auto`` runs an artifact on.

    The torch engine when torch-only options are asked for (``torch_options``); else the engine
    the artifact's stage validated it on, then engines an export was parity-checked on, then the
    fastest installed engine here.
    """
    if torch_options and "torch" in runnable:
        return "torch"  # only the torch engine has these options
    usable = available_engines()
    choices = [e for e in usable if e in runnable]
    validated = [e for e in choices if e in manifest.get("parity", {})]
    if validated:  # engines an export was parity-checked on come first
        choices = validated + [e for e in choices if e not in validated]
    preferred = manifest.get("engine")
    if preferred in runnable and preferred in usable and preferred != "torch":
        # The stage that wrote the artifact validated it on this engine (e.g. openvino for
        # an NNCF OpenVINO INT8 IR); it wins over the generic speed order.
        choices.insert(0, preferred)
    if not choices:  # torch and onnxruntime always run: these files need an extra's runtime
        missing = next(iter(runnable))
        raise MissingDependencyError(missing, _EXTRAS[missing], purpose=f"running {folder}")
    return choices[0]


def _open_artifact(
    model: Any,
    engine: str,
    *,
    threads: int | None,
    device: str | None,
    precision: str = "fp32",
    compile: bool = False,
) -> Engine:
    from edgepath.models.artifact import require_ok

    folder, manifest, spec, torch_precision = model.folder, model.manifest, model.spec, precision
    require_ok(folder, manifest, action="run")
    precision = str(manifest.get("precision", "fp32"))
    runnable = artifact_files(folder, manifest)
    if not runnable:
        raise ArtifactError(
            f"{folder}: manifest lists no model file any engine can run; re-create the artifact"
        )
    if engine == "auto":
        engine = _auto_engine(
            folder, manifest, runnable, torch_options=torch_precision != "fp32" or compile
        )
    if engine not in runnable:
        raise ConfigError(
            f"{folder}: --engine {engine} cannot run this artifact (it has "
            f"{', '.join(p.name for p in runnable.values())}); use --engine "
            f"{' or '.join(runnable)}"
        )
    path = runnable[engine]
    log.info("opening %s with %s", path, engine)
    if engine == "torch":
        from edgepath.runtime.torch_engine import TorchEngine

        return TorchEngine(
            model.require_encoder(),
            threads=threads,
            device=device,
            precision=torch_precision,
            compile=compile,
        )
    if torch_precision != "fp32" or compile:
        what = f"--precision {torch_precision}" if torch_precision != "fp32" else "--compile"
        raise ConfigError(
            f"{what} is for the torch engine; {engine} runs {folder.name} at its own precision "
            f"({precision}): add --engine torch, or drop {what}"
        )
    if device == "auto":  # auto is every engine's own default device
        device = None
    if engine == "onnxruntime":
        from edgepath.runtime.onnxruntime_engine import OnnxRuntimeEngine

        return OnnxRuntimeEngine(
            path, spec=spec, precision=precision, threads=threads, device=device
        )
    if engine == "openvino":
        from edgepath.runtime.openvino_engine import OpenVINOEngine

        return OpenVINOEngine(path, spec=spec, precision=precision, threads=threads, device=device)
    from edgepath.runtime.tensorrt_engine import TensorRTEngine

    return TensorRTEngine(
        path,
        spec=spec,
        precision=precision,
        device=device,
        built_with=manifest.get("tensorrt"),
    )
