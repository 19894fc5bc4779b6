"""``edgepath teachers``: list, show and check teacher cards (weights never bundled)."""

from __future__ import annotations

import click

from edgepath.cli.common import emit, json_option


@click.group()
def teachers() -> None:
    """Pathology foundation models edgepath can distill from (cards in teachers/)."""


@teachers.command("list")
@json_option
def list_teachers(as_json: bool) -> None:
    """List the teacher cards: embedding, published size, license (stand-ins in their own section)."""
    from edgepath import cards
    from edgepath.models.weights import env_var

    rows = []
    for card in cards.load_all("teachers"):
        rows.append(
            {
                "name": card.name,
                "description": card.description,
                "embedding": card.embedding.definition,
                "embed_dim": card.embedding.dim,
                "params_published": card.params_m * 1e6 if card.params_m else None,
                "hf_repo": card.weights.hf_repo,
                "gated": card.weights.gated,
                "license": card.license,
                "stand_in": card.stand_in,
                "env_var": env_var(card),
            }
        )

    rows.sort(key=lambda r: r["stand_in"])  # stand-ins last, in their own section

    def human(d: dict) -> None:
        from edgepath.cli.cards import STAND_INS

        width = max(len(r["name"]) for r in d["teachers"])
        click.secho(f"{'name':<{width}}  {'params':>7}  {'embedding':<20}  weights", bold=True)
        stand_ins = [r for r in d["teachers"] if r["stand_in"]]
        for r in d["teachers"]:
            if stand_ins and r is stand_ins[0]:
                click.secho(f"{STAND_INS} ({len(stand_ins)})", bold=True)
            size = f"{r['params_published'] / 1e6:.0f} M" if r["params_published"] else "-"
            emb = f"{r['embedding']} {r['embed_dim']}"
            where = "stand-in (seeded, no download)" if r["stand_in"] else f"hf:{r['hf_repo']}"
            gated = " (gated)" if r["gated"] else ""
            click.echo(f"{r['name']:<{width}}  {size:>7}  {emb:<20}  {where}{gated}")

    emit({"teachers": rows}, as_json=as_json, human=human)


@teachers.command("show")
@click.argument("name")
@json_option
def show_teacher(name: str, as_json: bool) -> None:
    """Show a card plus its parameter count and embedding dim (meta device, no weights)."""
    from edgepath import cards
    from edgepath.models.check import architecture_summary
    from edgepath.models.weights import env_var

    path = cards.resolve("teachers", name)
    card = cards.load("teachers", path)
    data = architecture_summary(card)
    data.update(path=str(path), env_var=env_var(card), card=cards.to_dict(card))

    def human(d: dict) -> None:
        c = d["card"]
        click.secho(f"{c['name']}: {c['description']}", bold=True)
        pub = d["params_published"]
        pub_s = f" (published {pub / 1e6:.0f} M)" if pub else ""
        click.echo(f"  parameters   {d['params'] / 1e6:.1f} M{pub_s}")
        click.echo(f"  architecture {c['architecture']['library']}:{c['architecture']['name']}")
        click.echo(
            f"  input        {d['tile_px']} px at {d['mpp']} µm/px, mean {c['input']['mean']}, "
            f"std {c['input']['std']}"
        )
        t = d["tokens"]
        click.echo(
            f"  tokens       CLS at {t['cls_index']}, {t['num_registers']} registers, "
            f"{t['num_patches']} patches of {t['patch_size']} px"
        )
        click.echo(f"  embedding    {d['embedding']}, {d['embed_dim']}-d")
        w = c["weights"]
        if c["stand_in"]:
            click.echo("  weights      none to load: seeded (stand-in, not a pathology model)")
        else:
            click.echo(
                f"  weights      hf:{w['hf_repo']} {', '.join(w['files'])}"
                f"{' (gated)' if w['gated'] else ''}; or --weights PATH / ${d['env_var']}"
            )
        click.echo(f"  license      {c['license']}")
        click.echo(f"  source       {c['source']}")
        click.echo(f"  card         {d['path']}")

    emit(data, as_json=as_json, human=human)


@teachers.command("check")
@click.argument("name")
@click.option(
    "--weights",
    type=click.Path(exists=True),
    default=None,
    help="Checkpoint file or folder (default: $EDGEPATH_WEIGHTS_<NAME>, then the HF cache).",
)
@click.option(
    "--random-weights", is_flag=True, help="Seeded random weights (checks the architecture only)."
)
@click.option("--device", default="cpu", show_default=True, help="Torch device, e.g. cuda.")
@json_option
def check_teacher(
    name: str, weights: str | None, random_weights: bool, device: str, as_json: bool
) -> None:
    """Load NAME, embed a real H&E sample tile, print the dimension and a checksum."""
    from edgepath.models.check import check_teacher as run_check

    data = run_check(name, weights=weights, random_weights=random_weights, device=device)

    def human(d: dict) -> None:
        label = " (random weights)" if d["random_weights"] else ""
        click.secho(f"{d['name']}{label}: ok", bold=True, fg="green")
        click.echo(f"  embedding  {d['embed_dim']}-d, finite, L2 norm {d['norm']:.4f}")
        click.echo(f"  checksum   {d['checksum']}")
        click.echo(
            f"  weights    {', '.join(d['files']) or 'none'} (sha256 {d['weights_sha256'][:12]})"
        )
        click.echo(f"  time       load {d['load_seconds']:.2f} s, embed {d['embed_seconds']:.2f} s")

    emit(data, as_json=as_json, human=human)
