"""``quantize``: model + preset + calibration slides -> a gated ``quantized`` artifact folder.

Steps: load the float encoder; sample calibration and held-out tiles (disjoint); for each backend
of the preset, export the float model (OpenVINO IR from torch, or ONNX via the export stage),
quantize it with NNCF, embed the held-out tiles and gate them against the float torch model,
and time float vs quantized side by side on this CPU; keep the fastest passing backend; run the
robustness suite if the preset asks; write the model files and the manifest (status ``ok`` or
``failed``).
"""

from __future__ import annotations

import logging
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgepath import cards
from edgepath.errors import ConfigError
from edgepath.eval.machine import describe
from edgepath.io import sha256_file
from edgepath.models import artifact
from edgepath.models.preprocess import normalize
from edgepath.quantize import gate as gatelib
from edgepath.quantize import nncf_ptq
from edgepath.quantize.calibration import TileSet, sample_calibration
from edgepath.quantize.presets import ENGINE_OF, QuantizePreset
from edgepath.quantize.speed import measure

if TYPE_CHECKING:
    from edgepath.models.resolver import ModelHandle

log = logging.getLogger(__name__)

Step = Callable[[str], None]


def _embed(fn: Callable[[np.ndarray], np.ndarray], x: np.ndarray, *, batch: int = 16) -> np.ndarray:
    return np.concatenate([np.asarray(fn(x[s : s + batch])) for s in range(0, len(x), batch)])


def _torch_embed(encoder: Any) -> Callable[[np.ndarray], np.ndarray]:
    import torch

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return encoder(torch.from_numpy(x)).float().numpy()

    return run


def _engine(path: Path, spec: Any, precision: str, threads: int | None) -> Any:
    if path.suffix == ".xml":
        from edgepath.runtime.openvino_engine import OpenVINOEngine

        return OpenVINOEngine(path, spec=spec, precision=precision, threads=threads)
    from edgepath.runtime.onnxruntime_engine import OnnxRuntimeEngine

    return OnnxRuntimeEngine(path, spec=spec, precision=precision, threads=threads)


def quantize_backend(
    backend: str,
    encoder: Any,
    work: Path,
    x_calib: np.ndarray,
    preset: QuantizePreset,
    *,
    accuracy_control: tuple[np.ndarray, np.ndarray] | None = None,
) -> tuple[Path, list[Path]]:
    """Float model file and quantized model files of one backend, written under ``work``.

    The one place a backend's quantized model is made: ``edgepath quantize`` and the bench's INT8
    variants both call it, so the bench times what the quantize stage ships.

    Args:
        backend: ``openvino``, ``onnx`` (NNCF QDQ) or ``ort`` (ONNX Runtime fused + dynamic INT8).
        encoder: The float torch encoder.
        work: Folder for the files.
        x_calib: Normalised float32 NCHW calibration tiles (``ort`` checks its fused float graph
            against the exported one on a few of them; its INT8 needs no calibration).
        preset: The preset.
        accuracy_control: NNCF accuracy control inputs (``openvino`` only).

    Returns:
        (the float model the quantized one is timed against, the quantized model files).
    """
    if backend == "openvino":
        model = nncf_ptq.float_openvino(encoder, work / "float.xml")
        q = nncf_ptq.quantize_openvino(model, x_calib, preset, accuracy_control=accuracy_control)
        return work / "float.xml", nncf_ptq.save_openvino(q, work / "model.xml")
    if accuracy_control is not None:
        raise ConfigError(
            "--accuracy-control runs on the openvino backend; use a preset with "
            'backend = "openvino" (or leave --accuracy-control out)'
        )
    from edgepath.export.onnx import export_onnx

    export_onnx(encoder, work / "export.onnx", opset=17, batch_dynamic=True)
    if backend == "ort":
        from edgepath.quantize import ort_native

        # the float twin is the fused float graph, so the speed-up shown is INT8's alone
        ort_native.optimize_vit(work / "export.onnx", work / "float.onnx", x_calib[:8])
        return work / "float.onnx", [
            ort_native.quantize_dynamic_int8(work / "float.onnx", preset, work / "model.onnx")
        ]
    (work / "export.onnx").replace(work / "float.onnx")
    return work / "float.onnx", [
        nncf_ptq.quantize_onnx(work / "float.onnx", x_calib, preset, work / "model.onnx")
    ]


