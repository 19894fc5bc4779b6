"""``edgepath report``: benchmark run folders -> markdown + JSON + PNG plots."""

from __future__ import annotations

from pathlib import Path

import click

from edgepath.cli.common import emit, json_option


@click.command()
@click.argument("runs", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option(
    "-o",
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Report folder [default: the first RUN folder].",
)
@json_option
def report(runs: tuple[Path, ...], out: Path | None, as_json: bool) -> None:
    """Render the results of edgepath bench runs (RUN folders or result files) as one report."""
    from edgepath.bench.report import make_report
    from edgepath.bench.results import read_results

    results = read_results(list(runs))
    target = out or (runs[0] if runs[0].is_dir() else runs[0].parent)
    info = make_report(results, target)

    def human(d: dict) -> None:
        click.echo(f"{d['n_results']} results -> {d['markdown']}, {d['json']}")
        for img in d["images"]:
            click.echo(f"  {img}")

    emit(info, as_json=as_json, human=human)
