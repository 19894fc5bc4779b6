"""``--compare``: slides per minute of a teacher at its mpp vs a student at its mpp, same slide.

The question users ask: how many more slides per minute does the small model give? Both models
are timed side by side in one run (interleaved rounds), each at its own magnification on the
same slide: the teacher's tile count at its mpp (e.g. UNI, 224 px at 0.5 mpp) against the
student's at its mpp (e.g. an XMAG ViT-S/14 at 2.0 mpp: 16× fewer tiles for the same tissue).

WSI/min is given two ways and labelled:

- ``computed``: tissue tiles of the slide at the model's mpp / measured model tiles/s, for both;
- ``end-to-end``: the student's fastest variant run through the embed pipeline on the slide
  (tiling, reading, resizing, preprocessing, inference, writing the feature file), measured.
  The teacher's end-to-end run is measured too when its computed time fits ``e2e_budget_s``.
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from edgepath.bench.flops import vit_cost
from edgepath.bench.throughput import (
    Variant,
    close_variants,
    open_variants,
    resolve_for_speed,
    slide_tiles,
    summarize_row,
    time_variants,
    timing_of,
)
from edgepath.errors import EdgepathError
from edgepath.eval import machine

if TYPE_CHECKING:
    from edgepath.models.resolver import ModelHandle

log = logging.getLogger(__name__)


def end_to_end(variant: Variant, slide: Path, *, batch: int, workers: int, out_dir: Path) -> dict:
    """Embed ``slide`` with an open variant through ``edgepath.embed`` and time it."""
    from edgepath.embed.run import Embedder, ModelInfo

    info = ModelInfo(
        id=f"{variant.model.name} (bench)",
        sha256=f"bench-{time.time_ns()}",
        engine=variant.engine_name,
        precision=variant.precision,
    )
    with Embedder(variant.engine, info, out_dir, batch=batch, workers=workers, force=True) as emb:
        # the Embedder closes the engine on exit: keep it open for the caller
        emb.engine = _Borrowed(variant.engine)
        result = emb.process(slide)
    if result.status != "done":
        raise EdgepathError(f"{slide}: end-to-end embedding {result.status}: {result.error}")
    return {
        "seconds": result.seconds,
        "n_tiles": result.n_tiles,
        "tiles_per_s": result.tiles_per_s,
        "wsi_per_min": 60.0 / result.seconds,
        "workers": workers,
        "batch": batch,
    }


class _Borrowed:
    """An engine whose ``close`` does nothing (the benchmark closes it later)."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def __call__(self, x: Any) -> Any:
        return self._engine(x)

    def close(self) -> None:
        """Leave the engine open."""


