"""Cached vs live teacher: median step time of the same run, side by side (``python -m``).

    python -m edgepath.distill.benchmark --recipe xmag --teacher small-teacher \\
        --student vit-mini14 --steps 12 --json

Runs the recipe twice on the real sample slide, once with the teacher live every step and once
from the teacher-feature cache, and reports the median step time of each (the first steps are
warm-up and dropped), their ratio and the one-off cache build time.
"""

from __future__ import annotations

import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import click


def _run(card, *, slides, out: Path, warmup: int) -> dict[str, Any]:
    from edgepath.distill.trainer import distill

    times: list[float] = []
    marks: dict[str, float] = {}

    def cb(p) -> None:
        now = time.perf_counter()
        if p.phase == "train":
            if "last" in marks:
                times.append(now - marks["last"])
            marks["last"] = now
        else:
            marks["cache_done"] = now

    t0 = time.perf_counter()
    distill(card, out=out, slides=slides, on_progress=cb, stop_after=card.train.steps - 1)
    steps = times[warmup:]
    return {
        "median_step_s": statistics.median(steps),
        "steps_timed": len(steps),
        "cache_build_s": (marks["cache_done"] - t0) if "cache_done" in marks else None,
    }


def cache_speedup(
    recipe: str = "xmag",
    *,
    teacher: str = "small-teacher",
    student: str = "vit-mini14",
    steps: int = 12,
    batch_size: int = 4,
    warmup: int = 2,
    slides: str | Path | None = None,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """Median step time live vs cached, measured in one process, and their ratio."""
    import torch

    from edgepath.data import SAMPLE_SLIDE
    from edgepath.distill.recipe import load_recipe
    from edgepath.models import load_model
    from edgepath.models.encoder import count_parameters
    from edgepath.models.loading import student_input
    from edgepath.models.students import student_spec

    slides = slides or SAMPLE_SLIDE
    base = [
        f'teachers=[{{card="{teacher}"}}]',
        f'student.name="{student}"',
        f"train.steps={steps + 1}",
        f"train.batch_size={batch_size}",
        "views.fixed_views=1",
        "train.checkpoint_every=100000",
        "data.holdout=0.3",
        "data.min_tissue=0.3",
        "loss.dino_out_dim=4096",
        "loss.ibot_out_dim=4096",
        "loss.head_hidden_dim=512",
        "loss.head_bottleneck_dim=128",
        "views.local_crops=2",
        "data.stride=0.5",
        *(overrides or []),
    ]
    t_enc, _ = load_model(teacher)
    t_params = sum(p.numel() for p in t_enc.parameters())
    s_params = count_parameters(student_spec(student, input=student_input()))
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode in ("live", "cached"):
            card = load_recipe(
                recipe, [*base, f"train.cache={'true' if mode == 'cached' else 'false'}"]
            )
            rows[mode] = _run(card, slides=slides, out=Path(tmp) / mode, warmup=warmup)
    return {
        "benchmark": "distill-cache",
        "recipe": recipe,
        "teacher": teacher,
        "student": student,
        "teacher_params_m": round(t_params / 1e6, 2),
        "student_params_m": round(s_params / 1e6, 2),
        "param_ratio": round(t_params / s_params, 1),
        "batch": batch_size,
        "threads": torch.get_num_threads(),
        "machine": platform.machine(),
        "cpu": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "live_median_step_s": rows["live"]["median_step_s"],
        "cached_median_step_s": rows["cached"]["median_step_s"],
        "speedup": rows["live"]["median_step_s"] / rows["cached"]["median_step_s"],
        "cache_build_s": rows["cached"]["cache_build_s"],
        "steps_timed": rows["live"]["steps_timed"],
    }


@click.command()
@click.option("--recipe", default="xmag", type=click.Choice(["h0mini", "xmag", "expert"]))
@click.option("--teacher", default="small-teacher")
@click.option("--student", default="vit-mini14")
@click.option("--steps", default=12, type=int)
@click.option("--batch-size", default=4, type=int)
@click.option("--threads", default=None, type=int, help="torch threads (default: torch's).")
@click.option("--json", "as_json", is_flag=True)
def main(
    recipe: str,
    teacher: str,
    student: str,
    steps: int,
    batch_size: int,
    threads: int | None,
    as_json: bool,
) -> None:
    """Median distillation step time with the teacher live vs from the cache."""
    import torch

    if threads:
        torch.set_num_threads(threads)
    row = cache_speedup(
        recipe, teacher=teacher, student=student, steps=steps, batch_size=batch_size
    )
    if as_json:
        click.echo(json.dumps(row))
    else:
        click.echo(
            f"{recipe}: {teacher} ({row['teacher_params_m']} M) -> {student} "
            f"({row['student_params_m']} M), batch {batch_size}"
        )
        click.echo(f"  live   {row['live_median_step_s']:.3f} s/step")
        click.echo(
            f"  cached {row['cached_median_step_s']:.3f} s/step  "
            f"({row['speedup']:.1f}x faster; cache built once in "
            f"{row['cache_build_s']:.1f} s)"
        )


if __name__ == "__main__":
    main()
