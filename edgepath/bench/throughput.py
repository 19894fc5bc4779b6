"""Throughput: tiles/s, batch latency, memory and fraction of the GEMM ceiling, per engine/precision.

Every variant (one model on one engine at one precision) is opened first, then timed in rounds:
each round runs every variant's batches back to back, so that a change in machine load (other
processes) hits all variants alike and the ratios between them stay fair. Medians over all
timed batches are reported, with p95.

A model is an artifact folder, a teacher card (random weights: throughput needs only the
architecture; labelled as such), or a student name with random weights, optionally at a given
mpp (``vit-s14@2.0``). Float variants for onnxruntime/openvino are exported with
``edgepath.export.onnx.export_onnx``; INT8 variants come from ``edgepath.quantize``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgepath.bench.flops import VitCost, vit_cost
from edgepath.errors import ConfigError, EdgepathError
from edgepath.eval import machine

if TYPE_CHECKING:
    from edgepath.models.resolver import ModelHandle

log = logging.getLogger(__name__)


def resolve_for_speed(ref: str) -> ModelHandle:
    """``edgepath.models.resolve`` for a speed run: teachers get seeded random weights.

    Throughput needs only the architecture, so a teacher's weights are not required here (the
    result says ``random_weights``); students without weights are random anyway, and artifacts
    are what they are.
    """
    from edgepath.models import resolve

    return resolve(ref, random_weights=True)


@dataclass
class Variant:
    """One model on one engine at one precision, opened and ready."""

    model: ModelHandle
    engine_name: str
    precision: str
    engine: Any
    model_rss_mb: float | None = None
    open_s: float = 0.0
    backend: str | None = None

    @property
    def label(self) -> str:
        """``model · engine precision``."""
        return f"{self.model.name} · {self.engine_name} {self.precision}"


def _export_float(model: ModelHandle, folder: Path) -> Path:
    """An fp32 ONNX export artifact of a torch model (for onnxruntime / openvino)."""
    from edgepath.export.onnx import export_onnx
    from edgepath.models.artifact import new_manifest, write_manifest

    if model.encoder is None:
        raise ConfigError(f"{model.ref}: no torch weights to export an fp32 ONNX model from")
    folder.mkdir(parents=True, exist_ok=True)
    export_onnx(model.encoder, folder / "model.onnx")
    manifest = new_manifest(
        "export",
        model.spec,
        name=model.name,
        precision="fp32",
        engine="onnxruntime",
        files={"onnx": "model.onnx"},
        random_weights=model.random_weights,
    )
    write_manifest(folder, manifest)
    return folder


def _quantize_int8(
    model: ModelHandle, folder: Path, *, engine: str, preset: str = "int8-cpu", n_calib: int = 32
) -> Path:
    """An INT8 artifact for ``engine``, made by the quantize stage's own backend function.

    ``edgepath.quantize.pipeline.quantize_backend`` with the ``int8-cpu`` preset and the first of
    its candidate backends that runs on ``engine`` (``ort`` for onnxruntime: fused graph +
    dynamic INT8; ``openvino``: NNCF IR), calibrated on ``n_calib`` real tissue tiles (the
    shipped sample images): the same model files ``edgepath quantize`` writes for that backend,
    without its gate and timing, which a throughput run does not need (benchmark a gated
    artifact folder for the real thing).
    """
    from edgepath import cards
    from edgepath.eval.domains import base_tiles
    from edgepath.eval.embedding import resize_tiles
    from edgepath.models.artifact import new_manifest, write_manifest
    from edgepath.runtime import normalize

    if model.encoder is None:
        raise ConfigError(f"{model.ref}: no torch weights to quantize")
    from edgepath.quantize.pipeline import quantize_backend
    from edgepath.quantize.presets import ENGINE_OF

    p = cards.load("quantize", preset)
    backend = next((b for b in p.backends() if ENGINE_OF[b] == engine), None)
    if backend is None:
        raise ConfigError(f"preset {preset} has no INT8 backend for engine '{engine}'")
    folder.mkdir(parents=True, exist_ok=True)
    calib = normalize(resize_tiles(base_tiles(224, n=n_calib, seed=0), model.tile_px), model.spec)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer chatter from the exporters
        _, q_files = quantize_backend(backend, model.encoder, folder, calib, p)
    if engine == "openvino":
        files = {"xml": q_files[0].name, "bin": q_files[1].name}
    else:
        files = {"onnx": q_files[0].name}
    manifest = new_manifest(
        "quantized",
        model.spec,
        name=model.name,
        precision="int8",
        engine=engine,
        files=files,
        preset=preset,
        backend={"name": backend},
        random_weights=model.random_weights,
    )
    write_manifest(folder, manifest)
    return folder


def _reuse(folder: Path) -> Path | None:
    """A variant prepared by an earlier run with the same ``workdir`` (its manifest written last)."""
    if (folder / "edgepath.json").is_file():
        log.info("reusing the variant prepared in %s", folder)
        return folder
    return None


def _target(
    model: ModelHandle, engine: str, precision: str, workdir: Path, prepared: dict[str, Path]
) -> Any:
    """What ``open_engine`` opens for this variant: the artifact, the encoder or a prepared folder.

    Exported and quantized folders are made once per model (``prepared``) and reused from an
    earlier run's ``workdir`` when there.
    """
    runs_as_is = engine == "torch" or model.manifest.get("engine") != "torch"
    if model.folder is not None and model.manifest.get("precision") == precision and runs_as_is:
        return model
    if engine == "torch":
        if model.encoder is None:
            raise ConfigError("no torch weights in this artifact")
        return model.encoder
    if precision == "fp32":
        if "fp32" not in prepared:
            prepared["fp32"] = _reuse(workdir / "fp32") or _export_float(model, workdir / "fp32")
        return prepared["fp32"]
    if precision == "int8":
        k = f"int8-{engine}"
        if k not in prepared:
            prepared[k] = _reuse(workdir / k) or _quantize_int8(model, workdir / k, engine=engine)
        return prepared[k]
    raise ConfigError(f"no {precision} variant can be prepared on {engine}")


def _open_variant(
    model: ModelHandle,
    target: Any,
    *,
    engine: str,
    precision: str,
    threads: int,
    device: str,
    compile: bool,
) -> Variant:
    """Open one variant, recording its open time, memory and (quantized) backend."""
    from edgepath.runtime import open_engine

    rss0 = machine.rss_mb()
    t0 = time.perf_counter()
    torch_opts = {"precision": precision, "compile": compile} if engine == "torch" else {}
    eng = open_engine(
        target,
        engine=engine,
        threads=threads,
        device=device if engine == "torch" else None,
        **torch_opts,
    )
    v = Variant(model, engine, precision, eng, open_s=time.perf_counter() - t0)
    if isinstance(target, Path) and precision != "fp32":
        from edgepath.models.artifact import read_manifest

        b = read_manifest(target).get("backend")
        v.backend = b.get("name") if isinstance(b, dict) else b
    rss1 = machine.rss_mb()
    if rss0 is not None and rss1 is not None:
        v.model_rss_mb = rss1 - rss0
    return v


def open_variants(
    model: ModelHandle,
    *,
    engines: Sequence[str],
    precisions: Sequence[str],
    threads: int,
    workdir: Path,
    device: str = "cpu",
    compile: bool = False,
) -> tuple[list[Variant], list[str]]:
    """Open every (engine, precision) this model can run; returns variants and skip notes.

    ``device`` and ``compile`` are the torch engine's (fp16 / bf16 autocast runs on CUDA only);
    the other engines open on their default device (each row records its device). The caller
    closes the variants' engines; on an unexpected error the ones opened so far are closed here.
    """
    variants: list[Variant] = []
    skipped: list[str] = []
    prepared: dict[str, Path] = {}
    try:
        for precision in precisions:
            for engine in engines:
                try:
                    target = _target(model, engine, precision, workdir, prepared)
                    variants.append(
                        _open_variant(
                            model,
                            target,
                            engine=engine,
                            precision=precision,
                            threads=threads,
                            device=device,
                            compile=compile,
                        )
                    )
                except EdgepathError as exc:
                    # a note in the result (printed by bench, kept in the JSON and the report)
                    log.info("%s %s-%s: skipped (%s)", model.name, engine, precision, exc)
                    skipped.append(f"{model.name} {engine}-{precision}: {exc}")
    except BaseException:
        close_variants(variants)
        raise
    return variants, skipped


def close_variants(variants: Sequence[Variant]) -> None:
    """Close every variant's engine (each one, even when an earlier close fails)."""
    with contextlib.ExitStack() as stack:
        for v in variants:
            stack.callback(v.engine.close)


