"""``edgepath cards``: list and show the shipped and user cards."""

from __future__ import annotations

import click

from edgepath import cards as cardlib
from edgepath.cli.common import emit, json_option


@click.group()
def cards() -> None:
    """List and show cards (teachers, students, recipes, presets, targets)."""


@cards.command("list")
@click.argument("kind", required=False, type=click.Choice(sorted(cardlib.KINDS)))
@json_option
def list_cards(kind: str | None, as_json: bool) -> None:
    """List the cards of KIND (all kinds if omitted), with where each comes from.

    Stand-in teachers (seeded, no trained weights) are listed in a section of their own, and
    flagged ``stand_in`` in --json.
    """
    kinds = [kind] if kind else list(cardlib.KINDS)
    data = {
        k: sorted(
            (_row(k, name, path) for name, path in cardlib.card_paths(k).items()),
            key=lambda r: bool(r.get("stand_in")),
        )
        for k in kinds
    }

    def human(d: dict) -> None:
        for k, rows in d["cards"].items():
            real = [r for r in rows if not r.get("stand_in")]
            _section(f"{k} ({len(real)})", real)
            stand_ins = [r for r in rows if r.get("stand_in")]
            if stand_ins:
                _section(f"{k}: {STAND_INS} ({len(stand_ins)})", stand_ins)

    emit({"cards": data}, as_json=as_json, human=human)


#: The label of the stand-in section in ``cards list`` and ``teachers list``.
STAND_INS = "stand-ins, not pathology models"


def _row(kind: str, name: str, path) -> dict:
    _, table = cardlib.raw(kind, path)
    row = {"name": name, "path": str(path), "description": str(table.get("description", ""))}
    if kind == "teachers":
        row["stand_in"] = bool(table.get("stand_in", False))
    return row


def _section(title: str, rows: list[dict]) -> None:
    click.secho(title, bold=True)
    width = max((len(r["name"]) for r in rows), default=0)
    for r in rows:
        click.echo(f"  {r['name']:<{width}}  {r['description']}")


@cards.command("show")
@click.argument("name")
@click.option(
    "--kind",
    type=click.Choice(sorted(cardlib.KINDS)),
    default=None,
    help="Card kind, if the name exists in several kinds.",
)
@json_option
def show_card(name: str, kind: str | None, as_json: bool) -> None:
    """Show one card, validated, by NAME or path."""
    from pathlib import Path

    from edgepath.errors import ConfigError

    if kind is None and (name.endswith(".toml") or Path(name).is_file()):
        kind = cardlib.infer_kind(cardlib.resolve(next(iter(cardlib.KINDS)), name))
    kinds = [kind] if kind else list(cardlib.KINDS)
    matches = []
    for k in kinds:
        try:
            matches.append((k, cardlib.resolve(k, name)))
        except ConfigError:
            continue
    if not matches:
        raise ConfigError(
            f"no card named '{name}' in {', '.join(kinds)}; see `edgepath cards list`"
        )
    if len(matches) > 1 and kind is None:
        raise ConfigError(
            f"'{name}' names cards of several kinds ({', '.join(k for k, _ in matches)}); "
            "pass --kind"
        )
    k, path = matches[0]
    card = cardlib.load(k, path)
    data = {"kind": k, "path": str(path), "card": cardlib.to_dict(card)}

    def human(d: dict) -> None:
        click.secho(f"{d['kind']} card {d['card']['name']}  ({d['path']})", bold=True)
        click.echo(path.read_text().rstrip())

    emit(data, as_json=as_json, human=human)
