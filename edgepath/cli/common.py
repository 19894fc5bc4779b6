"""Shared CLI helpers: ``--json`` output, progress bars that respect ``--quiet``."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

json_option = click.option(
    "--json", "as_json", is_flag=True, help="Print exactly one JSON object on stdout."
)


#: ``-o/--out`` of the ``bench`` commands: a run folder that ``edgepath report`` reads.
results_out_option = click.option(
    "-o",
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Run folder to write the result JSON into (for edgepath report).",
)


def device_option(default: str = "auto", *, help: str | None = None) -> Callable[[Any], Any]:
    """``--device auto|cpu|cuda``: where the torch engine runs (auto: cuda when torch sees one)."""
    return click.option(
        "--device",
        type=click.Choice(["auto", "cpu", "cuda"]),
        default=default,
        show_default=True,
        help=help
        or "Where the torch engine runs (auto: cuda when torch sees a GPU); other engines "
        "run on their own default device.",
    )


def emit(data: dict[str, Any], *, as_json: bool, human: Callable[[dict[str, Any]], None]) -> None:
    """Print ``data`` as one JSON object (``--json``) or call ``human`` to render it."""
    if as_json:
        click.echo(json.dumps(data, default=_default))
    else:
        human(data)


def _default(obj: Any) -> Any:
    if hasattr(obj, "tolist"):
        return obj.tolist()
    return str(obj)


def quiet() -> bool:
    """True when progress output should be suppressed (``--quiet``, ``--json`` or no terminal)."""
    ctx = click.get_current_context(silent=True)
    obj = (ctx.find_root().obj or {}) if ctx else {}
    return bool(obj.get("quiet")) or not sys.stderr.isatty()


def progress(*, transient: bool = False, disable: bool | None = None):
    """A rich progress bar on stderr with rate and ETA (disabled when quiet or not a terminal)."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=transient,
        disable=quiet() if disable is None else disable,
    )
