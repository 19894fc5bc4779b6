"""The ``edgepath`` command: global options, lazy verbs, one-line errors with exit code 2."""

from __future__ import annotations

import importlib
import logging
import os
import sys
import traceback
from typing import Any

import click

from edgepath import __version__
from edgepath.errors import EdgepathError

#: Verb -> "module:command". Imported only when the verb runs (heavy imports stay lazy).
#: A verb is listed here only once it works: no placeholder commands.
COMMANDS: dict[str, str] = {
    "cards": "edgepath.cli.cards:cards",
    "teachers": "edgepath.cli.teachers:teachers",
    "distill": "edgepath.cli.distill:distill",
    "bench": "edgepath.cli.bench:bench",
    "report": "edgepath.cli.report:report",
    "embed": "edgepath.cli.embed:embed",
    "watch": "edgepath.cli.embed:watch",
    "slides": "edgepath.cli.slides:slides",
    "quantize": "edgepath.cli.quantize:quantize",
    "export": "edgepath.cli.export:export_cmd",
    "doctor": "edgepath.cli.doctor:doctor",
    "demo": "edgepath.cli.demo:demo",
}


class LazyGroup(click.Group):
    """A click group whose subcommands are imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = COMMANDS.get(cmd_name)
        if target is None:
            return None
        module, _, attr = target.partition(":")
        return getattr(importlib.import_module(module), attr)


def _setup_logging(verbose: int, quiet: bool) -> None:
    level = logging.WARNING
    if quiet:
        level = logging.ERROR
    elif verbose == 1:
        level = logging.INFO
    elif verbose >= 2:
        level = logging.DEBUG
    logging.basicConfig(
        level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr, force=True
    )
    from edgepath import quiet as _quiet

    _quiet.install(verbose)  # known-harmless third-party warnings hidden unless -v


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="edgepath")
@click.option(
    "-v",
    "--verbose",
    count=True,
    help="More log output (-vv for debug logs); also shows the third-party warnings and "
    "progress that are hidden by default (edgepath.quiet.KNOWN).",
)
@click.option("-q", "--quiet", is_flag=True, help="Only errors; no progress bars.")
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.option(
    "--cards-dir",
    type=click.Path(file_okay=False),
    multiple=True,
    help="Extra folder of your own cards (also $EDGEPATH_CARDS).",
)
@click.pass_context
def cli(
    ctx: click.Context, verbose: int, quiet: bool, debug: bool, cards_dir: tuple[str, ...]
) -> None:
    """edgepath: compress pathology foundation models into fast, robust edge tile encoders.

    \b
    Pipeline:  distill -> quantize -> export -> embed / watch,  measured by bench.
    Docs: README.md and docs/ in the source tree.
    """
    from edgepath import cards

    _setup_logging(verbose, quiet)
    ctx.ensure_object(dict)
    ctx.obj.update(verbose=verbose, quiet=quiet, debug=debug)
    for d in cards_dir:
        cards.add_cards_dir(d)


def _debug_requested(argv: list[str]) -> bool:
    return "--debug" in argv or os.environ.get("EDGEPATH_DEBUG", "") not in ("", "0")


def main(argv: list[str] | None = None) -> Any:
    """Entry point: run the CLI; user errors print one line and exit 2."""
    args = list(sys.argv[1:] if argv is None else argv)
    debug = _debug_requested(args)
    try:
        return cli.main(args=args, prog_name="edgepath", standalone_mode=False)
    except EdgepathError as exc:
        if debug:
            traceback.print_exc()
        click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(130)
    except click.ClickException as exc:
        if debug:
            traceback.print_exc()
        exc.show()
        sys.exit(exc.exit_code)
    except click.exceptions.Exit as exc:
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        sys.exit(130)
    except Exception as exc:  # a bug, not a user error: say so, keep the traceback for --debug
        if debug:
            raise
        click.echo(
            f"internal error: {type(exc).__name__}: {exc} (rerun with --debug for the traceback)",
            err=True,
        )
        sys.exit(1)
