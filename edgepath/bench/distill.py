"""Training speed of a distillation recipe: steps/s, items/s, peak memory, where a step's time
goes, and what the teacher-feature cache saves (``edgepath bench distill``).

The run is the trainer itself (``edgepath.distill.trainer.distill``) stopped after
``warmup + steps`` steps, once with the teacher live every step (the first epoch of a real run)
and once reading the teacher-feature cache (every later epoch), with a
:class:`~edgepath.distill.timing.PhaseTimer` charging each phase of each step. Only the timed
steps after the warm-up count; the figures are their medians. Teachers without weights run with
seeded random weights (speed needs only the architecture), and the result says so.
"""

from __future__ import annotations

import json
import logging
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edgepath.errors import ConfigError

log = logging.getLogger(__name__)

#: Phases of a step as the trainer names them (``cache_read`` replaces ``teacher`` when cached).
PHASES = ("data", "teacher", "cache_read", "student", "loss", "backward", "optimizer")


def default_slides(folder: Path, *, synth_tiles: int = 400) -> Path:
    """A folder with the shipped real sample slide and a 4-level slide synthesized from it."""
    import os

    from edgepath.data import SAMPLE_SLIDE
    from edgepath.slides import synthesize_slide

    folder.mkdir(parents=True, exist_ok=True)
    link = folder / SAMPLE_SLIDE.name
    if not link.exists():
        os.symlink(SAMPLE_SLIDE, link)
    synthesize_slide(folder / "synthetic.tiff", tiles=synth_tiles, seed=0)
    return folder


def _overrides(
    *, teachers: tuple[str, ...], student: str | None, batch_size: int | None, total: int
) -> list[str]:
    from edgepath.distill.recipe import teachers_override, toml_string

    sets = []
    if teachers:
        sets.append(teachers_override(teachers))
    if student:
        sets.append(f"student.name={toml_string(student)}")
    if batch_size:
        sets.append(f"train.batch_size={batch_size}")
    # one step more than is run, so that no final checkpoint is written; no held-out band
    sets += [f"train.steps={total + 1}", f"train.checkpoint_every={total + 1}", "data.holdout=0"]
    return sets


def _summary(steps: list[dict[str, float]], items_per_step: int) -> dict[str, Any]:
    """Medians over the timed steps: step time, rates and the split of a step by phase."""
    med = statistics.median(s["total"] for s in steps)
    phases = {
        p: round(statistics.median(s.get(p, 0.0) for s in steps), 5)
        for p in PHASES
        if any(p in s for s in steps)
    }
    phases["other"] = round(max(med - sum(phases.values()), 0.0), 5)
    return {
        "median_step_s": round(med, 5),
        "steps_per_s": round(1.0 / med, 4),
        "items_per_s": round(items_per_step / med, 3),
        "phases_s": phases,
        "phase_share": {k: round(v / med, 3) for k, v in phases.items()},
    }


def _peak_memory_mb(device: str) -> tuple[float, str]:
    import torch

    if device == "cuda":
        return round(torch.cuda.max_memory_allocated() / 2**20, 1), "cuda max_memory_allocated"
    # ru_maxrss is in KiB on Linux: the process's peak, teacher and student included
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1), "process peak RSS"


