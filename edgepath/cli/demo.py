"""``edgepath demo``: the whole job offline on real tissue, in one command."""

from __future__ import annotations

from pathlib import Path

import click

from edgepath.cli.common import emit, json_option


@click.command()
@click.option(
    "-o",
    "--out",
    type=click.Path(file_okay=False),
    default="demo-out",
    show_default=True,
    help="Output folder (rerunning reuses finished stages).",
)
@click.option(
    "--teacher",
    default="tiny-teacher",
    show_default=True,
    help="Teacher card; the default is a random-weight stand-in, labelled as such.",
)
@click.option("--teacher-weights", default="", help="Weights file or folder for a real teacher.")
@click.option("--student", default="vit-mini14", show_default=True, help="Student architecture.")
@click.option(
    "--steps",
    type=click.IntRange(min=1),
    default=300,
    show_default=True,
    help="Distillation steps.",
)
@click.option("--force", is_flag=True, help="Redo every stage.")
@json_option
def demo(
    out: str,
    teacher: str,
    teacher_weights: str,
    student: str,
    steps: int,
    force: bool,
    as_json: bool,
) -> None:
    """Teacher -> XMAG student -> INT8 -> ONNX/OpenVINO/Jetson/Triton -> bench -> report.md.

    Runs on the shipped real sample slide and a multi-level slide synthesized from its tissue,
    with no weights and no network (the default teacher is a random-weight stand-in). With
    --teacher NAME --teacher-weights PATH the same stages use a real teacher.
    """
    from edgepath.demo import DemoConfig, run_demo, teacher_is_stand_in

    cfg = DemoConfig(
        out=Path(out),
        teacher=teacher,
        teacher_weights=teacher_weights,
        student=student,
        steps=steps,
        force=force,
    )

    def on_stage(name: str, status: str, seconds: float) -> None:
        if as_json:
            return
        if status == "running":
            click.echo(f"[{name}] running ...", err=True)
        else:
            click.echo(f"[{name}] {status} ({seconds:.1f} s)", err=True)

    state = run_demo(cfg, on_stage=on_stage)
    report = Path(out) / "report" / "report.md"
    summary = {
        "out": str(out),
        "report": str(report),
        "seconds": {
            k: v.get("seconds") for k, v in state.items() if isinstance(v, dict) and "seconds" in v
        },
        "teacher": teacher,
        "stand_in_teacher": teacher_is_stand_in(teacher),
    }

    def human(d: dict) -> None:
        total = sum(v or 0 for v in d["seconds"].values())
        click.echo(f"demo finished in {total:.0f} s of stage time; report: {d['report']}")

    emit(summary, as_json=as_json, human=human)