def run_compare(
    reference: str,
    candidate: str,
    *,
    slide: Path,
    reference_engine: str = "torch",
    reference_precision: str = "fp32",
    engines: Sequence[str] = ("onnxruntime", "openvino"),
    precisions: Sequence[str] = ("int8",),
    batch: int = 16,
    threads: int = 2,
    warmup: int = 1,
    rounds: int = 2,
    per_round: int = 1,
    workers: int = 1,
    e2e_budget_s: float = 600.0,
    on_step: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Teacher vs student WSI/min on one slide, side by side; see the module docstring."""
    step = on_step or (lambda _: None)
    settings = {
        "batch": batch,
        "threads": threads,
        "rounds": rounds,
        "per_round": per_round,
        "warmup": warmup,
        "workers": workers,
    }
    with contextlib.ExitStack() as stack:  # on exit: close every engine, then the temp folder
        work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="edgepath-compare-")))
        ref, cand = resolve_for_speed(reference), resolve_for_speed(candidate)
        step(f"preparing {ref.name} and {cand.name}")
        ref_vs, skipped = open_variants(
            ref,
            engines=[reference_engine],
            precisions=[reference_precision],
            threads=threads,
            workdir=work / "ref",
        )
        stack.callback(close_variants, ref_vs)
        cand_vs, sk = open_variants(
            cand, engines=engines, precisions=precisions, threads=threads, workdir=work / "cand"
        )
        stack.callback(close_variants, cand_vs)
        skipped += sk
        if not ref_vs or not cand_vs:
            raise EdgepathError("compare needs both models to open: " + "; ".join(skipped))
        step("counting tissue tiles at each model's mpp")
        counts = {m.name: slide_tiles(slide, tile_px=m.tile_px, mpp=m.mpp) for m in (ref, cand)}
        rows = _timed_rows(ref_vs + cand_vs, slide, counts, settings, on_step=on_step)
        best = max(rows[1:], key=lambda r: r["tiles_per_s"])
        best_v = next(
            v
            for v in cand_vs
            if (v.engine_name, v.precision) == (best["engine"], best["precision"])
        )
        e2e = _end_to_end_both(
            ref_vs[0],
            best_v,
            slide,
            ref_estimate_s=counts[ref.name] / rows[0]["tiles_per_s"],
            budget_s=e2e_budget_s,
            work=work,
            settings=settings,
            step=step,
        )
    return _report(
        ref,
        cand,
        slide,
        rows=rows,
        best=best,
        e2e=e2e,
        counts=counts,
        settings=settings,
        skipped=skipped,
    )


def _timed_rows(
    variants: list[Variant],
    slide: Path,
    counts: dict[str, int],
    settings: dict[str, Any],
    *,
    on_step: Callable[[str], None] | None,
) -> list[dict[str, Any]]:
    """Every variant timed side by side (interleaved rounds): one result row each, in order."""
    batch, threads = settings["batch"], settings["threads"]
    timing = time_variants(variants, batch=batch, on_step=on_step, **timing_of(settings))
    return [
        summarize_row(
            v,
            timing[v.label],
            batch=batch,
            threads=threads,
            cost=vit_cost(v.model.spec),
            ceiling=None,
            tiles_per_slide=counts[v.model.name],
            basis=f"tissue tiles of {slide.name} at {v.model.mpp} mpp",
        )
        for v in variants
    ]


def _end_to_end_both(
    ref_v: Variant,
    cand_v: Variant,
    slide: Path,
    *,
    ref_estimate_s: float,
    budget_s: float,
    work: Path,
    settings: dict[str, Any],
    step: Callable[[str], None],
) -> dict[str, Any]:
    """The candidate's variant end to end, and the reference's when its computed time fits."""
    kw = {"batch": settings["batch"], "workers": settings["workers"]}
    step(f"end to end: {cand_v.label} on {slide.name}")
    e2e: dict[str, Any] = {"candidate": end_to_end(cand_v, slide, out_dir=work / "e2e-cand", **kw)}
    if ref_estimate_s <= budget_s:
        step(f"end to end: {ref_v.label} on {slide.name}")
        e2e["reference"] = end_to_end(ref_v, slide, out_dir=work / "e2e-ref", **kw)
    else:
        e2e["reference"] = None
        e2e["reference_skipped"] = (
            f"computed time {ref_estimate_s / 60:.0f} min exceeds the {budget_s:.0f} s "
            "end-to-end budget; its computed WSI/min is used"
        )
    return e2e


def _report(
    ref: ModelHandle,
    cand: ModelHandle,
    slide: Path,
    *,
    rows: list[dict[str, Any]],
    best: dict[str, Any],
    e2e: dict[str, Any],
    counts: dict[str, int],
    settings: dict[str, Any],
    skipped: list[str],
) -> dict[str, Any]:
    """The compare result: both models, every row, end-to-end runs and the two ratios."""
    ref_wsi = rows[0]["wsi_per_min"]
    ref_e2e = e2e["reference"]["wsi_per_min"] if e2e.get("reference") else ref_wsi
    return {
        "kind": "compare",
        "machine": machine.describe(threads=settings["threads"]),
        "slide": str(slide),
        "slide_dimensions": _dimensions(slide),
        "reference": _model_entry(ref, counts),
        "candidate": {
            **_model_entry(cand, counts),
            "best": f"{best['engine']} {best['precision']}",
        },
        "rows": rows,
        "end_to_end": e2e,
        "ratio_computed": best["wsi_per_min"] / ref_wsi,
        "ratio_end_to_end": e2e["candidate"]["wsi_per_min"] / ref_e2e,
        "ratio_end_to_end_basis": (
            "both measured end to end"
            if e2e.get("reference")
            else "student measured end to end / teacher computed (model only, no I/O: favours "
            "the teacher)"
        ),
        "settings": settings,
        "skipped": skipped,
    }


def _model_entry(m: ModelHandle, counts: dict[str, int]) -> dict[str, Any]:
    return {
        "model": m.name,
        "random_weights": m.random_weights,
        "mpp": m.mpp,
        "tile_px": m.tile_px,
        "tiles": counts[m.name],
    }


def _dimensions(slide: Path) -> list[int] | None:
    try:
        from edgepath.slides import open_slide

        with open_slide(slide) as s:
            return list(s.dimensions)
    except Exception:  # pragma: no cover - described only
        return None