def _batch(model: ModelHandle, batch: int, seed: int = 0) -> np.ndarray:
    """Normalised float32 NCHW input from random uint8 tiles (the engines' __call__ input)."""
    from edgepath.runtime import normalize

    return normalize(_tiles(model, batch, seed), model.spec)


def _tiles(model: ModelHandle, batch: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (batch, model.tile_px, model.tile_px, 3), dtype=np.uint8)


def _runner(v: Variant, batch: int, inputs: dict[tuple[str, bool], Any]) -> Callable[[], Any]:
    """One timed batch of ``v`` as ``edgepath embed`` hands it over: uint8 tiles to an engine
    that takes them (fused preprocessing, torch on CUDA), normalised float32 NCHW otherwise.
    (Float32 to a uint8 engine would time a conversion back to uint8 on the CPU.) ``inputs``
    keeps one batch per model and kind for all variants."""
    u8 = getattr(v.engine, "input_format", "nchw-float32") == "nhwc-uint8"
    key = (v.model.name, u8)
    if key not in inputs:
        inputs[key] = _tiles(v.model, batch) if u8 else _batch(v.model, batch)
    x = inputs[key]
    return (lambda: v.engine.embed_tiles(x)) if u8 else (lambda: v.engine(x))


def time_variants(
    variants: Sequence[Variant],
    *,
    batch: int,
    warmup: int = 1,
    rounds: int = 3,
    per_round: int = 2,
    ceilings: dict[str, Any] | None = None,
    on_step: Callable[[str], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """Interleaved timing: ``rounds`` × (every variant: ``per_round`` timed batches).

    ``ceilings`` maps a variant label to a ``gemm.Ceiling`` sampled right after that variant's
    batches in every round (same machine load for the model and its ceiling).

    Returns:
        label -> ``samples`` (seconds per batch), ``peak_rss_mb``, ``peak_gpu_mb`` (torch on
        CUDA: the most device memory torch allocated during the variant's batches).
    """
    inputs: dict[tuple[str, bool], Any] = {}
    runs = {v.label: _runner(v, batch, inputs) for v in variants}
    out: dict[str, dict[str, Any]] = {
        v.label: {"samples": [], "peak_rss_mb": None, "peak_gpu_mb": None} for v in variants
    }
    for v in variants:  # warm-up (graph compilation, allocator, caches)
        for _ in range(warmup):
            runs[v.label]()
        if v.model_rss_mb is not None:
            v.model_rss_mb = max(v.model_rss_mb, 0.0)
    for r in range(rounds):
        for v in variants:
            if on_step:
                on_step(f"round {r + 1}/{rounds}: {v.label}")
            run = runs[v.label]
            machine.peak_rss_reset()
            gpu = _cuda_peak_reset(v)
            for _ in range(per_round):
                t0 = time.perf_counter()
                run()
                out[v.label]["samples"].append(time.perf_counter() - t0)
            peak = machine.rss_mb(peak=True)
            if gpu is not None:
                mb = gpu.max_memory_allocated(v.engine.device) / 2**20
                out[v.label]["peak_gpu_mb"] = max(out[v.label]["peak_gpu_mb"] or 0.0, mb)
            if ceilings and v.label in ceilings:
                ceilings[v.label].sample()
            prev = out[v.label]["peak_rss_mb"]
            out[v.label]["peak_rss_mb"] = peak if prev is None else max(prev, peak or 0)
    return out


def timing_of(settings: dict[str, Any]) -> dict[str, int]:
    """``time_variants``'s rounds (``warmup``, ``rounds``, ``per_round``) from a result's settings."""
    return {k: settings[k] for k in ("warmup", "rounds", "per_round")}


def _cuda_peak_reset(v: Variant) -> Any:
    """``torch.cuda`` with its peak-memory counter reset when ``v`` runs on CUDA, else None."""
    if not str(v.engine.device).startswith("cuda"):
        return None
    import torch

    torch.cuda.reset_peak_memory_stats(v.engine.device)
    return torch.cuda


def tiles_for_area(tissue_mm2: float, *, tile_px: int, mpp: float) -> int:
    """Tiles covering ``tissue_mm2`` of tissue at ``mpp`` (tile side = tile_px × mpp µm)."""
    side_mm = tile_px * mpp / 1000.0
    return max(1, int(np.ceil(tissue_mm2 / (side_mm * side_mm))))


def slide_tiles(slide: Path, *, tile_px: int, mpp: float) -> int:
    """Tissue tiles of ``slide`` at the model's mpp and tile size (``tile_slide``'s defaults)."""
    from edgepath.slides import open_slide, tile_slide

    with open_slide(slide) as s:
        return len(tile_slide(s, mpp=mpp, tile_px=tile_px).coords)


def summarize_row(
    v: Variant,
    timing: dict[str, Any],
    *,
    batch: int,
    threads: int,
    cost: VitCost,
    ceiling: dict[str, Any] | None,
    tiles_per_slide: int,
    basis: str,
    float_ceiling: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """One result row (the JSON every report reads).

    ``ceiling_fraction`` compares all FLOPs with the GEMM ceiling at the row's precision;
    ``roofline_fraction`` adds up each op class at its own ceiling (``roofline``)."""
    s = sorted(timing["samples"])
    p50 = statistics.median(s)
    p95 = float(np.percentile(s, 95))
    tps = batch / p50
    achieved = cost.flops * tps / 1e9
    row = {
        "model": v.model.name,
        "source": v.model.source,
        "random_weights": v.model.random_weights,
        "engine": v.engine_name,
        "device": str(v.engine.device),
        "precision": v.precision,
        "quantized_by": v.backend,
        "batch": batch,
        "threads": threads,
        "tile_px": v.model.tile_px,
        "mpp": v.model.mpp,
        "tiles_per_s": tps,
        "latency_ms_p50": p50 * 1e3,
        "latency_ms_p95": p95 * 1e3,
        "n_batches": len(s),
        "model_rss_mb": v.model_rss_mb,
        "peak_rss_mb": timing["peak_rss_mb"],
        "peak_gpu_mb": timing.get("peak_gpu_mb"),
        "gflops_per_tile": cost.gflops,
        "achieved_gflops": achieved,
        "ceiling_gflops": ceiling["gflops"] if ceiling else None,
        "ceiling_kernel": ceiling["kernel"] if ceiling else None,
        "ceiling_fraction": achieved / ceiling["gflops"] if ceiling else None,
        "tiles_per_slide": tiles_per_slide,
        "tiles_per_slide_basis": basis,
        "wsi_per_min": 60.0 * tps / tiles_per_slide,
        "wsi_method": "computed: tiles_per_slide / tiles_per_s (model only)",
        **roofline(cost, tps, v.precision, ceiling, float_ceiling),
    }
    return row


def roofline(
    cost: VitCost,
    tiles_per_s: float,
    precision: str,
    ceiling: dict[str, Any] | None,
    float_ceiling: dict[str, Any] | None,
) -> dict[str, Any]:
    """Per-op roofline: each op class at its own ceiling.

    For INT8 the blocks' Linear layers run at the INT8 GEMM ceiling and attention and the patch
    embedding (float in the export) at the FP32 one: the fastest a tile can go is
    ``linear / int8 + other / fp32`` seconds. For float rows the one ceiling covers all FLOPs
    and the fraction equals ``ceiling_fraction``. None where a ceiling was not measured.
    """
    out: dict[str, Any] = {
        "gflops_linear": cost.linear_flops / 1e9,
        "gflops_other": cost.other_flops / 1e9,
        "roofline_tiles_per_s": None,
        "roofline_fraction": None,
    }
    if ceiling is None:
        return out
    other = float_ceiling if precision == "int8" else ceiling
    if other is None:
        return out
    seconds = cost.linear_flops / 1e9 / ceiling["gflops"] + cost.other_flops / 1e9 / other["gflops"]
    out["roofline_tiles_per_s"] = 1.0 / seconds
    out["roofline_fraction"] = tiles_per_s * seconds
    out["roofline_ceilings"] = {"linear": ceiling["gflops"], "other": other["gflops"]}
    return out


def _settings(refs: Sequence[str], *, slide: Path | None, **kw: Any) -> dict[str, Any]:
    """The run's settings as the result records them (``--end-to-end`` needs ``--slide``)."""
    if kw["end_to_end"] and slide is None:
        raise ConfigError("--end-to-end needs --slide (the slide to embed)")
    listed = {k: list(kw[k]) for k in ("engines", "precisions", "batches")}
    return {"models": list(refs), **kw, **listed, "slide": str(slide) if slide else None}


def run_throughput(
    refs: Sequence[str],
    *,
    engines: Sequence[str] = ("torch", "onnxruntime", "openvino"),
    precisions: Sequence[str] = ("fp32", "int8"),
    batches: Sequence[int] = (16,),
    threads: int = 2,
    warmup: int = 1,
    rounds: int = 3,
    per_round: int = 2,
    slide: Path | None = None,
    tiles_per_slide: int | None = None,
    tissue_mm2: float = 150.0,
    ceiling: bool = True,
    workdir: Path | None = None,
    device: str = "cpu",
    compile: bool = False,
    end_to_end: bool = False,
    workers: int = 1,
    on_step: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Benchmark models × engines × precisions × batch sizes, side by side in one run.

    Args:
        refs: Models (artifact folders, teacher cards, ``student[@mpp]`` names).
        engines: Engines to try (variants an engine cannot run are skipped with a note).
        precisions: ``fp32``, ``int8``; ``fp16`` / ``bf16`` for the torch engine on CUDA.
        batches: Batch sizes.
        threads: Intra-op threads for every engine.
        warmup: Untimed batches per variant.
        rounds: Interleaved rounds.
        per_round: Timed batches per variant per round.
        slide: A slide whose tissue tiles at each model's mpp give WSI/min.
        tiles_per_slide: Else this tile count at each model's own mpp.
        tissue_mm2: Else this tissue area (default 150 mm²: about 12,000 tiles of 224 px at
            0.5 mpp, a typical resection slide).
        ceiling: Measure the GEMM ceiling per engine/precision at each model's shapes.
        workdir: Where exported/quantized variants go (a temporary folder by default); variants
            already prepared there by an earlier run are reused, so a timing run can skip the
            export and quantization work.
        device: The torch engine's device: ``cpu``, ``cuda`` (``cuda:N``) or ``auto``; on CUDA
            the GEMM ceiling is cuBLAS's at the variant's precision on that device.
        compile: ``torch.compile`` the torch engine's encoder (the warm-up batches compile it).
        end_to_end: Embed ``slide`` with each variant (first batch size, ``workers`` readers):
            rows get ``end_to_end_tiles_per_s`` and ``end_to_end_ratio`` (to the engine's).
        on_step: Progress callback.

    Returns:
        ``{"kind": "throughput", "machine", "settings", "rows", "ceilings", "skipped", "when"}``;
        ``when`` holds the UTC start and end of the run and the load average at its start
        (``machine.load_avg`` is taken at the end), so a result says when and under what load
        it was measured.
    """
    device = _settle_device(device, engines=engines, precisions=precisions)
    when: dict[str, Any] = {"started_utc": _utc_now(), "load_avg_start": machine.load_avg()}
    kw = {"engines": engines, "precisions": precisions, "batches": batches, "device": device}
    kw |= {"threads": threads, "compile": compile, "warmup": warmup, "rounds": rounds}
    kw |= {"per_round": per_round, "end_to_end": end_to_end, "workers": workers}
    settings = _settings(refs, slide=slide, **kw)
    count = functools.partial(
        _tiles_per_slide, slide=slide, tiles_per_slide=tiles_per_slide, tissue_mm2=tissue_mm2
    )
    with contextlib.ExitStack() as stack:  # on exit: close every engine, then the temp folder
        if workdir is None:
            workdir = Path(
                stack.enter_context(tempfile.TemporaryDirectory(prefix="edgepath-bench-"))
            )
        measured = _measure(
            refs, settings, stack, workdir=workdir, ceiling=ceiling, count=count, on_step=on_step
        )
    return {
        "kind": "throughput",
        "machine": machine.describe(threads=threads),
        "settings": settings,
        **measured,
        "when": {**when, "finished_utc": _utc_now()},
    }


def _measure(
    refs: Sequence[str],
    settings: dict[str, Any],
    stack: contextlib.ExitStack,
    *,
    workdir: Path,
    ceiling: bool,
    count: Callable[[ModelHandle], tuple[int, str]],
    on_step: Callable[[str], None] | None,
) -> dict[str, Any]:
    """Open every variant (closed by ``stack``) and time them at each batch size of ``settings``.

    Returns:
        The result's ``costs``, ``rows`` (with speed-ups), ``ceilings`` and ``skipped``.
    """
    models = [resolve_for_speed(r) for r in refs]
    variants, skipped = _open_all(
        models,
        stack,
        workdir=workdir,
        on_step=on_step,
        engines=settings["engines"],
        precisions=settings["precisions"],
        threads=settings["threads"],
        device=settings["device"],
        compile=settings["compile"],
    )
    costs = {m.name: vit_cost(m.spec) for m in models}
    counts = {m.name: count(m) for m in models}
    rows: list[dict[str, Any]] = []
    ceilings: list[dict[str, Any]] = []
    for b in settings["batches"]:
        r, c = _measure_batch(
            variants, b, settings, costs=costs, counts=counts, ceiling=ceiling, on_step=on_step
        )
        rows += r
        ceilings += c
    _add_ratios(rows)
    if settings.get("end_to_end"):
        _end_to_end_rows(variants, rows, settings, workdir=workdir, on_step=on_step)
    return {
        "costs": {k: _cost_dict(c) for k, c in costs.items()},
        "rows": rows,
        "ceilings": ceilings,
        "skipped": skipped,
    }


def _end_to_end_rows(
    variants: Sequence[Variant],
    rows: list[dict[str, Any]],
    settings: dict[str, Any],
    *,
    workdir: Path,
    on_step: Callable[[str], None] | None,
) -> None:
    """Embed the slide with each variant at the first batch size; add the figures to its row."""
    from edgepath.bench.compare import end_to_end

    batch, slide = settings["batches"][0], Path(settings["slide"])
    for i, v in enumerate(variants):
        row = next(
            r
            for r in rows
            if r["batch"] == batch
            and r["engine"] == v.engine_name
            and r["precision"] == v.precision
            and r["model"] == v.model.name
        )
        if on_step:
            on_step(f"end to end: {v.label} on {slide.name}")
        e2e = end_to_end(
            v, slide, batch=batch, workers=settings["workers"], out_dir=workdir / f"e2e-{i}"
        )
        row["end_to_end"] = e2e
        row["end_to_end_tiles_per_s"] = e2e["tiles_per_s"]
        row["end_to_end_ratio"] = e2e["tiles_per_s"] / row["tiles_per_s"]


def _measure_batch(
    variants: Sequence[Variant],
    batch: int,
    settings: dict[str, Any],
    *,
    costs: dict[str, VitCost],
    counts: dict[str, tuple[int, str]],
    ceiling: bool,
    on_step: Callable[[str], None] | None,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Time every variant at one batch size (with its GEMM ceiling): result rows and ceilings."""
    threads = settings["threads"]
    ceil = (
        _ceilings(variants, batch, costs=costs, threads=threads, on_step=on_step) if ceiling else {}
    )
    timed = time_variants(
        variants,
        batch=batch,
        ceilings=_by_label(variants, ceil),
        on_step=on_step,
        **timing_of(settings),
    )
    results = _ceiling_results(ceil, batch=batch)
    rows = [
        summarize_row(
            v,
            timed[v.label],
            batch=batch,
            threads=threads,
            cost=costs[v.model.name],
            ceiling=results.get(_ceiling_key(v)),
            tiles_per_slide=counts[v.model.name][0],
            basis=counts[v.model.name][1],
            float_ceiling=results.get((*_ceiling_key(v)[:2], "fp32")),
        )
        for v in variants
    ]
    return rows, list(results.values())


def _settle_device(device: str, *, engines: Sequence[str], precisions: Sequence[str]) -> str:
    """The torch engine's device (``auto`` resolved); half precision off CUDA fails here, early."""
    from edgepath.runtime.torch_engine import TorchEngine, resolve_device

    device = resolve_device(device)
    half = [p for p in precisions if p in ("fp16", "bf16")]
    if half and list(engines) == ["torch"] and not device.startswith("cuda"):
        TorchEngine.check_precision(half[0], device)
    return device


def _open_all(
    models: Sequence[ModelHandle],
    stack: contextlib.ExitStack,
    *,
    workdir: Path,
    on_step: Callable[[str], None] | None,
    **open_kw: Any,
) -> tuple[list[Variant], list[str]]:
    """Every model's variants, each engine's ``close`` pushed on ``stack``; fails if none opens."""
    variants: list[Variant] = []
    skipped: list[str] = []
    for i, m in enumerate(models):
        if on_step:
            on_step(f"preparing {m.name}")
        folder = workdir / f"{i}-{m.name.replace('@', '_').replace('/', '_')}"
        vs, sk = open_variants(m, workdir=folder, **open_kw)
        stack.callback(close_variants, vs)
        variants += vs
        skipped += sk
    if not variants:
        raise EdgepathError("no variant could be opened: " + "; ".join(skipped))
    return variants, skipped


def _tiles_per_slide(
    m: ModelHandle, slide: Path | None, *, tiles_per_slide: int | None, tissue_mm2: float
) -> tuple[int, str]:
    """Tiles per slide at the model's mpp, and how the count was obtained."""
    if slide is not None:
        n = slide_tiles(Path(slide), tile_px=m.tile_px, mpp=m.mpp)
        return n, f"tissue tiles of {Path(slide).name} at {m.mpp} mpp"
    if tiles_per_slide is not None:
        return int(tiles_per_slide), f"stated: {tiles_per_slide} tiles at {m.mpp} mpp"
    n = tiles_for_area(tissue_mm2, tile_px=m.tile_px, mpp=m.mpp)
    return n, f"{tissue_mm2:g} mm² of tissue at {m.mpp} mpp"


def _ceiling_key(v: Variant) -> tuple[str, str, str]:
    """Variants of one model on one engine at one precision share a GEMM ceiling."""
    return (v.model.name, v.engine_name, v.precision)


def _ceilings(
    variants: Sequence[Variant],
    batch: int,
    *,
    costs: dict[str, VitCost],
    threads: int,
    on_step: Callable[[str], None] | None,
) -> dict[tuple[str, str, str], Any]:
    """A ``gemm.Ceiling`` at the model's shapes per (model, engine, precision) GEMM can run."""
    from edgepath.bench.gemm import Ceiling, model_shapes
    from edgepath.bench.gemm import precisions as gemm_precisions

    out: dict[tuple[str, str, str], Any] = {}
    for v in variants:
        key = _ceiling_key(v)
        # INT8 rows also need the FP32 ceiling: attention stays float (per-op roofline)
        wanted = [key, (*key[:2], "fp32")] if v.precision == "int8" else [key]
        for k in wanted:
            if k in out or k[2] not in gemm_precisions(v.engine_name, v.engine.device):
                continue
            if on_step:
                on_step(f"preparing GEMM ceiling {v.engine_name} {k[2]}")
            out[k] = Ceiling(
                v.engine_name,
                k[2],
                model_shapes(costs[v.model.name], batch),
                threads=threads,
                device=v.engine.device,
            )
    return out


def _by_label(variants: Sequence[Variant], ceilings: dict[tuple[str, str, str], Any]) -> dict:
    """Variant label -> its ceilings (sampled by ``time_variants`` right after its batches): the
    one at its precision and, for INT8, the FP32 one."""
    out = {}
    for v in variants:
        key = _ceiling_key(v)
        keys = [key, (*key[:2], "fp32")] if v.precision == "int8" else [key]
        mine = [ceilings[k] for k in keys if k in ceilings]
        if mine:
            out[v.label] = _Sampled(mine)
    return out


class _Sampled(list):
    """Ceilings sampled together after one variant's batches."""

    def sample(self) -> None:
        for c in self:
            c.sample()


def _ceiling_results(
    ceilings: dict[tuple[str, str, str], Any], *, batch: int
) -> dict[tuple[str, str, str], dict[str, Any]]:
    """Each sampled ceiling's result, labelled with its model and batch."""
    return {key: {**c.result(), "model": key[0], "batch": batch} for key, c in ceilings.items()}


def _cost_dict(c: VitCost) -> dict[str, Any]:
    return {"gflops_per_tile": c.gflops, "tokens": c.tokens, "width": c.width, "depth": c.depth}


def _utc_now() -> str:
    """The current UTC time, ISO 8601 to the second (``2026-12-02T03:18:00+00:00``)."""
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _add_ratios(rows: list[dict[str, Any]]) -> None:
    """Each row's speed-up over the same model's torch fp32 row at the same batch."""
    base = {
        (r["model"], r["batch"]): r["tiles_per_s"]
        for r in rows
        if r["engine"] == "torch" and r["precision"] == "fp32"
    }
    for r in rows:
        b = base.get((r["model"], r["batch"]))
        r["speedup_vs_torch_fp32"] = r["tiles_per_s"] / b if b else None
