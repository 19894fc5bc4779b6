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

import logging
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from edgepath.bench import machine
from edgepath.bench.flops import vit_cost
from edgepath.bench.throughput import (
    Variant,
    open_variants,
    resolve_model,
    slide_tiles,
    summarize_row,
    time_variants,
)
from edgepath.errors import EdgepathError

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
    with tempfile.TemporaryDirectory(prefix="edgepath-compare-") as tmp:
        work = Path(tmp)
        ref = resolve_model(reference)
        cand = resolve_model(candidate)
        if on_step:
            on_step(f"preparing {ref.name} and {cand.name}")
        ref_vs, skipped = open_variants(
            ref,
            engines=[reference_engine],
            precisions=[reference_precision],
            threads=threads,
            workdir=work / "ref",
        )
        cand_vs, sk = open_variants(
            cand, engines=engines, precisions=precisions, threads=threads, workdir=work / "cand"
        )
        skipped += sk
        if not ref_vs or not cand_vs:
            raise EdgepathError("compare needs both models to open: " + "; ".join(skipped))
        if on_step:
            on_step("counting tissue tiles at each model's mpp")
        counts = {m.name: slide_tiles(slide, tile_px=m.tile_px, mpp=m.mpp) for m in (ref, cand)}
        timing = time_variants(
            ref_vs + cand_vs,
            batch=batch,
            warmup=warmup,
            rounds=rounds,
            per_round=per_round,
            on_step=on_step,
        )
        rows = []
        for v in ref_vs + cand_vs:
            rows.append(
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
            )
        ref_row = rows[0]
        best = max(rows[1:], key=lambda r: r["tiles_per_s"])
        best_v = next(
            v
            for v in cand_vs
            if (v.engine_name, v.precision) == (best["engine"], best["precision"])
        )
        e2e: dict[str, Any] = {}
        if on_step:
            on_step(f"end to end: {best_v.label} on {slide.name}")
        e2e["candidate"] = end_to_end(
            best_v, slide, batch=batch, workers=workers, out_dir=work / "e2e-cand"
        )
        ref_estimate = counts[ref.name] / ref_row["tiles_per_s"]
        if ref_estimate <= e2e_budget_s:
            if on_step:
                on_step(f"end to end: {ref_vs[0].label} on {slide.name}")
            e2e["reference"] = end_to_end(
                ref_vs[0], slide, batch=batch, workers=workers, out_dir=work / "e2e-ref"
            )
        else:
            e2e["reference"] = None
            e2e["reference_skipped"] = (
                f"computed time {ref_estimate / 60:.0f} min exceeds the {e2e_budget_s:.0f} s "
                "end-to-end budget; its computed WSI/min is used"
            )
        for v in ref_vs + cand_vs:
            v.engine.close()
    ref_wsi = ref_row["wsi_per_min"]
    ref_e2e = e2e["reference"]["wsi_per_min"] if e2e.get("reference") else ref_wsi
    return {
        "kind": "compare",
        "machine": machine.describe(threads=threads),
        "slide": str(slide),
        "slide_dimensions": _dimensions(slide),
        "reference": {
            "model": ref.name,
            "random_weights": ref.random_weights,
            "mpp": ref.mpp,
            "tile_px": ref.tile_px,
            "tiles": counts[ref.name],
        },
        "candidate": {
            "model": cand.name,
            "random_weights": cand.random_weights,
            "mpp": cand.mpp,
            "tile_px": cand.tile_px,
            "tiles": counts[cand.name],
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
        "settings": {
            "batch": batch,
            "threads": threads,
            "rounds": rounds,
            "per_round": per_round,
            "warmup": warmup,
            "workers": workers,
        },
        "skipped": skipped,
    }


def _dimensions(slide: Path) -> list[int] | None:
    try:
        from edgepath.slides import open_slide

        with open_slide(slide) as s:
            return list(s.dimensions)
    except Exception:  # pragma: no cover - described only
        return None
