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
from collections.abc import Callable
from dataclasses import dataclass, field
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
    manifest: dict[str, Any] = field(default_factory=dict)  # artifacts: their manifest


def open_source(ref: str | os.PathLike[str]) -> Source:
    """Open what ``ref`` names (``edgepath.models.resolve``): an artifact folder (student,
    quantized, export), a teacher card or ``student[@mpp]``."""
    from edgepath.models import resolve
    from edgepath.models.artifact import require_ok
    from edgepath.runtime import artifact_files, open_engine

    model = resolve(ref)
    manifest = model.manifest
    if model.folder is not None:
        require_ok(model.folder, manifest, action="export")
    label = str(manifest.get("precision", "fp32"))
    common = {
        "name": model.name,
        "spec": model.spec,
        "precision": normalize_precision(label),
        "precision_label": label,
        "parent": {
            "path": str(model.folder.resolve()) if model.folder is not None else str(ref),
            "sha256": model.sha256,
        },
        "fidelity": manifest.get("fidelity"),
        "random_weights": model.random_weights,
        "manifest": manifest,
    }
    if model.has_torch_weights:
        encoder = model.require_encoder()
        return Source(**common, reference=open_engine(encoder, engine="torch"), encoder=encoder)
    assert model.folder is not None  # only artifacts lack torch weights
    files = artifact_files(model.folder, manifest)
    onnx = files.get("onnxruntime")
    ir = files.get("openvino") if files.get("openvino", Path()).suffix == ".xml" else None
    if onnx is None and ir is None:
        raise ArtifactError(
            f"{model.folder}: no ONNX, IR or torch weights to export; re-create the artifact"
        )
    reference = open_engine(model, engine="onnxruntime" if onnx else "openvino")
    return Source(**common, reference=reference, onnx=onnx, ir=ir)


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
    from edgepath.io import umask

    mask = umask()
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


@dataclass
class _Job:
    """One export being staged: what every format's exporter needs."""

    stage: Path
    target: ExportTarget
    source: Source
    precision: str
    jetpack: str | None
    fuse: bool
    tiles: np.ndarray  # the parity tiles
    reference: np.ndarray  # the source's embeddings of them
    threshold: float  # the minimum cosine at this precision

    def check(self, engine: Any, what: str) -> dict[str, Any]:
        """Parity of an exported model (opened as ``engine``, closed here) with the reference."""
        with engine:
            candidate = _embed(engine.embed_tiles, self.tiles, batch=6)  # other batch sizes
        result = compare(self.reference, candidate, what=what, threshold=self.threshold).as_dict()
        result["reference"] = f"{self.source.reference.name} {self.source.precision_label}"
        return result


@dataclass
class _Exported:
    """What an exporter wrote into the stage, for the manifest."""

    engine: str
    files: dict[str, str]
    graph: dict[str, Any]
    parity: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)  # format-specific manifest sections


def _export_into(
    stage: Path,
    t: ExportTarget,
    source: Source,
    *,
    precision: str,
    jetpack: str | None,
    fuse: bool,
) -> dict[str, Any]:
    """Write the target's files into ``stage`` (by the format's exporter), then the manifest."""
    from edgepath.models.artifact import new_manifest, write_manifest

    tiles = parity_tiles(source.spec.input.tile_px, n=t.verify_tiles)
    job = _Job(
        stage,
        t,
        source,
        precision,
        jetpack,
        fuse,
        tiles=tiles,
        reference=_embed(source.reference.embed_tiles, tiles),
        threshold=min_cosine_for(precision),
    )
    out = _EXPORTERS[t.format](job)
    manifest = new_manifest(
        "export",
        source.spec,
        name=source.name,
        precision=source.precision_label if precision == source.precision else precision,
        engine=out.engine,
        files=out.files,
        parent=source.parent,
        target=t.name,
        target_format=t.format,
        graph=out.graph,
        parity=out.parity,
        random_weights=source.random_weights,
        **out.extra,
    )
    if source.fidelity:
        manifest["fidelity"] = source.fidelity  # measured upstream, against the float model
    write_manifest(stage, manifest)
    return manifest


def _to_openvino(job: _Job) -> _Exported:
    """OpenVINO IR: the quantized source's own IR copied, else converted from the ONNX."""
    from edgepath.export.onnx import describe_onnx
    from edgepath.export.openvino import copy_ir, export_openvino
    from edgepath.runtime.openvino_engine import OpenVINOEngine

    source, t, precision = job.source, job.target, job.precision
    xml = job.stage / "model.xml"
    graph: dict[str, Any] = {}
    if source.encoder is None and source.onnx is None and source.ir is not None:
        copy_ir(source.ir, xml)
    else:
        onnx = _base_onnx(
            job.stage,
            source,
            precision="fp32" if precision == "fp16" else precision,
            fuse=job.fuse,
            t=t,
        )
        export_openvino(onnx, xml, fp16=precision == "fp16")
        graph = _graph(describe_onnx(onnx))
        onnx.unlink()
    ov = OpenVINOEngine(xml, spec=source.spec, precision=precision)
    graph = graph or {"input_format": ov.input_format}
    parity = {"openvino": job.check(ov, f"{t.name} openvino (model.xml)")}
    return _Exported(
        "openvino", {"openvino": "model.xml", "openvino_bin": "model.bin"}, graph, parity
    )