def distill_speed(
    recipe: str,
    *,
    teachers: tuple[str, ...] = (),
    student: str | None = None,
    slides: str | Path | None = None,
    steps: int = 6,
    warmup: int = 2,
    batch_size: int | None = None,
    device: str = "auto",
    cached: bool = True,
    overrides: list[str] | None = None,
    on_status: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Measure a recipe's training speed on this machine (one process).

    Args:
        recipe: Recipe card name or path.
        teachers: Teacher cards replacing the recipe's (several for ``expert``).
        student: Student name replacing the recipe's.
        slides: Slides folder (or one slide); default the shipped sample slide and a
            synthesized 4-level slide.
        steps: Timed steps, after ``warmup`` untimed ones.
        batch_size: Per-process batch (default the card's).
        device: ``cpu``, ``cuda`` or ``auto``.
        cached: Also measure steps that read the teacher-feature cache (and its build).
        overrides: More ``KEY=VALUE`` recipe overrides.
        on_status: Called with a line of text as each part starts.
    """
    import torch

    from edgepath.distill.recipe import load_recipe
    from edgepath.runtime.torch_engine import resolve_device

    if steps < 1 or warmup < 0:
        raise ConfigError("--steps must be >= 1 and --warmup >= 0")
    # the trainer picks its GPU from LOCAL_RANK, as under torchrun
    dev = "cuda" if resolve_device(device).startswith("cuda") else "cpu"
    status = on_status or (lambda text: None)
    total = warmup + steps
    sets = _overrides(teachers=teachers, student=student, batch_size=batch_size, total=total)
    card = load_recipe(recipe, [*sets, *(overrides or [])])
    items_per_step = card.train.batch_size * card.optim.accumulate
    # Two batches' worth of items, one fixed view each, read again and again: a step's cost does
    # not depend on how many distinct items there are, and building the cache for all of them
    # costs a teacher pass per item (at a paper batch of 48 xmag regions, 55 steps would need
    # 2,640 regions: minutes of teacher time before the first cached step). The cache's shards
    # then stay in memory; a paper-scale cache streams them from disk.
    speed_sets = [*sets, *(overrides or []), f"data.max_items={2 * items_per_step}"]
    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory(prefix="edgepath-bench-distill-") as tmp:
        root = Path(tmp)
        if slides is None:
            status("synthesizing a 4-level slide next to the sample slide")
            slides = default_slides(root / "slides")
        rows: dict[str, Any] = {}
        modes = ("live", "cached") if cached else ("live",)
        for mode in modes:
            status(f"{mode}: {warmup} warm-up + {steps} timed steps")
            rows.update(
                _measure(
                    recipe,
                    speed_sets,
                    mode=mode,
                    out=root / mode,
                    slides=slides,
                    dev=dev,
                    warmup=warmup,
                    total=total,
                    items_per_step=items_per_step,
                )
            )
    return _result(card, rows, dev=dev, steps=steps, warmup=warmup, slides=slides)


def _measure(
    recipe: str,
    sets: list[str],
    *,
    mode: str,
    out: Path,
    slides,
    dev: str,
    warmup: int,
    total: int,
    items_per_step: int,
) -> dict[str, Any]:
    """One run of the trainer, teacher ``live`` or ``cached`` (one fixed view per item): its
    summary, the cache build, and (live) the peak memory."""
    from edgepath.distill.cache import META
    from edgepath.distill.recipe import load_recipe
    from edgepath.distill.timing import PhaseTimer
    from edgepath.distill.trainer import distill

    cached = mode == "cached"
    extra = ["train.cache=true", "views.fixed_views=1"] if cached else ["train.cache=false"]
    timer = PhaseTimer(dev)
    distill(
        load_recipe(recipe, [*sets, *extra]),
        out=out,
        slides=slides,
        stop_after=total,
        random_teachers=True,
        device=dev,
        speed_only=True,
        timer=timer,
    )
    rows: dict[str, Any] = {mode: _summary(timer.steps[warmup:], items_per_step)}
    if "cache_build" in timer.setup:  # the cache's own record of what it holds
        meta = json.loads((out / "cache" / META).read_text())
        n = meta["n_items"] * meta["n_views"]
        built = timer.setup["cache_build"]
        rows["cache_build"] = {
            "items": n,
            "seconds": round(built, 3),
            "items_per_s": round(n / built, 3),
        }
    if not cached:
        rows["peak_memory_mb"], rows["peak_memory_kind"] = _peak_memory_mb(dev)
    return rows


def _result(card, rows: dict[str, Any], *, dev: str, steps: int, warmup: int, slides) -> dict:
    """The JSON row of one measurement."""
    import torch

    from edgepath.distill.recipes import recipe_class
    from edgepath.eval.machine import describe
    from edgepath.models.encoder import count_parameters
    from edgepath.models.loading import as_card, student_input
    from edgepath.models.students import student_spec

    live = rows["live"]
    t_cards = [as_card(t.card) for t in card.teachers]
    out: dict[str, Any] = {
        "kind": "distill",
        "recipe": card.recipe,
        "card": card.name,
        "teachers": [
            {
                "card": c.name,
                "params_m": round(count_parameters(c.spec) / 1e6, 1),
                "weights": "stand-in"
                if c.stand_in
                else "random (speed needs only the architecture)",
            }
            for c in t_cards
        ],
        "student": card.student.name,
        "student_params_m": round(
            count_parameters(student_spec(card.student.name, input=student_input())) / 1e6, 2
        ),
        "items": recipe_class(card.recipe).source_kind,
        "batch_size": card.train.batch_size,
        "accumulate": card.optim.accumulate,
        "world_size": 1,
        "device": dev,
        "device_name": torch.cuda.get_device_name(0) if dev == "cuda" else describe()["cpu"],
        "precision": "bf16 autocast"
        if dev == "cuda" and card.train.precision != "fp32"
        else "fp32",
        "threads": torch.get_num_threads(),
        "slides": str(slides),
        "warmup_steps": warmup,
        "steps_timed": steps,
        "steps_per_s": live["steps_per_s"],
        "items_per_s": live["items_per_s"],
        "peak_memory_mb": rows["peak_memory_mb"],
        "peak_memory_kind": rows["peak_memory_kind"],
        "live": live,
        "machine": describe(threads=torch.get_num_threads()),
        "date": time.strftime("%Y-%m-%d"),
    }
    if "cached" in rows:
        out["cached"] = rows["cached"]
        out["cached_steps_per_s"] = rows["cached"]["steps_per_s"]
        out["cache_speedup"] = round(live["median_step_s"] / rows["cached"]["median_step_s"], 2)
        out["cache_build"] = rows.get("cache_build")
    return out


def wall_time_days(items: float, items_per_s: float, *, gpus: int = 1) -> float:
    """Days to train on ``items`` samples at ``items_per_s`` per process on ``gpus`` processes
    (linear scaling: an upper bound on the speed, a lower bound on the time)."""
    return items / (items_per_s * gpus) / 86400.0
