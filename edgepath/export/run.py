"""``edgepath export``: one model (float or quantized) to one target, parity-checked, as an artifact.

The steps: load the target card; open the source (a torch model, or a quantized artifact run by
its own engine) as the *reference*; settle the precision (default: the source's own); write the
precision-carrying ONNX (or IR); produce the target's files; compare the exported model with the
reference on real sample tiles (a failure is a ``ToleranceError``, exit 2, and nothing is left
under the output name); write the manifest. Everything is staged in a temporary sibling folder
and renamed into place only when complete.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edgepath.errors import ArtifactError, ConfigError, MissingDependencyError
from edgepath.export.parity import compare, min_cosine_for, parity_tiles
from edgepath.export.targets import ExportTarget, load_target, normalize_precision
from edgepath.models.cards import EncoderSpec

log = logging.getLogger(__name__)


@dataclass
class Source:
    """What is exported: a torch encoder, or a quantized artifact's graph, and its reference."""

    name: str
    spec: EncoderSpec
    precision: str
    #: The precision label to record (``fp8-e4m3`` keeps its format).
    precision_label: str
    reference: Any  # an Engine: the validated model
    encoder: Any = None  # torch Encoder for float sources
    onnx: Path | None = None  # quantized sources: their ONNX (QDQ)
    ir: Path | None = None  # quantized sources: their OpenVINO IR
    parent: dict[str, Any] | None = None
    fidelity: dict[str, Any] | None = None
    random_weights: bool = False


def open_source(ref: str | os.PathLike[str]) -> Source:
    """Open what ``ref`` names: an artifact folder (student, quantized, export) or a model name."""
    from edgepath.artifact import (
        is_artifact,
        manifest_spec,
        read_manifest,
        require_ok,
        weights_sha256,
    )
    from edgepath.runtime import artifact_files, open_engine

    if is_artifact(ref):
        folder = Path(ref)
        manifest = read_manifest(folder)
        require_ok(folder, manifest, action="export")
        spec = manifest_spec(folder, manifest)
        label = str(manifest.get("precision", "fp32"))
        files = artifact_files(folder, manifest)
        parent = {"path": str(folder.resolve()), "sha256": weights_sha256(folder, manifest)}
        common = {
            "name": str(manifest.get("name", folder.name)),
            "spec": spec,
            "precision": normalize_precision(label),
            "precision_label": label,
            "parent": parent,
            "fidelity": manifest.get("fidelity"),
            "random_weights": bool(manifest.get("random_weights", False)),
        }
        if "torch" in files:
            from edgepath.artifact import load_encoder

            encoder = load_encoder(folder)
            return Source(**common, reference=open_engine(encoder, engine="torch"), encoder=encoder)
        onnx = files.get("onnxruntime")
        ir = files.get("openvino") if files.get("openvino", Path()).suffix == ".xml" else None
        if onnx is None and ir is None:
            raise ArtifactError(
                f"{folder}: no ONNX, IR or torch weights to export; re-create the artifact"
            )
        reference = open_engine(folder, engine="onnxruntime" if onnx else "openvino")
        return Source(**common, reference=reference, onnx=onnx, ir=ir)
    from edgepath.models import load_model
    from edgepath.runtime import open_engine

    encoder, info = load_model(str(ref))
    return Source(
        name=str(info.get("name", ref)),
        spec=encoder.spec,
        precision="fp32",
        precision_label="fp32",
        reference=open_engine(encoder, engine="torch"),
        encoder=encoder,
        parent={"path": str(ref), "sha256": info.get("sha256")},
        random_weights=bool(info.get("random_weights", False)),
    )


def _settle_precision(target: ExportTarget, source: Source, precision: str | None) -> str:
    p = target.check_precision(precision or source.precision)
    if source.encoder is not None and p in ("int8", "fp8"):
        raise ConfigError(
            f"--precision {p} needs a quantized model: run `edgepath quantize MODEL -o q/` (its "
            f"fidelity gate decides whether {p} is safe), then `edgepath export q/ --target "
            f"{target.name}`"
        )
    if source.encoder is None and p != source.precision:
        raise ConfigError(
            f"this artifact is {source.precision_label}; export it at that precision, or export "
            f"its float parent for --precision {p}"
        )
    return p


