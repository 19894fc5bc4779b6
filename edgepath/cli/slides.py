"""``edgepath slides``: inspect slides, tile them at an exact mpp, synthesize test slides."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from edgepath.cli.common import emit, json_option, progress
from edgepath.errors import EdgepathError


def _overrides(mpp_csv: str | None) -> dict[str, float]:
    from edgepath.slides.mpp import read_mpp_csv

    return read_mpp_csv(mpp_csv) if mpp_csv else {}


def _override_for(path: str, slide_mpp: float | None, table: dict[str, float]) -> float | None:
    from edgepath.slides.mpp import lookup_override

    found = lookup_override(table, path)
    return found if found is not None else slide_mpp


def _finish(results: list[dict[str, Any]], *, as_json: bool, human) -> None:
    """Emit the results; exit 2 for a single failed slide, 1 when some of a batch failed."""
    failed = [r for r in results if "error" in r]
    emit({"slides": results, "failed": len(failed)}, as_json=as_json, human=human)
    if not failed:
        return
    if len(results) == 1:
        click.echo(f"error: {failed[0]['error']}", err=True)
        raise SystemExit(2)
    click.echo(f"{len(failed)} of {len(results)} slides failed:", err=True)
    for r in failed:
        click.echo(f"  error: {r['error']}", err=True)
    raise SystemExit(1)


slide_mpp_option = click.option(
    "--slide-mpp",
    type=float,
    default=None,
    help="Level-0 µm/px of slides whose metadata lacks it or is wrong (overrides the file).",
)
mpp_csv_option = click.option(
    "--mpp-csv",
    type=click.Path(dir_okay=False),
    default=None,
    help="CSV with columns slide,mpp: per-slide level-0 µm/px overrides (path, name or stem).",
)


@click.group()
def slides() -> None:
    """Inspect, tile and synthesize whole-slide images."""


@slides.command("info")
@click.argument("slide_paths", metavar="SLIDE...", nargs=-1, required=True)
@slide_mpp_option
@mpp_csv_option
@json_option
def info(
    slide_paths: tuple[str, ...], slide_mpp: float | None, mpp_csv: str | None, as_json: bool
) -> None:
    """Levels, mpp (and where it came from), vendor and tissue fraction of each SLIDE."""
    from edgepath.slides import TissueParams, open_slide
    from edgepath.slides.tiling import slide_tissue

    table = _overrides(mpp_csv)
    results = []
    for p in slide_paths:
        try:
            with open_slide(p, mpp=_override_for(p, slide_mpp, table)) as s:
                d = s.info()
                params = TissueParams()
                mask, _ = slide_tissue(s, mpp=max(params.mpp, s.mpp), params=params)
                d["tissue_fraction"] = round(float(mask.mean()), 4)
                W, H = s.dimensions
                d["area_mm2"] = round(W * H * (s.mpp / 1000) ** 2, 3)
                d["tissue_mm2"] = round(d["area_mm2"] * d["tissue_fraction"], 3)
        except EdgepathError as exc:
            d = {"slide": p, "error": str(exc)}
        results.append(d)

    def human(data: dict[str, Any]) -> None:
        for d in data["slides"]:
            if "error" in d:
                continue
            click.secho(d["slide"], bold=True)
            W, H = d["dimensions"]
            click.echo(f"  vendor      {d['vendor']}")
            click.echo(f"  size        {W} x {H} px, {d['area_mm2']} mm²")
            click.echo(f"  mpp         {d['mpp']:g} µm/px ({d['mpp_source']})")
            click.echo(
                f"  tissue      {d['tissue_fraction']:.1%} of the slide, {d['tissue_mm2']} mm²"
            )
            for lv in d["levels"]:
                w, h = lv["dimensions"]
                click.echo(
                    f"  level {lv['level']}     {w} x {h} px, downsample "
                    f"{lv['downsample']:.4g}, {lv['mpp']:.4g} µm/px"
                )

    _finish(results, as_json=as_json, human=human)


@slides.command("tile")
@click.argument("slide_paths", metavar="SLIDE...", nargs=-1, required=True)
@click.option("--mpp", type=float, default=0.5, show_default=True, help="Target µm/px.")
@click.option("--tile-px", type=int, default=224, show_default=True, help="Tile side in px.")
@click.option(
    "--min-tissue",
    type=click.FloatRange(0, 1),
    default=None,
    help="Tissue fraction a tile needs [default: 0.5].",
)
@click.option("--allow-upsample", is_flag=True, help="Allow a target finer than the base.")
@click.option("--no-overlay", is_flag=True, help="Skip the overlay thumbnail PNGs.")
@click.option(
    "-o", "--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder."
)
@slide_mpp_option
@mpp_csv_option
@json_option
def tile(
    slide_paths: tuple[str, ...],
    mpp: float,
    tile_px: int,
    min_tissue: float | None,
    allow_upsample: bool,
    no_overlay: bool,
    out_dir: str,
    slide_mpp: float | None,
    mpp_csv: str | None,
    as_json: bool,
) -> None:
    """Tile each SLIDE at --mpp: OUT/<name>.h5 (coords, level-0 px) + OUT/<name>.png overlay.

    Failures are reported per slide; the other slides of a batch go on.
    """
    from edgepath.errors import SlideReadError
    from edgepath.slides import open_slide, tile_slide, write_coords
    from edgepath.slides.overlay import write_overlay
    from edgepath.slides.tiling import MIN_TISSUE

    table = _overrides(mpp_csv)
    out = Path(out_dir)
    thr = MIN_TISSUE if min_tissue is None else min_tissue
    results = []
    used: dict[str, str] = {}
    with progress() as bar:
        task = bar.add_task("tiling", total=len(slide_paths), rate="")
        for p in slide_paths:
            name = Path(p).name
            stem = Path(p).stem if Path(p).suffix else name
            try:
                if stem in used:
                    raise SlideReadError(
                        f"{p}: its output name {stem}.h5 is taken by {used[stem]} in this batch; "
                        "tile slides with the same name into different folders (-o)"
                    )
                used[stem] = p
                with open_slide(p, mpp=_override_for(p, slide_mpp, table)) as s:
                    grid = tile_slide(
                        s, mpp=mpp, tile_px=tile_px, min_tissue=thr, allow_upsample=allow_upsample
                    )
                    h5 = write_coords(out / f"{stem}.h5", grid)
                    png = None if no_overlay else write_overlay(grid, out / f"{stem}.png", slide=s)
                r = {
                    "slide": p,
                    "tiles": len(grid),
                    "mpp": grid.mpp,
                    "tile_px": grid.tile_px,
                    "level0_tile_size": grid.level0_tile_size,
                    "base_mpp": grid.base_mpp,
                    "mpp_source": grid.mpp_source,
                    "read_level": grid.level,
                    "coords": str(h5),
                    "overlay": str(png) if png else None,
                }
            except EdgepathError as exc:
                r = {"slide": p, "error": str(exc)}
            results.append(r)
            bar.update(task, advance=1, rate=f"{name}")

    def human(data: dict[str, Any]) -> None:
        for r in data["slides"]:
            if "error" not in r:
                click.echo(
                    f"{r['slide']}: {r['tiles']} tiles of {r['tile_px']} px at {r['mpp']:g} µm/px "
                    f"(base {r['base_mpp']:g} from {r['mpp_source']}, level-0 side "
                    f"{r['level0_tile_size']:.3f} px, read from level {r['read_level']}) "
                    f"-> {r['coords']}"
                )

    _finish(results, as_json=as_json, human=human)


@slides.command("synthesize")
@click.option(
    "-o", "--out", "out", required=True, type=click.Path(dir_okay=False), help="Output .tiff."
)
@click.option(
    "--tiles",
    type=click.IntRange(min=1),
    default=6000,
    show_default=True,
    help="About this many 0.5 µm/px, 224 px tissue tiles.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Layout and mosaic seed.")
@click.option("--base-mpp", type=float, default=None, help="Level-0 µm/px [default: 0.499].")
@click.option("--levels", type=click.IntRange(1, 8), default=4, show_default=True)
@json_option
def synthesize(
    out: str, tiles: int, seed: int, base_mpp: float | None, levels: int, as_json: bool
) -> None:
    """Write a pyramidal JPEG-tiled TIFF of real H&E (for tests and benchmarks)."""
    import time

    from edgepath.slides import open_slide, synthesize_slide

    t0 = time.perf_counter()
    path = synthesize_slide(out, tiles=tiles, seed=seed, mpp=base_mpp, levels=levels)
    seconds = time.perf_counter() - t0
    with open_slide(path) as s:
        d = s.info()
    d.update({"requested_tiles": tiles, "seconds": round(seconds, 2), "bytes": path.stat().st_size})

    def human(d: dict[str, Any]) -> None:
        W, H = d["dimensions"]
        click.echo(
            f"{d['slide']}: {W} x {H} px at {d['mpp']:g} µm/px, {len(d['levels'])} levels, "
            f"{d['bytes'] / 1e6:.1f} MB, about {tiles} tissue tiles at 0.5 µm/px "
            f"({d['seconds']:.1f} s)"
        )

    emit(d, as_json=as_json, human=human)