def _onnx_checked(job: _Job) -> tuple[Path, dict[str, Any], _Exported]:
    """The precision-carrying ONNX, parity-checked on onnxruntime: the ONNX target, and the
    first step of the TensorRT, Jetson and Triton targets.

    Returns:
        (its path, ``describe_onnx`` of it, the ONNX target's result).
    """
    from edgepath.export.onnx import describe_onnx
    from edgepath.runtime.onnxruntime_engine import OnnxRuntimeEngine

    onnx = _base_onnx(job.stage, job.source, precision=job.precision, fuse=job.fuse, t=job.target)
    info = describe_onnx(onnx)
    engine = OnnxRuntimeEngine(onnx, spec=job.source.spec, precision=job.precision)
    parity = {"onnxruntime": job.check(engine, f"{job.target.name} onnxruntime (model.onnx)")}
    return onnx, info, _Exported("onnxruntime", {"onnx": "model.onnx"}, _graph(info), parity)


def _to_onnx(job: _Job) -> _Exported:
    """The ONNX model alone."""
    return _onnx_checked(job)[2]


def _to_tensorrt(job: _Job) -> _Exported:
    """A TensorRT plan built here from the ONNX, parity-checked on this GPU."""
    from edgepath.export.tensorrt import build_engine
    from edgepath.runtime.tensorrt_engine import TensorRTEngine

    onnx, _, out = _onnx_checked(job)
    plan = job.stage / "model.plan"
    built = build_engine(onnx, plan, precision=job.precision, batch=job.target.batch)
    out.extra["tensorrt"] = built
    out.files["plan"] = "model.plan"
    out.engine = "tensorrt"
    out.parity["tensorrt"] = job.check(
        TensorRTEngine(plan, spec=job.source.spec, precision=job.precision, built_with=built),
        f"{job.target.name} tensorrt (model.plan)",
    )
    return out


def _to_jetson(job: _Job) -> _Exported:
    """A bundle that builds and verifies the TensorRT engine on the Jetson itself."""
    from edgepath.export.jetson import FILES, write_bundle

    onnx, _, out = _onnx_checked(job)
    spec = job.source.spec
    out.extra["bundle"] = write_bundle(
        job.stage,
        target=job.target,
        onnx_path=onnx,
        precision=job.precision,
        jetpack=job.jetpack,
        tiles=job.tiles,
        reference=job.reference,
        spec_input={"tile_px": spec.input.tile_px, "mean": spec.input.mean, "std": spec.input.std},
        input_name=out.graph["input"],
        input_format=out.graph["input_format"],
        embed_dim=spec.embedding.dim,
        min_cosine=job.threshold,
    )
    out.files = dict(FILES)
    out.engine = "tensorrt"
    return out


def _to_triton(job: _Job) -> _Exported:
    """A Triton model repository (see ``_triton``)."""
    onnx, info, out = _onnx_checked(job)
    out.extra["triton"], more = _triton(
        job.stage, job.target, job.source, onnx, info, precision=job.precision, check=job.check
    )
    out.parity.update(more)
    out.files = out.extra["triton"]["files"]
    return out


def _to_timm(job: _Job) -> _Exported:
    """A timm model folder (``config.json`` + ``model.safetensors``), checked by loading it with
    ``timm.create_model("local-dir:…", pretrained=True)`` and embedding the tiles as a timm user
    would (see ``edgepath.export.timm``)."""
    from edgepath.export.timm import CONFIG, README, WEIGHTS, TimmFolder, write_timm

    source = job.source
    if source.encoder is None:
        raise ConfigError(
            f"--target {job.target.name} writes float torch weights and this artifact has none "
            f"({source.precision_label}); export its float parent instead"
        )
    teacher = source.manifest.get("teacher") or {}
    card_license = ""
    if teacher.get("card"):
        from edgepath.models.loading import as_card

        try:
            card_license = as_card(str(teacher["card"])).license
        except ConfigError:  # a teacher card that is not installed here: no license to copy
            card_license = ""
    config = write_timm(
        job.stage,
        source.encoder,
        name=source.name,
        teacher=str(teacher.get("card", "")),
        license=card_license,
    )
    loaded = TimmFolder(job.stage)
    parity = {"timm": job.check(loaded, f"{job.target.name} timm.create_model(local-dir)")}
    graph = {
        "library": "timm",
        "architecture": config["architecture"],
        "global_pool": config["global_pool"],
        "pooling": config["edgepath"]["embedding"]["pooling"],
    }
    files = {"weights": WEIGHTS, "config": CONFIG, "model_card": README}
    return _Exported("torch", files, graph, parity, extra={"timm": config["edgepath"]})


#: Target format -> the function that writes its files into the stage and checks their parity.
_EXPORTERS: dict[str, Callable[[_Job], _Exported]] = {
    "onnx": _to_onnx,
    "openvino": _to_openvino,
    "tensorrt": _to_tensorrt,
    "jetson": _to_jetson,
    "triton": _to_triton,
    "timm": _to_timm,
}


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