def quantize_model(
    model: str | os.PathLike[str],
    *,
    preset: str | os.PathLike[str] | QuantizePreset,
    calib: Sequence[str | os.PathLike[str]],
    out: str | os.PathLike[str],
    calibration_tiles: int | None = None,
    heldout_tiles: int | None = None,
    accuracy_control: bool = False,
    threads: int | None = None,
    seed: int = 0,
    on_step: Step | None = None,
) -> dict[str, Any]:
    """Quantize a model and write the gated artifact.

    Args:
        model: A student artifact folder, teacher card or ``student[@mpp]`` (``models.resolve``).
        preset: A ``quantize`` card name / path, or a loaded preset.
        calib: Slides, tile images or folders to sample calibration and held-out tiles from.
        out: The artifact folder to write.
        calibration_tiles: Override of the preset's calibration tile count.
        heldout_tiles: Override of the preset's held-out tile count.
        accuracy_control: NNCF accuracy-controlled quantization (OpenVINO backend).
        threads: Inference threads for the gate and the timings (all cores if None).
        seed: Sampling seed.
        on_step: Called with a short description as each step starts (progress display).

    Returns:
        The manifest written; ``manifest["status"]`` is ``failed`` when the gate did not pass
        (the caller must then exit non-zero).
    """
    from edgepath.models import resolve

    step = on_step or (lambda s: log.info("%s", s))
    p = preset if isinstance(preset, QuantizePreset) else cards.load("quantize", preset)
    n_calib = calibration_tiles if calibration_tiles is not None else p.calibration_tiles
    n_held = heldout_tiles if heldout_tiles is not None else p.heldout_tiles
    if n_calib < 1 or n_held <= 10:
        raise ConfigError("need at least 1 calibration tile and more than 10 held-out tiles")
    out = Path(out)

    step("loading the float model")
    source = resolve(model)
    encoder = source.require_encoder()
    step(f"sampling {n_calib} calibration + {n_held} held-out tiles")
    data = _sample(encoder, calib, n_calib, n_held, seed=seed, accuracy_control=accuracy_control)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}-work-") as tmp:
        results = _quantize_all(encoder, p, data, Path(tmp), threads=threads, step=step)
        chosen = _choose(results)
        verdict = _final_gate(encoder, results[chosen], p, data, threads=threads, step=step)
        step(f"writing {out}")
        out.mkdir(parents=True, exist_ok=True)
        names = nncf_ptq.copy_files(results[chosen]["files"], out)
    manifest = _manifest(
        encoder.spec,
        p,
        chosen=chosen,
        results=results,
        verdict=verdict,
        names=names,
        out=out,
        model=str(model),
        source=source,
        cal=data.cal,
        held=data.held,
        accuracy_control=accuracy_control,
    )
    artifact.write_manifest(out, manifest)
    return manifest


@dataclass
class _Data:
    """Calibration and held-out tiles, normalised, and the float model's held-out embeddings."""

    cal: TileSet
    held: TileSet
    x_cal: np.ndarray
    x_held: np.ndarray
    ref: np.ndarray  # float (torch) embeddings of x_held: what the gate compares against
    accuracy_control: tuple[np.ndarray, np.ndarray] | None  # NNCF's (inputs, float embeddings)


def _sample(
    encoder: Any,
    calib: Sequence[str | os.PathLike[str]],
    n_calib: int,
    n_held: int,
    *,
    seed: int,
    accuracy_control: bool,
) -> _Data:
    """Disjoint calibration and held-out tiles at the model's tile size and mpp, embedded."""
    spec = encoder.spec
    cal, held = sample_calibration(
        calib,
        tile_px=spec.input.tile_px,
        mpp=spec.input.mpp,
        n_calib=n_calib,
        n_heldout=n_held,
        seed=seed,
    )
    x_cal, x_held = normalize(cal.tiles, spec), normalize(held.tiles, spec)
    ref = _embed(_torch_embed(encoder), x_held)
    ac = None
    if accuracy_control:
        n_val = min(64, len(x_cal))
        ac = (x_cal[:n_val], _embed(_torch_embed(encoder), x_cal[:n_val]))
    return _Data(cal, held, x_cal, x_held, ref, ac)