def _require_tensorrt() -> None:
    import importlib.util

    if importlib.util.find_spec("tensorrt") is None:
        raise MissingDependencyError("tensorrt", "tensorrt", purpose="--target tensorrt")
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(
            "--target tensorrt builds the engine on this machine's GPU and none is visible; use "
            "--target jetson-orin/jetson-thor for a bundle built on the device, or onnx"
        )


def export(
    ref: str | os.PathLike[str],
    *,
    target: str | ExportTarget,
    out: str | os.PathLike[str],
    precision: str | None = None,
    jetpack: str | None = None,
    fuse_preprocess: bool | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Export a model to a target and check parity on real tiles.

    Args:
        ref: Artifact folder (student / quantized), teacher card or student name.
        target: Target card name, alias (``jetson``) or path, or a loaded ``ExportTarget``.
        out: Output folder (the export artifact).
        precision: ``fp32``/``fp16``/``int8``/``fp8``; default: the source's own.
        jetpack: Jetson targets: the device's JetPack release (default: the card's first).
        fuse_preprocess: Graph takes uint8 NHWC tiles (default: the card's setting).
        overwrite: Replace an existing output folder.

    Returns:
        The manifest written.

    Raises:
        ConfigError: Unknown target, refused precision (e.g. FP8 on Orin), bad JetPack.
        MissingDependencyError: TensorRT / OpenVINO not installed for a target that needs it.
        ToleranceError: The exported model does not reproduce the reference embeddings.
    """
    t = target if isinstance(target, ExportTarget) else load_target(str(target))
    out = Path(out)
    if out.exists() and any(out.iterdir()) and not overwrite:
        raise ConfigError(f"{out}: output folder exists and is not empty; pass --overwrite")
    if t.format == "tensorrt":
        _require_tensorrt()
    if t.format == "jetson":
        from edgepath.export.jetson import resolve_jetpack

        resolve_jetpack(t, jetpack)  # fail before any work
    elif jetpack:
        raise ConfigError(f"--jetpack applies to jetson targets, not --target {t.name}")
    source = open_source(ref)
    p = _settle_precision(t, source, precision)
    if t.format == "tensorrt" and p == "fp8":
        import torch

        cc = torch.cuda.get_device_capability()
        if cc < (8, 9):  # FP8 tensor cores: Ada (8.9), Hopper (9.0), Blackwell (10.x, 11.0, 12.x)
            raise ConfigError(
                f"this GPU (compute capability {cc[0]}.{cc[1]}) has no FP8 tensor cores; FP8 "
                "needs Ada, Hopper or Blackwell: use --precision int8 or fp16"
            )
    fuse = t.fuse_preprocess if fuse_preprocess is None else fuse_preprocess
    out.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    try:
        manifest = _export_into(stage, t, source, precision=p, jetpack=jetpack, fuse=fuse)
        _publish_permissions(stage)
        if out.exists():
            shutil.rmtree(out)
        os.replace(stage, out)
    finally:
        if stage.exists():
            shutil.rmtree(stage, ignore_errors=True)
        source.reference.close()
    log.info("export %s -> %s (%s, %s)", source.name, out, t.name, p)
    return manifest


def _publish_permissions(folder: Path) -> None:
    """Temp files are private (0600); a deployable folder is readable (scripts executable)."""
    mask = os.umask(0)
    os.umask(mask)
    folder.chmod(0o777 & ~mask)
    for p in folder.rglob("*"):
        executable = p.is_dir() or p.suffix == ".sh"
        p.chmod((0o777 if executable else 0o666) & ~mask)


def _base_onnx(stage: Path, source: Source, *, precision: str, fuse: bool, t: ExportTarget) -> Path:
    """The precision-carrying ONNX in ``stage``: exported (+ FP16 autocast) or the QDQ copy."""
    from edgepath.export.onnx import convert_fp16, export_onnx

    dst = stage / "model.onnx"
    if source.encoder is None:
        if source.onnx is None:
            raise ConfigError(
                f"this quantized artifact is OpenVINO IR only; --target {t.name} needs ONNX Q/DQ: "
                "quantize with an ONNX preset (e.g. --preset int8-tensorrt), or use --target "
                "openvino"
            )
        shutil.copyfile(source.onnx, dst)
        return dst
    if precision == "fp16":
        tmp = export_onnx(
            source.encoder, stage / "model.fp32.onnx", opset=t.opset, fuse_preprocess=fuse
        )
        convert_fp16(tmp, dst)
        tmp.unlink()
        return dst
    return export_onnx(source.encoder, dst, opset=t.opset, fuse_preprocess=fuse)


def _export_into(
    stage: Path,
    t: ExportTarget,
    source: Source,
    *,
    precision: str,
    jetpack: str | None,
    fuse: bool,
) -> dict[str, Any]:
    from edgepath.artifact import new_manifest, write_manifest
    from edgepath.export.onnx import describe_onnx

    spec = source.spec
    px = spec.input.tile_px
    tiles = parity_tiles(px, n=t.verify_tiles)
    reference = _embed(source.reference.embed_tiles, tiles)
    threshold = min_cosine_for(precision)
    files: dict[str, str] = {}
    parity: dict[str, Any] = {}
    extra: dict[str, Any] = {}
    engine = "onnxruntime"
    graph: dict[str, Any] = {}

    def check(engine_obj: Any, what: str) -> dict[str, Any]:
        with engine_obj:
            candidate = _embed(engine_obj.embed_tiles, tiles, batch=6)  # other batch sizes
        result = compare(reference, candidate, what=what, threshold=threshold).as_dict()
        result["reference"] = f"{source.reference.name} {source.precision_label}"
        return result

    if t.format == "openvino":
        from edgepath.export.openvino import copy_ir, export_openvino
        from edgepath.runtime.openvino_engine import OpenVINOEngine

        xml = stage / "model.xml"
        if source.encoder is None and source.onnx is None and source.ir is not None:
            copy_ir(source.ir, xml)
        else:
            onnx = _base_onnx(
                stage,
                source,
                precision="fp32" if precision == "fp16" else precision,
                fuse=fuse,
                t=t,
            )
            export_openvino(onnx, xml, fp16=precision == "fp16")
            graph = _graph(describe_onnx(onnx))
            onnx.unlink()
        engine = "openvino"
        files = {"openvino": "model.xml", "openvino_bin": "model.bin"}
        ov = OpenVINOEngine(xml, spec=spec, precision=precision)
        graph = graph or {"input_format": ov.input_format}
        parity["openvino"] = check(ov, f"{t.name} openvino (model.xml)")
    else:
        onnx = _base_onnx(stage, source, precision=precision, fuse=fuse, t=t)
        info = describe_onnx(onnx)
        graph = _graph(info)
        from edgepath.runtime.onnxruntime_engine import OnnxRuntimeEngine

        parity["onnxruntime"] = check(
            OnnxRuntimeEngine(onnx, spec=spec, precision=precision),
            f"{t.name} onnxruntime (model.onnx)",
        )
        files = {"onnx": "model.onnx"}
        if t.format == "tensorrt":
            from edgepath.export.tensorrt import build_engine
            from edgepath.runtime.tensorrt_engine import TensorRTEngine

            plan = stage / "model.plan"
            extra["tensorrt"] = build_engine(onnx, plan, precision=precision, batch=t.batch)
            files["plan"] = "model.plan"
            engine = "tensorrt"
            parity["tensorrt"] = check(
                TensorRTEngine(plan, spec=spec, precision=precision, built_with=extra["tensorrt"]),
                f"{t.name} tensorrt (model.plan)",
            )
        elif t.format == "jetson":
            from edgepath.export.jetson import FILES, write_bundle

            extra["bundle"] = write_bundle(
                stage,
                target=t,
                onnx_path=onnx,
                precision=precision,
                jetpack=jetpack,
                tiles=tiles,
                reference=reference,
                spec_input={"tile_px": px, "mean": spec.input.mean, "std": spec.input.std},
                input_name=graph["input"],
                input_format=graph["input_format"],
                embed_dim=spec.embedding.dim,
                min_cosine=threshold,
            )
            files = {k: v for k, v in FILES.items()}
            engine = "tensorrt"
        elif t.format == "triton":
            extra["triton"], more = _triton(
                stage, t, source, onnx, info, precision=precision, check=check
            )
            parity.update(more)
            files = extra["triton"]["files"]
    manifest = new_manifest(
        "export",
        spec,
        name=source.name,
        precision=source.precision_label if precision == source.precision else precision,
        engine=engine,
        files=files,
        parent=source.parent,
        target=t.name,
        target_format=t.format,
        graph=graph,
        parity=parity,
        random_weights=source.random_weights,
        **extra,
    )
    if source.fidelity:
        manifest["fidelity"] = source.fidelity  # measured upstream, against the float model
    write_manifest(stage, manifest)
    return manifest


def _graph(info: dict[str, Any]) -> dict[str, Any]:
    inp = info["inputs"][0]
    return {
        "input": inp["name"],
        "output": info["outputs"][0]["name"],
        "input_format": "nhwc-uint8" if inp["dtype"] == "uint8" else "nchw-float32",
        "opset": info["opset"],
        "qdq": info["qdq"],
    }


def _embed(fn: Any, tiles: np.ndarray, batch: int = 8) -> np.ndarray:
    return np.concatenate(
        [np.asarray(fn(tiles[i : i + batch]), np.float32) for i in range(0, len(tiles), batch)]
    )


def _triton(
    stage: Path,
    t: ExportTarget,
    source: Source,
    onnx: Path,
    info: dict[str, Any],
    *,
    precision: str,
    check: Any,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Model repository: onnxruntime + openvino (+ tensorrt_plan where TensorRT runs here)."""
    import importlib.util

    from edgepath.export.triton import write_repository

    if t.triton is None:
        raise ConfigError(f"--target {t.name} has no [triton] table")
    models: dict[str, Path] = {}
    parity: dict[str, Any] = {}
    scratch = stage / ".build"
    scratch.mkdir()
    backends = list(t.triton.backends)
    if "onnxruntime" in backends:
        models["onnxruntime"] = onnx
    if "openvino" in backends:
        from edgepath.export.openvino import export_openvino
        from edgepath.runtime.openvino_engine import OpenVINOEngine

        src = onnx
        if precision == "fp16" and source.encoder is not None:  # IR keeps FP16 as weights only
            from edgepath.export.onnx import export_onnx

            src = export_onnx(source.encoder, scratch / "fp32.onnx", opset=t.opset)
        xml = export_openvino(src, scratch / "model.xml", fp16=precision == "fp16")
        parity["openvino"] = check(
            OpenVINOEngine(xml, spec=source.spec, precision=precision), "triton openvino model"
        )
        models["openvino"] = xml
    if "tensorrt_plan" in backends and importlib.util.find_spec("tensorrt") is not None:
        from edgepath.export.tensorrt import build_engine

        plan = scratch / "model.plan"
        build_engine(onnx, plan, precision=precision, batch=t.batch)
        models["tensorrt_plan"] = plan
    written = write_repository(
        stage,
        name=source.name,
        models=models,
        inputs=info["inputs"],
        outputs=info["outputs"],
        batch=t.batch,
        triton=t.triton,
    )
    shutil.rmtree(scratch)
    onnx.unlink()
    files: dict[str, str] = {}
    for backend, folder in written.items():
        first = {
            "onnxruntime": "model.onnx",
            "openvino": "model.xml",
            "tensorrt_plan": "model.plan",
        }
        key = {"onnxruntime": "onnx", "openvino": "openvino", "tensorrt_plan": "plan"}[backend]
        files[key] = f"{folder}/1/{first[backend]}"
        files[f"{key}_config"] = f"{folder}/config.pbtxt"
    if "openvino" in written:
        files["openvino_bin"] = f"{written['openvino']}/1/model.bin"
    return {"models": written, "files": files}, parity
