"""``edgepath embed`` and ``edgepath watch``: slides in, one HDF5 feature file per slide out."""

from __future__ import annotations

import contextlib
import datetime as _dt
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import click

from edgepath.cli.common import device_option, emit, json_option, progress, quiet

ENGINES = ("auto", "onnxruntime", "openvino", "tensorrt", "torch")


def _default_workers() -> int:
    return max(1, min(4, (os.cpu_count() or 2) // 2))


def _common(f: Any) -> Any:
    options = [
        click.option(
            "-o",
            "--out",
            required=True,
            type=click.Path(file_okay=False),
            help="Folder of the feature files (<slide stem>.h5).",
        ),
        click.option(
            "--engine",
            type=click.Choice(ENGINES),
            default="auto",
            show_default=True,
            help="Runtime to run the model on.",
        ),
        device_option(),
        click.option(
            "--precision",
            type=click.Choice(["fp32", "fp16", "bf16"]),
            default="fp32",
            show_default=True,
            help="The torch engine's precision (fp16 / bf16 autocast: CUDA only); other engines "
            "run the artifact's own.",
        ),
        click.option(
            "--batch",
            type=click.IntRange(1),
            default=32,
            show_default=True,
            help="Tiles per engine call.",
        ),
        click.option(
            "--workers",
            type=click.IntRange(0),
            default=_default_workers,
            show_default="half the CPU cores, at most 4",
            help="Reader processes (read, decode, normalise); 0 reads inline.",
        ),
        click.option(
            "--threads",
            type=click.IntRange(1),
            default=None,
            help="Engine threads (default: the runtime's).",
        ),
        click.option(
            "--min-tissue",
            type=click.FloatRange(0, 1),
            default=None,
            help="Tissue fraction a tile needs (default: edgepath slides tile's).",
        ),
        click.option(
            "--slide-mpp",
            type=click.FloatRange(min=0, min_open=True),
            default=None,
            help="Level-0 µm/px for slides whose files do not record it.",
        ),
        click.option(
            "--mpp-csv",
            type=click.Path(exists=True, dir_okay=False),
            default=None,
            help="CSV with columns slide,mpp: per-slide level-0 µm/px (path, name or stem).",
        ),
        click.option(
            "--stale-after",
            type=click.FloatRange(min=1),
            default=120.0,
            show_default=True,
            help="Seconds without heartbeat before another process's lock is taken over.",
        ),
        json_option,
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


class BarReporter:
    """Two rich bars: slides (WSI/min) and the current slide's tiles (tiles/s)."""

    def __init__(self, bar: Any, *, n_slides: int | None) -> None:
        self.bar = bar
        self.t0 = time.perf_counter()
        self.done = 0
        self.tiles = 0
        self.slides = bar.add_task("slides", total=n_slides, rate="")
        self.current: Any = None
        self._t_slide = self.t0
        self._n_slide = 0

    def slide_started(self, slide: Path, n_tiles: int) -> None:
        if self.current is not None:
            self.bar.remove_task(self.current)
        self._t_slide, self._n_slide = time.perf_counter(), 0
        self.current = self.bar.add_task(slide.name[:40], total=n_tiles, rate="")

    def tiles_done(self, n: int) -> None:
        self._n_slide += n
        self.tiles += n
        dt = max(time.perf_counter() - self._t_slide, 1e-9)
        self.bar.update(self.current, advance=n, rate=f"{self._n_slide / dt:,.1f} tiles/s")

    def slide_finished(self, result: Any) -> None:
        if result.status == "busy":
            return
        if result.status == "done":
            self.done += 1
        minutes = max(time.perf_counter() - self.t0, 1e-9) / 60
        self.bar.update(self.slides, advance=1, rate=f"{self.done / minutes:,.2f} WSI/min")


class LineReporter:
    """One log line per slide on stderr (watch mode, and batch runs without a terminal)."""

    def slide_started(self, slide: Path, n_tiles: int) -> None:
        pass

    def tiles_done(self, n: int) -> None:
        pass

    def slide_finished(self, result: Any) -> None:
        click.echo(_line(result), err=True)


def _line(r: Any) -> str:
    now = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    name = Path(r.slide).name
    if r.status == "done":
        what = f"{r.n_tiles} tiles in {r.seconds:.1f} s ({r.tiles_per_s:.1f} tiles/s) -> {r.output}"
    elif r.status == "skipped":
        what = f"already done -> {r.output}"
    elif r.status == "busy":
        what = "being embedded by another process"
    else:
        what = r.error or "failed"
    return f"{now} {r.status:<7} {name}: {what}"


@contextlib.contextmanager
def _stop_on_signals(embedder: Any) -> Iterator[None]:
    """SIGTERM/SIGINT: stop cleanly after the current batch; a second Ctrl-C aborts at once."""
    old = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}

    def handler(signum: int, frame: Any) -> None:
        if embedder.stopping and signum == signal.SIGINT:
            raise KeyboardInterrupt
        click.echo(f"{signal.Signals(signum).name}: stopping after the current batch", err=True)
        embedder.request_stop()

    for s in old:
        signal.signal(s, handler)
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def _embedder(model: str, out: str, opts: dict[str, Any], *, force: bool, reporter: Any) -> Any:
    from edgepath.embed.model import open_model
    from edgepath.embed.run import Embedder
    from edgepath.slides import read_mpp_csv

    engine, info = open_model(
        model,
        engine=opts["engine"],
        threads=opts["threads"],
        device=opts["device"],
        precision=opts["precision"],
    )
    return Embedder(
        engine,
        info,
        out,
        batch=opts["batch"],
        workers=opts["workers"],
        min_tissue=opts["min_tissue"],
        slide_mpp=opts["slide_mpp"],
        mpp_overrides=read_mpp_csv(opts["mpp_csv"]) if opts["mpp_csv"] else None,
        force=force,
        coords_dir=opts.get("coords"),
        stale_after=opts["stale_after"],
        reporter=reporter,
    )


def _human(summary: dict[str, Any]) -> None:
    click.echo(
        f"{summary['slides']} slides: {summary['done']} embedded, {summary['skipped']} already "
        f"done, {summary['busy']} taken by other processes, {summary['failed']} failed; "
        f"{summary['tiles']} tiles in {summary['seconds']:.1f} s "
        f"({summary['tiles_per_s']:.1f} tiles/s, {summary['wsi_per_min']:.2f} WSI/min)"
    )
    for f in summary["failures"]:
        click.echo(f"  failed: {f['slide']}: {f['error']}")
    if summary["interrupted"]:
        click.echo("  stopped early by a signal; rerun to finish (finished slides are kept)")


def _human_watch(summary: dict[str, Any]) -> None:
    click.echo(
        f"{summary['slides']} slides in {summary['seconds']:.0f} s of watching: "
        f"{summary['done']} embedded, {summary['skipped']} already done, {summary['failed']} "
        f"failed; {summary['tiles']} tiles in {summary['embedding_seconds']:.1f} s of embedding "
        f"({summary['embedding_tiles_per_s']:.1f} tiles/s)"
    )
    for f in summary["failures"]:
        click.echo(f"  failed: {f['slide']}: {f['error']}")


@click.command("embed")
@click.argument("model")
@click.argument("slides", nargs=-1, required=True, type=click.Path())
@_common
@click.option("--force", is_flag=True, help="Recompute slides whose feature file is up to date.")
@click.option(
    "--coords",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="Reuse existing patch files instead of tiling: TRIDENT's <slide>_patches.h5, CLAM's or "
    "edgepath slides tile's <slide>.h5, in DIR or DIR/patches (coords N×2 level-0 + "
    "patch_size_level0, or CLAM's patch_size at patch_level; must match the model's mpp).",
)
@click.option(
    "--shard",
    default=None,
    metavar="I/N",
    help="Embed shard I of N (0 <= I < N) of the slides, split by feature-file name: a SLURM "
    "array task per shard (--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT). Shards are "
    "disjoint and cover every slide once when all tasks get the same SLIDES.",
)
def embed(
    model: str,
    slides: tuple[str, ...],
    out: str,
    force: bool,
    as_json: bool,
    shard: str | None,
    **opts: Any,
) -> None:
    """Embed SLIDES (files or folders) with MODEL into one HDF5 feature file per slide.

    MODEL is an artifact folder (distill / quantize / export output), a teacher card or a student
    name, optionally at another mpp (vit-s14@2.0). Tiles are cut on tissue at the model's mpp
    and tile size (or taken from --coords). Finished slides are skipped on rerun; several
    processes can share the same inputs and -o folder. Exit code 3 if any slide failed (the
    others are still done), 130 if stopped by a signal.

    \b
    Feature files: features (N×D) and coords (N×2, level-0 px) with TRIDENT's attributes on
    coords (patch_size, patch_size_level0, level0_magnification, target_magnification, overlap,
    level0_width, level0_height, name; magnification = 10 / mpp as TRIDENT rounds it), CLAM's
    patch_level, and TRIDENT's encoder and name on features (docs/embed.md).
    """
    from edgepath.embed.jobs import find_slides, parse_shard
    from edgepath.embed.jobs import shard as take_shard

    part = parse_shard(shard) if shard is not None else None
    paths = find_slides(list(slides))
    if part is not None:
        total = len(paths)
        paths = take_shard(paths, *part)
        if not as_json:
            click.echo(f"shard {part[0]}/{part[1]}: {len(paths)} of {total} slides", err=True)
    bars = not (as_json or quiet())
    bar = progress(disable=not bars)
    with bar:
        reporter = BarReporter(bar, n_slides=len(paths)) if bars else LineReporter()
        with (
            _embedder(model, out, opts, force=force, reporter=reporter) as emb,
            _stop_on_signals(emb),
        ):
            summary = emb.run(paths)
    data = summary.to_dict()
    if part is not None:
        data["shard"] = f"{part[0]}/{part[1]}"
    emit(data, as_json=as_json, human=_human)
    if summary.error:
        click.echo(f"error: {summary.error}", err=True)
    if summary.exit_code:
        raise SystemExit(summary.exit_code)


@click.command("watch")
@click.argument("inbox", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--model",
    "-m",
    required=True,
    help="Artifact folder, teacher card, or student name[@mpp] (e.g. vit-s14@2.0).",
)
@_common
@click.option(
    "--poll",
    type=click.FloatRange(min=0.05),
    default=5.0,
    show_default=True,
    help="Seconds between scans of INBOX.",
)
@click.option(
    "--settle",
    type=click.FloatRange(min=0),
    default=30.0,
    show_default=True,
    help="Seconds a file's size and mtime must stay unchanged before it is embedded.",
)
@click.option(
    "--max-slides",
    type=click.IntRange(1),
    default=None,
    help="Exit after handling this many slides (one-shot jobs).",
)
def watch(
    inbox: str,
    model: str,
    out: str,
    as_json: bool,
    poll: float,
    settle: float,
    max_slides: int | None,
    **opts: Any,
) -> None:
    """Embed slides as they arrive in INBOX, once each, after they stop growing.

    One log line per slide on stderr; SIGTERM or Ctrl-C stops cleanly with exit code 0 (the
    current slide is dropped, not half-written, and redone on the next start). Bad slides are
    logged, counted in the final summary and not retried until their file changes.
    """
    from edgepath.embed.watch import watch as run_watch

    with _embedder(model, out, opts, force=False, reporter=LineReporter()) as emb:
        click.echo(f"watching {inbox} -> {out} (Ctrl-C or SIGTERM to stop)", err=True)
        with _stop_on_signals(emb):
            summary = run_watch(emb, inbox, poll=poll, settle=settle, max_slides=max_slides)
    data = summary.to_dict()
    data["interrupted"], data["exit_code"] = False, 0  # a stop is how a watch ends
    emit(data, as_json=as_json, human=_human_watch)