def _quantize_all(
    encoder: Any,
    p: QuantizePreset,
    data: _Data,
    tmp: Path,
    *,
    threads: int | None,
    step: Step,
) -> dict[str, dict[str, Any]]:
    """Every backend of the preset quantized (in ``tmp``), gated, then all timed side by side."""
    spec = encoder.spec
    results: dict[str, dict[str, Any]] = {}
    for backend in p.backends():
        work = tmp / backend
        work.mkdir()
        tool = "ONNX Runtime" if backend == "ort" else "NNCF"
        step(f"quantizing with {tool} on {backend} ({p.precision})")
        float_file, q_files = quantize_backend(
            backend, encoder, work, data.x_cal, p, accuracy_control=data.accuracy_control
        )
        step(f"gating {backend}")
        results[backend] = _evaluate(
            float_file, q_files, spec, p, data.x_held, data.ref, threads=threads
        )
    step("timing fp32 vs quantized, every backend side by side")
    _time_all(results, spec, p, data.x_held, threads=threads)
    return results


def _final_gate(
    encoder: Any,
    res: dict[str, Any],
    p: QuantizePreset,
    data: _Data,
    *,
    threads: int | None,
    step: Step,
) -> gatelib.GateResult:
    """The chosen backend's gate verdict, with the robustness suite when the preset asks."""
    robustness = None
    if p.gate.robustness_tiles > 0:
        step("robustness: float vs quantized on the synthetic stain/scanner suite")
        robustness = _robustness(encoder, res["files"][0], encoder.spec, p, threads=threads)
    return gatelib.check(res["embeddings"], data.ref, p.gate, robustness=robustness)


def _evaluate(
    float_file: Path,
    q_files: list[Path],
    spec: Any,
    p: QuantizePreset,
    x_held: np.ndarray,
    ref: np.ndarray,
    *,
    threads: int | None,
) -> dict[str, Any]:
    """Embed the held-out tiles with the quantized model and gate them against float."""
    qe = _engine(q_files[0], spec, p.precision, threads)
    try:
        emb = _embed(qe, x_held)
    finally:
        qe.close()
    verdict = gatelib.check(emb, ref, p.gate)
    log.info(
        "%s: cosine %.5f (p1 %.5f)",
        q_files[0].name,
        verdict.figures["cosine"] or float("nan"),
        verdict.figures["cosine_p1"] or float("nan"),
    )
    return {"float": float_file, "files": q_files, "embeddings": emb, "gate": verdict}


def _time_all(
    results: dict[str, dict[str, Any]],
    spec: Any,
    p: QuantizePreset,
    x_held: np.ndarray,
    *,
    threads: int | None,
) -> None:
    """FP32 and quantized models of every backend timed together, interleaved, on one batch.

    One interleaved measurement (not one per backend) so that load drift on a shared machine
    cannot favour the backend that happened to be timed in a quiet moment.
    """
    batch = x_held[: p.speed_batch]
    if len(batch) < p.speed_batch:
        batch = np.resize(x_held, (p.speed_batch, *x_held.shape[1:]))
    engines: dict[str, Any] = {}
    try:
        for b, r in results.items():
            engines[f"{b}:fp32"] = _engine(r["float"], spec, "fp32", threads)
            engines[f"{b}:q"] = _engine(r["files"][0], spec, p.precision, threads)
        speed = measure(engines, batch)
    finally:
        for e in engines.values():
            e.close()
    for b, r in results.items():
        f32, q = speed[f"{b}:fp32"]["tiles_per_s"], speed[f"{b}:q"]["tiles_per_s"]
        r["speed"] = {
            "engine": ENGINE_OF[b],
            "batch": int(len(batch)),
            "threads": threads,
            "fp32_tiles_per_s": f32,
            "quantized_tiles_per_s": q,
            "speedup": q / f32,
        }
        log.info("%s: %s %.1f tiles/s vs fp32 %.1f (x%.2f)", b, p.precision, q, f32, q / f32)


