"""``edgepath distill``: teach a frozen teacher (or several) into a small student, from slides or tiles."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from edgepath.cli.common import emit, json_option, progress


@click.command()
@click.argument("recipe")
@click.option(
    "--teacher",
    "teachers",
    multiple=True,
    metavar="NAME",
    help="Teacher card name or path (repeat for the expert recipe); replaces the recipe's.",
)
@click.option(
    "--teacher-weights",
    "teacher_weights",
    multiple=True,
    metavar="PATH",
    help="Checkpoint of each --teacher, in the same order.",
)
@click.option(
    "--student", metavar="NAME", help="Student architecture (vit-s14, vit-b14, vit-mini14 …)."
)
@click.option("--slides", type=click.Path(exists=True), help="Folder of slides (or one slide).")
@click.option(
    "--tiles", type=click.Path(exists=True, file_okay=False), help="Folder of tile images."
)
@click.option(
    "-o",
    "--out",
    required=True,
    type=click.Path(file_okay=False),
    help="Run folder: the student artifact, checkpoints/, scalars.csv, cache/.",
)
@click.option("--steps", type=int, help="Training steps (train.steps).")
@click.option("--batch-size", type=int, help="Per-process batch (train.batch_size).")
@click.option("--seed", type=int, help="Seed (train.seed).")
@click.option("--resume", is_flag=True, help="Continue from the newest checkpoint in -o.")
@click.option(
    "--cache-dir",
    type=click.Path(file_okay=False),
    help="Teacher-feature cache folder (default RUN_DIR/cache); share it between runs.",
)
@click.option(
    "--no-cache", is_flag=True, help="Run the teacher live every step (train.cache=false)."
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override any recipe value, e.g. --set optim.lr=1e-3 --set views.local_crops=2.",
)
@json_option
def distill(
    recipe: str,
    teachers: tuple[str, ...],
    teacher_weights: tuple[str, ...],
    student: str | None,
    slides: str | None,
    tiles: str | None,
    out: str,
    steps: int | None,
    batch_size: int | None,
    seed: int | None,
    resume: bool,
    cache_dir: str | None,
    no_cache: bool,
    overrides: tuple[str, ...],
    as_json: bool,
) -> None:
    """Distil RECIPE (h0mini, xmag, expert, or a .toml) into a student artifact in -o.

    \b
    Single process:
      edgepath distill xmag --teacher uni2-h --slides slides/ -o runs/xmag
    Several GPUs / nodes (DDP; NCCL on GPUs, gloo on CPU):
      torchrun --nproc-per-node 8 -m edgepath distill h0mini --slides slides/ -o runs/h0
    """
    from edgepath.distill.recipe import load_recipe
    from edgepath.distill.trainer import distill as run

    sets = _recipe_overrides(
        overrides,
        teachers=teachers,
        teacher_weights=teacher_weights,
        student=student,
        steps=steps,
        batch_size=batch_size,
        seed=seed,
        no_cache=no_cache,
    )
    card = load_recipe(recipe, sets)
    rank0 = int(os.environ.get("RANK", "0")) == 0
    with progress(disable=None if rank0 else True) as bar:
        manifest = run(
            card,
            out=Path(out),
            slides=slides,
            tiles=tiles,
            resume=resume,
            cache_dir=cache_dir,
            on_progress=_progress_display(bar, card.name),
        )
    if rank0:
        emit(_summary(out, card, manifest), as_json=as_json, human=_human)


def _recipe_overrides(
    overrides: tuple[str, ...],
    *,
    teachers: tuple[str, ...],
    teacher_weights: tuple[str, ...],
    student: str | None,
    steps: int | None,
    batch_size: int | None,
    seed: int | None,
    no_cache: bool,
) -> list[str]:
    """The ``--set KEY=VALUE`` list for ``load_recipe``: the flags' values added to ``--set``'s."""
    from edgepath.distill.recipe import teachers_override, toml_string
    from edgepath.errors import ConfigError

    sets = list(overrides)
    if teacher_weights and not teachers:
        raise ConfigError("give one --teacher-weights per --teacher, in the same order")
    if teachers:
        sets.insert(0, teachers_override(teachers, teacher_weights))
    if student:
        sets.append(f"student.name={toml_string(student)}")
    for key, value in (
        ("train.steps", steps),
        ("train.batch_size", batch_size),
        ("train.seed", seed),
    ):
        if value is not None:
            sets.append(f"{key}={value}")
    if no_cache:
        sets.append("train.cache=false")
    return sets


def _progress_display(bar: Any, name: str) -> Callable[[Any], None]:
    """An ``on_progress`` callback: one bar per phase (teacher cache, distill), loss and speed."""
    tasks: dict[str, int] = {}

    def on_progress(p: Any) -> None:
        if p.phase not in tasks:
            label = "teacher cache" if p.phase == "cache" else f"distill {name}"
            tasks[p.phase] = bar.add_task(label, total=p.total, rate="")
        s = p.scalars
        rate = f"loss {s['loss']:.4f} · {s['tiles_per_s']:.1f} tiles/s" if "loss" in s else ""
        bar.update(tasks[p.phase], completed=p.done, total=p.total, rate=rate)

    return on_progress


def _summary(out: str, card: Any, manifest: dict[str, Any]) -> dict[str, Any]:
    """What the command reports (``--json``): the run's artifact, fidelity and calibration."""
    data = {
        "out": str(out),
        "recipe": card.recipe,
        "student": card.student.name,
        "teachers": [t["card"] for t in manifest.get("teachers", [])],
        "steps": manifest.get("steps"),
        "seconds": manifest.get("seconds"),
        "fidelity_init": manifest.get("fidelity_init"),
        "fidelity": manifest.get("fidelity"),
        "stand_in": manifest.get("stand_in"),
    }
    if manifest.get("metric_calibration"):
        data["metric_calibration"] = manifest["metric_calibration"]
    return data


def _human(d: dict[str, Any]) -> None:
    """The summary for people: artifact, held-out fidelity before -> after, calibration."""
    f, f0 = d["fidelity"] or {}, d["fidelity_init"] or {}
    click.echo(
        f"student artifact: {d['out']}  ({d['student']} from "
        f"{', '.join(d['teachers'])}, {d['steps']} steps, {d['seconds']} s)"
    )
    for key in ("cosine", "centered_cosine", "knn10_agreement"):
        if f.get(key) is not None:
            click.echo(
                f"  {key:<16} {f0.get(key, float('nan')):.3f} -> {f[key]:.3f}  "
                f"(held-out, {f.get('n_tiles')} tiles)"
            )
    cal = d.get("metric_calibration")
    if cal:
        b = cal.get("before", {}).get("knn10_agreement")
        click.echo(
            f"  metric calibration: neighbourhood KL {cal['kl_before']:.3f} -> "
            f"{cal['kl_after']:.3f} on {cal['items']} training items"
            + (f"; knn10_agreement before it {b:.3f}" if b is not None else "")
        )
    if d["stand_in"]:
        click.echo("  (stand-in teacher: random weights, not a pathology model)")