FORMATS = {
    "openvino": "openvino-ir",
    "onnx": "onnx-qdq",
    "ort": "onnx-ort-fused-dynamic-int8",
}


def _tool(backend: str) -> str:
    if backend == "ort":
        from edgepath.quantize.ort_native import ort_version

        return f"onnxruntime {ort_version()} (quantize_dynamic)"
    return f"nncf {nncf_ptq.nncf_version()}"


def _choose(results: dict[str, dict[str, Any]]) -> str:
    """The fastest quantized model among those that pass the gate (else the fastest of all)."""
    passing = [b for b, r in results.items() if r["gate"].passed]
    pool = passing or list(results)
    return max(pool, key=lambda b: results[b]["speed"]["quantized_tiles_per_s"])


def _robustness(
    encoder: Any, q_file: Path, spec: Any, p: QuantizePreset, *, threads: int | None
) -> tuple[float, float]:
    """Synthetic stain/scanner robustness scores of the float and the quantized model."""
    from edgepath.eval.robustness import synthetic_robustness
    from edgepath.runtime.torch_engine import TorchEngine

    n = p.gate.robustness_tiles
    f_score = synthetic_robustness(TorchEngine(encoder), n_tiles=n, base_px=spec.input.tile_px)
    qe = _engine(q_file, spec, p.precision, threads)
    try:
        q_score = synthetic_robustness(qe, n_tiles=n, base_px=spec.input.tile_px)
    finally:
        qe.close()
    return float(f_score["score"]), float(q_score["score"])


def _manifest(
    spec: Any,
    p: QuantizePreset,
    *,
    chosen: str,
    results: dict[str, dict[str, Any]],
    verdict: gatelib.GateResult,
    names: list[str],
    out: Path,
    model: str,
    source: ModelHandle,
    cal: TileSet,
    held: TileSet,
    accuracy_control: bool,
) -> dict[str, Any]:
    files = {"model": names[0]}
    if len(names) > 1:
        files["weights"] = names[1]
    figs = verdict.figures
    fp8_note = (
        "FP8 is emulated on this CPU (OpenVINO FakeConvert): the figures check the fidelity of "
        "an FP8 deployment; run it on FP8 hardware for speed"
        if p.fp8
        else None
    )
    return artifact.new_manifest(
        "quantized",
        spec,
        name=f"{source.name}-{p.name}",
        precision=p.precision,
        engine=ENGINE_OF[chosen],
        files=files,
        sha256=sha256_file(out / names[0]),
        status="ok" if verdict.passed else "failed",
        stand_in=source.stand_in,
        random_weights=source.random_weights,
        parent={"path": model, "sha256": source.sha256, "source": source.source},
        preset=cards.to_dict(p),
        scheme={
            "scheme": p.scheme,
            "model_type": p.model_type,
            "smooth_quant_alpha": None if chosen == "ort" else p.smooth_quant_alpha,
            "activations": "dynamic per batch" if chosen == "ort" else "static (calibrated)",
            "format": FORMATS[chosen],
            "emulated": bool(p.fp8),
            "note": fp8_note,
        },
        backend={
            "name": chosen,
            "tool": _tool(chosen),
            "accuracy_control": accuracy_control,
            "selection": "measured" if len(results) > 1 else "preset",
        },
        calibration={
            "sha256": cal.sha256,
            "n_tiles": len(cal),
            "heldout_sha256": held.sha256,
            "heldout_n_tiles": len(held),
            "sources": sorted({o.rsplit("@", 1)[0] for o in cal.origins + held.origins}),
        },
        fidelity={
            "cosine": figs.get("cosine"),
            "cosine_p1": figs.get("cosine_p1"),
            "centered_cosine": figs.get("centered_cosine"),
            "knn10_agreement": figs.get("knn10_agreement"),
            "n_tiles": figs.get("n_tiles"),
            "against": "float (torch) parent on held-out tiles",
        },
        gate=verdict.to_dict(),
        speed={"machine": describe(), "backends": {b: r["speed"] for b, r in results.items()}},
        candidates={
            b: {"gate": r["gate"].to_dict(), "speed": r["speed"]} for b, r in results.items()
        },
    )
