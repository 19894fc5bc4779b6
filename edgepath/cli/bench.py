"""``edgepath bench``: throughput and WSI/min, robustness (PLISM or synthetic), fidelity."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import click

from edgepath.cli.common import device_option, emit, json_option, progress, results_out_option
from edgepath.errors import ConfigError

log = logging.getLogger(__name__)


def _csv(value: str, *, what: str, allowed: tuple[str, ...] | None = None) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise ConfigError(f"--{what} is empty; give a comma-separated list")
    if allowed:
        bad = [v for v in items if v not in allowed]
        if bad:
            raise ConfigError(f"--{what} {bad[0]!r}: expected one of {', '.join(allowed)}")
    return items


def _ints(value: str, *, what: str) -> list[int]:
    try:
        out = [int(v) for v in _csv(value, what=what)]
    except ValueError:
        raise ConfigError(f"--{what} {value!r}: expected integers such as 1,16") from None
    if any(v < 1 for v in out):
        raise ConfigError(f"--{what} values must be at least 1")
    return out


class _Steps:
    """A rich status line for benchmark steps (off when quiet or with --json)."""

    def __init__(self, disable: bool) -> None:
        self.bar = progress(transient=True, disable=disable)
        self.task: Any = None

    def __enter__(self) -> _Steps:
        self.bar.__enter__()
        self.task = self.bar.add_task("bench", total=None, rate="")
        return self

    def __exit__(self, *exc: object) -> None:
        self.bar.__exit__(*exc)

    def step(self, text: str) -> None:
        log.info("%s", text)
        self.bar.update(self.task, description=text)

    def count(self, text: str, done: int, total: int) -> None:
        self.bar.update(self.task, description=text, completed=done, total=total)


@click.group()
def bench() -> None:
    """Measure models: throughput and WSI/min, robustness, fidelity."""


ENGINES = ("torch", "onnxruntime", "openvino", "tensorrt")


@bench.command("throughput")
@click.argument("models", nargs=-1, required=True)
@click.option(
    "--engines",
    default="torch,onnxruntime,openvino",
    show_default=True,
    help="Comma-separated engines.",
)
@click.option(
    "--precision",
    "precisions",
    default="fp32,int8",
    show_default=True,
    help="Comma-separated precisions (fp32, int8; fp16 and bf16: the torch engine on CUDA).",
)
@click.option(
    "--batch", "batches", default="16", show_default=True, help="Batch size(s), e.g. 1,16."
)
@click.option(
    "--threads",
    type=click.IntRange(1),
    default=2,
    show_default=True,
    help="Intra-op threads for every engine.",
)
@click.option(
    "--warmup",
    type=click.IntRange(0),
    default=1,
    show_default=True,
    help="Untimed batches per variant.",
)
@click.option(
    "--rounds",
    type=click.IntRange(1),
    default=3,
    show_default=True,
    help="Interleaved rounds over all variants.",
)
@click.option(
    "--per-round",
    type=click.IntRange(1),
    default=2,
    show_default=True,
    help="Timed batches per variant per round.",
)
@click.option(
    "--slide",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="WSI/min from this slide's tissue tiles at each model's mpp.",
)
@click.option(
    "--tiles-per-slide",
    type=click.IntRange(1),
    default=None,
    help="WSI/min for this many tiles per slide at each model's own mpp.",
)
@click.option(
    "--tissue-mm2",
    type=float,
    default=150.0,
    show_default=True,
    help="WSI/min for this tissue area when neither --slide nor --tiles-per-slide.",
)
@click.option("--no-ceiling", is_flag=True, help="Skip the GEMM ceiling micro-benchmark.")
@device_option(default="cpu")
@click.option(
    "--compile",
    "compile_",
    is_flag=True,
    help="torch.compile the torch engine's encoder (compiled during the warm-up batches).",
)
@click.option(
    "--workdir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Keep exported/quantized variants here and reuse those already there "
    "(default: a temporary folder).",
)
@click.option(
    "--compare",
    is_flag=True,
    help="Two MODELS: teacher (torch fp32) vs student (fastest of --engines x "
    "--precision) on --slide, each at its own mpp; WSI/min ratio.",
)
@click.option(
    "--workers",
    type=click.IntRange(0),
    default=1,
    show_default=True,
    help="Reader workers for the end-to-end runs (--compare, --end-to-end).",
)
@click.option(
    "--end-to-end",
    "end_to_end",
    is_flag=True,
    help="Also embed --slide with each row's engine (edgepath embed, first --batch): "
    "end-to-end tiles/s and its ratio to the engine's own.",
)
@results_out_option
@json_option
def throughput(
    models: tuple[str, ...],
    engines: str,
    precisions: str,
    batches: str,
    threads: int,
    warmup: int,
    rounds: int,
    per_round: int,
    slide: Path | None,
    tiles_per_slide: int | None,
    tissue_mm2: float,
    no_ceiling: bool,
    device: str,
    compile_: bool,
    workdir: Path | None,
    compare: bool,
    workers: int,
    end_to_end: bool,
    out: Path | None,
    as_json: bool,
) -> None:
    """Tiles/s, latency, memory, FLOPs and GEMM-ceiling fraction, WSI/min of MODELS.

    MODEL is an artifact folder, a teacher card (random weights: throughput needs only the
    architecture) or a student name with random weights, optionally at an mpp: vit-s14@2.0.

    \b
      edgepath bench throughput vit-s14 uni2-h --engines torch --device cuda \\
          --precision fp32,bf16,fp16 --batch 64,256
    """
    eng = _csv(engines, what="engines", allowed=ENGINES)
    prec = _csv(precisions, what="precision", allowed=("fp32", "fp16", "bf16", "int8"))
    sizes = _ints(batches, what="batch")
    with _Steps(disable=as_json or None) as steps:
        if compare:
            from edgepath.bench.compare import run_compare

            if len(models) != 2 or slide is None:
                raise ConfigError("--compare takes two MODELS (teacher, student) and --slide")
            if device != "cpu" or compile_:
                raise ConfigError("--compare runs on CPU engines; drop --device and --compile")
            result = run_compare(
                models[0],
                models[1],
                slide=slide,
                engines=[e for e in eng if e != "torch"] or eng,
                precisions=prec,
                batch=sizes[0],
                threads=threads,
                warmup=warmup,
                rounds=rounds,
                per_round=per_round,
                workers=workers,
                on_step=steps.step,
            )
        else:
            from edgepath.bench.throughput import run_throughput

            result = run_throughput(
                models,
                engines=eng,
                precisions=prec,
                batches=sizes,
                threads=threads,
                warmup=warmup,
                rounds=rounds,
                per_round=per_round,
                slide=slide,
                tiles_per_slide=tiles_per_slide,
                tissue_mm2=tissue_mm2,
                ceiling=not no_ceiling,
                workdir=workdir,
                device=device,
                compile=compile_,
                end_to_end=end_to_end,
                workers=workers,
                on_step=steps.step,
            )
    if out is not None:
        from edgepath.bench.results import write_result

        result["path"] = str(write_result(out, result))
    emit(result, as_json=as_json, human=_human_compare if compare else _human_throughput)


def _fmt(v: Any, spec: str = ".1f") -> str:
    return "-" if v is None else format(v, spec)


def _repeats(values: list[float] | None) -> str:
    """`` (repeats 1.63-1.83x)``: the spread of per-repeat ratios, or nothing."""
    if not values:
        return ""
    return f" (repeats {min(values):.2f}-{max(values):.2f}x)"


def _human_throughput(d: dict[str, Any]) -> None:
    m = d["machine"]
    click.secho(
        f"{m['cpu']}, {m['cores']} cores {'/'.join(m['cpu_features'])}, "
        f"{d['settings']['threads']} threads",
        bold=True,
    )
    if str(d["settings"].get("device", "cpu")).startswith("cuda") and m.get("cuda"):
        c = m["cuda"]
        click.secho(
            f"torch engine on {c['device_name']} (compute {c['compute_capability']}, "
            f"{c['memory_gb']} GB), torch {m['versions'].get('torch')}, CUDA {c['cuda']}, "
            f"fp32 matmul {c['fp32_matmul']}",
            bold=True,
        )
    click.echo(
        f"{'model':<18} {'engine':<12} {'prec':<5} {'batch':>5} {'tiles/s':>8} "
        f"{'p50 ms':>8} {'p95 ms':>8} {'×torch':>6} {'GFLOP/s':>8} {'ceil%':>6} {'roof%':>6} "
        f"{'WSI/min':>8} {'RSS MB':>7}"
    )
    for r in d["rows"]:
        rw = "*" if r["random_weights"] else ""
        ceil = None if r["ceiling_fraction"] is None else 100 * r["ceiling_fraction"]
        roof = None if r.get("roofline_fraction") is None else 100 * r["roofline_fraction"]
        click.echo(
            f"{(r['model'] + rw)[:18]:<18} {r['engine']:<12} {r['precision']:<5} {r['batch']:>5} "
            f"{r['tiles_per_s']:>8.3g} {r['latency_ms_p50']:>8.0f} {r['latency_ms_p95']:>8.0f} "
            f"{_fmt(r['speedup_vs_torch_fp32'], '.2f'):>6} {r['achieved_gflops']:>8.1f} "
            f"{_fmt(ceil, '.0f'):>6} {_fmt(roof, '.0f'):>6} {r['wsi_per_min']:>8.3f} "
            f"{_fmt(r['peak_rss_mb'], '.0f'):>7}"
        )
    click.echo("* random weights (throughput needs only the architecture)")
    click.echo(
        "ceil%: all FLOPs at the GEMM ceiling of the row's precision; roof%: per-op roofline, "
        "INT8 Linear layers at the INT8 ceiling, attention and patch embedding at FP32's"
    )
    for c in d["ceilings"]:
        click.echo(
            f"GEMM ceiling {c['engine']} {c['precision']} ({c['kernel']}, {c['model']} "
            f"shapes, batch {c['batch']}): {c['gflops']:.1f} GFLOP/s"
        )
    for r in d["rows"]:
        if r.get("end_to_end_tiles_per_s"):
            click.echo(
                f"end to end ({r['end_to_end']['workers']} reader(s), {r['end_to_end']['n_tiles']} "
                f"tiles): {r['model']} {r['engine']} {r['precision']} batch {r['batch']}: "
                f"{r['end_to_end_tiles_per_s']:.3g} tiles/s = "
                f"{r['end_to_end_ratio']:.3f}x the engine alone"
            )
    if d["rows"]:
        r = d["rows"][0]
        click.echo(f"WSI/min basis: {r['tiles_per_slide']} tiles ({r['tiles_per_slide_basis']})")
    for s in d.get("skipped", []):
        click.echo(f"skipped: {s}")
    if d.get("path"):
        click.echo(f"wrote {d['path']}")


def _human_compare(d: dict[str, Any]) -> None:
    ref, cand = d["reference"], d["candidate"]
    click.secho(f"{Path(d['slide']).name} {d.get('slide_dimensions')}", bold=True)
    for r in d["rows"]:
        click.echo(
            f"  {r['model']:<16} {r['engine']:<12} {r['precision']:<5} {r['mpp']:>4} mpp "
            f"{r['tiles_per_slide']:>7} tiles {r['tiles_per_s']:>8.1f} tiles/s "
            f"{r['wsi_per_min']:>9.3f} WSI/min (computed)"
        )
    e2e = d["end_to_end"]
    click.echo(
        f"  {cand['model']} {cand['best']} end to end: {e2e['candidate']['seconds']:.1f} s "
        f"per slide = {e2e['candidate']['wsi_per_min']:.2f} WSI/min"
    )
    if e2e.get("reference_skipped"):
        click.echo(f"  {ref['model']} end to end skipped: {e2e['reference_skipped']}")
    click.secho(
        f"WSI/min ratio: {d['ratio_computed']:.0f}x computed, "
        f"{d['ratio_end_to_end']:.0f}x end to end ({d['ratio_end_to_end_basis']})",
        bold=True,
    )
    if d.get("path"):
        click.echo(f"wrote {d['path']}")


def _tiles(value: str | None) -> int | None:
    """``--tiles``: a tile count (at least 11) or ``all``; None when not given."""
    if value is None:
        return None
    if value.strip().lower() == "all":
        from edgepath.eval.plismbench import PLISM_TILES

        return PLISM_TILES
    try:
        n = int(value)
    except ValueError:
        raise ConfigError(
            f"--tiles {value!r}: expected 460, 2713, 5426, 8139, all or a count"
        ) from None
    if n < 11:
        raise ConfigError(f"--tiles {n}: top-10 needs at least 11 aligned tiles")
    return n


@bench.command("robustness")
@click.argument("model", required=False)
@click.option(
    "--plism",
    "plism_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="PLISM folder (per-slide HDF5 or tile folders); without --plism or --features, "
    "the synthetic suite.",
)
@click.option(
    "--features",
    "features_dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="Score plismbench's features instead of a MODEL: its extractor folder, one "
    "subfolder per slide with features.npy.",
)
@click.option(
    "--tiles",
    "tiles",
    metavar="N|all",
    default=None,
    help="Aligned tiles per slide. 460, 2713, 5426, 8139: plismbench's subset files; all: "
    "16,278; other sizes, or slides without plismbench's tile ids: a seeded subset. "
    "[PLISM and --features: 8139, plismbench's default and its leaderboard's (all tiles "
    "when there are fewer); synthetic suite: all]",
)
@click.option(
    "--precision",
    type=click.Choice(["float16", "float32"]),
    default=None,
    help="Metric arithmetic: float16 reproduces plismbench's numbers, float32 is exact. "
    "[PLISM and --features: float16; synthetic suite: float32]",
)
@click.option(
    "--save-features",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="With --plism: also write every aligned tile's embedding as plismbench's "
    "OUT/{slide}/features.npy (all 16,278 rows), for plismbench's own evaluate.",
)
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of a seeded subset.")
@click.option("--engine", default="auto", show_default=True)
@device_option()
@click.option("--threads", type=click.IntRange(1), default=None)
@click.option("--batch", type=click.IntRange(1), default=32, show_default=True)
@click.option("--random-weights", is_flag=True, help="Allow a teacher without weights (labelled).")
@results_out_option
@json_option
def robustness(
    model: str | None,
    plism_dir: Path | None,
    features_dir: Path | None,
    tiles: str | None,
    precision: str | None,
    save_features: Path | None,
    seed: int,
    engine: str,
    device: str,
    threads: int | None,
    batch: int,
    random_weights: bool,
    out: Path | None,
    as_json: bool,
) -> None:
    """PLISM robustness (cosine, top-k over slide pairs, score) of MODEL, placed on the
    published PLISM leaderboard when the protocol is plismbench's.

    Without --plism or --features, runs the synthetic stain/scanner domain suite on the
    shipped real tiles. With -o, PLISM runs also write plismbench's results.csv under
    OUT/plismbench/{tiles}_tiles/{name}/.

    \b
      edgepath bench robustness my-student/ --plism /data/plism -o runs/robust
      edgepath bench robustness --features /data/plism-features/h0_mini --json
    """
    n_tiles = _tiles(tiles)
    _check_robustness_args(model, plism_dir, features_dir, save_features)
    prec = precision or ("float32" if plism_dir is None and features_dir is None else "float16")
    with _Steps(disable=as_json or None) as steps:
        if features_dir is not None:
            from edgepath.eval.robustness import features_robustness

            res = features_robustness(
                features_dir, n_tiles=n_tiles, seed=seed, precision=prec, on_progress=steps.count
            )
            info = _features_label(features_dir)
        else:
            res, info = _run_model_robustness(
                model or "",
                plism_dir,
                n_tiles=n_tiles,
                seed=seed,
                precision=prec,
                save_features=save_features,
                engine=engine,
                device=device,
                threads=threads,
                batch=batch,
                random_weights=random_weights,
                on_progress=steps.count,
            )
    _finish_robustness(res, info, threads=threads, out=out, as_json=as_json)


def _check_robustness_args(
    model: str | None, plism_dir: Path | None, features_dir: Path | None, save: Path | None
) -> None:
    if features_dir is not None and (model or plism_dir is not None):
        raise ConfigError("--features scores saved features: give it without MODEL and --plism")
    if features_dir is None and not model:
        raise ConfigError("give a MODEL to embed, or --features DIR with plismbench's features")
    if save is not None and plism_dir is None:
        raise ConfigError("--save-features writes the PLISM tiles' features: it needs --plism DIR")


def _features_label(folder: Path) -> dict[str, Any]:
    """The 'model' of a --features run: plismbench's extractor folder."""
    return {
        "name": folder.resolve().name,
        "source": "plismbench features.npy",
        "random_weights": False,
        "engine": "features.npy",
        "precision": "as saved",
    }


def _run_model_robustness(
    model: str, plism_dir: Path | None, **kw: Any
) -> tuple[dict[str, Any], dict[str, Any]]:
    from edgepath.eval.embedding import open_measured
    from edgepath.eval.robustness import plism_robustness, synthetic_robustness

    eng, info = open_measured(
        model,
        engine=kw.pop("engine"),
        threads=kw.pop("threads"),
        random_weights=kw.pop("random_weights"),
        device=kw.pop("device"),
    )
    with eng:
        if plism_dir is not None:
            return plism_robustness(eng, plism_dir, **kw), info
        kw.pop("save_features")
        n = kw.pop("n_tiles")
        return synthetic_robustness(eng, n_tiles=n, **kw), info


def _finish_robustness(
    res: dict[str, Any],
    info: dict[str, Any],
    *,
    threads: int | None,
    out: Path | None,
    as_json: bool,
) -> None:
    from edgepath.bench.results import write_result
    from edgepath.eval.robustness import as_result, write_results_csv

    result = as_result(res, info, threads=threads)
    if out is not None:
        if result["suite"] == "plism":
            csv_path = write_results_csv(result, out, info["name"])
            result["results_csv"] = str(csv_path)
        result["path"] = str(write_result(out, result, label=f"{info['name']}-{res['suite']}"))
    emit(result, as_json=as_json, human=_human_robustness)


def _human_robustness(d: dict[str, Any]) -> None:
    m = d["model"]
    rw = " (random weights)" if m["random_weights"] else ""
    ran = m["source"] if m["engine"] == "features.npy" else f"on {m['engine']} {m['precision']}"
    click.secho(
        f"{m['name']}{rw} {ran}: {d['suite']} suite, "
        f"{d['n_slides']} slides/domains, {d['n_tiles']} aligned tiles, "
        f"{d['n_pairs']} pairs, {d['precision']} metrics",
        bold=True,
    )
    click.echo(f"tiles: {_protocol_line(d.get('protocol', {}))}")
    click.echo(f"{'group':<15} {'pairs':>5} {'cosine':>14} {'top1':>14} {'top10':>14}")
    for g, st in d["groups"].items():
        cells = [f"{st[k]['median']:.3f}±{st[k]['iqr']:.3f}" for k in ("cosine", "top1", "top10")]
        click.echo(f"{g:<15} {st['cosine']['n']:>5} " + " ".join(f"{c:>14}" for c in cells))
    click.echo("(median ± IQR over pairs)")
    click.secho(f"score: {d['score']:.3f}", bold=True)
    lb = d.get("leaderboard")
    if lb and lb["comparable"]:
        click.echo(f"PLISM leaderboard: place {lb['place']} of {lb['of'] + 1} ({lb['source']})")
    elif lb:
        click.echo("not ranked on the PLISM leaderboard: " + "; ".join(lb["differences"]))
    for k in ("results_csv", "path"):
        if d.get(k):
            click.echo(f"wrote {d[k]}")


def _protocol_line(p: dict[str, Any]) -> str:
    if p.get("subset") == "plismbench":
        how = f"plismbench's {p['subset_file']}"
    elif p.get("subset") == "seeded":
        how = f"seeded subset (seed {p.get('subset_seed')})"
    else:
        how = "all aligned tiles"
    note = f" ({p['subset_note']})" if p.get("subset_note") else ""
    return f"{how}{note}; order: {p.get('order', '?')}"


@bench.command("fidelity")
@click.argument("candidate")
@click.argument("reference")
@click.option(
    "--tiles",
    "source",
    default="sample",
    show_default=True,
    help="'sample' (shipped real tiles), a folder of images, or a slide.",
)
@click.option("--max-tiles", type=click.IntRange(11), default=512, show_default=True)
@click.option("--engine-a", default="auto", show_default=True, help="Engine of CANDIDATE.")
@click.option("--engine-b", default="auto", show_default=True, help="Engine of REFERENCE.")
@device_option()
@click.option("--threads", type=click.IntRange(1), default=None)
@click.option("--random-weights", is_flag=True, help="Allow a teacher without weights (labelled).")
@results_out_option
@json_option
def fidelity(
    candidate: str,
    reference: str,
    source: str,
    max_tiles: int,
    engine_a: str,
    engine_b: str,
    device: str,
    threads: int | None,
    random_weights: bool,
    out: Path | None,
    as_json: bool,
) -> None:
    """Embedding agreement of CANDIDATE with REFERENCE on the same tiles.

    Cosine (raw, centered), kNN top-10 agreement and linear CKA: student vs teacher, or a
    quantized artifact vs its float parent.
    """
    from edgepath.eval.embedding import open_measured
    from edgepath.eval.fidelity import as_result, fidelity_run, load_tiles

    a, ia = open_measured(
        candidate, engine=engine_a, threads=threads, random_weights=random_weights, device=device
    )
    b, ib = open_measured(
        reference, engine=engine_b, threads=threads, random_weights=random_weights, device=device
    )
    with a, b:
        tiles, desc = load_tiles(
            source, tile_px=max(ia["tile_px"], ib["tile_px"]), max_tiles=max_tiles
        )
        res = fidelity_run(a, b, tiles)
    result = as_result(res, ia, ib, tiles=desc)
    if out is not None:
        from edgepath.bench.results import write_result

        result["path"] = str(write_result(out, result, label=f"{ia['name']}-vs-{ib['name']}"))

    def human(d: dict[str, Any]) -> None:
        click.secho(
            f"{d['candidate']['name']} ({d['candidate']['engine']} "
            f"{d['candidate']['precision']}) vs {d['reference']['name']} "
            f"({d['reference']['engine']} {d['reference']['precision']}): {d['tiles']}",
            bold=True,
        )
        for k in ("cosine", "cosine_p1", "centered_cosine", "knn10_agreement", "cka"):
            click.echo(f"  {k:<16} {_fmt(d.get(k), '.4f')}")
        if d.get("path"):
            click.echo(f"wrote {d['path']}")

    emit(result, as_json=as_json, human=human)


@bench.command("distill")
@click.argument("recipe")
@click.option(
    "--teacher",
    "teachers",
    multiple=True,
    metavar="CARD",
    help="Teacher card replacing the recipe's (repeat for expert); without weights it runs "
    "with seeded random weights, labelled: speed needs only the architecture.",
)
@click.option("--student", metavar="NAME", help="Student replacing the recipe's (vit-s14 …).")
@click.option(
    "--slides",
    type=click.Path(exists=True, path_type=Path),
    help="Slides folder or one slide [default: the shipped sample and a synthesized slide].",
)
@click.option("--steps", type=click.IntRange(1), default=6, show_default=True, help="Timed steps.")
@click.option(
    "--warmup", type=click.IntRange(0), default=2, show_default=True, help="Untimed steps first."
)
@click.option(
    "--batch-size",
    type=click.IntRange(1),
    default=None,
    help="Per-process batch [default: the card's].",
)
@device_option(help="Where training runs (auto: cuda when torch sees a GPU).")
@click.option("--threads", type=click.IntRange(1), default=None, help="torch CPU threads.")
@click.option("--no-cached", is_flag=True, help="Skip the run that reads the teacher cache.")
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Any recipe override, as for edgepath distill.",
)
@results_out_option
@json_option
def distill_speed_cmd(
    recipe: str,
    teachers: tuple[str, ...],
    student: str | None,
    slides: Path | None,
    steps: int,
    warmup: int,
    batch_size: int | None,
    device: str,
    threads: int | None,
    no_cached: bool,
    overrides: tuple[str, ...],
    out: Path | None,
    as_json: bool,
) -> None:
    """Training speed of RECIPE: steps/s, items/s, peak memory, time per phase, cache gain.

    Runs the trainer itself for WARMUP + STEPS steps in one process, with the teacher live
    (a first epoch) and then from the teacher-feature cache (later epochs), and reports
    medians over the timed steps.

    \b
      edgepath bench distill xmag-demo --steps 6 --json
      edgepath bench distill xmag --teacher uni2-h --student vit-b14 --device cuda
    """
    from edgepath.bench.distill import distill_speed

    if threads:
        import torch

        torch.set_num_threads(threads)
    with _Steps(disable=as_json or None) as st:
        result = distill_speed(
            recipe,
            teachers=teachers,
            student=student,
            slides=slides,
            steps=steps,
            warmup=warmup,
            batch_size=batch_size,
            device=device,
            cached=not no_cached,
            overrides=list(overrides),
            on_status=st.step,
        )
    if out is not None:
        from edgepath.bench.results import write_result

        label = f"{result['card']}-{result['student']}"
        result["path"] = str(write_result(out, result, label=label))
    emit(result, as_json=as_json, human=_human_distill)


def _human_distill(d: dict[str, Any]) -> None:
    ts = ", ".join(f"{t['card']} ({t['params_m']} M, {t['weights']})" for t in d["teachers"])
    click.secho(
        f"{d['card']}: {ts} -> {d['student']} ({d['student_params_m']} M) on {d['device_name']} "
        f"({d['device']}, {d['precision']}), batch {d['batch_size']} {d['items']}",
        bold=True,
    )
    rows = [("live teacher", d["live"])]
    if "cached" in d:
        rows.append(("teacher cache", d["cached"]))
    for name, r in rows:
        split = ", ".join(f"{k} {v:.0%}" for k, v in r["phase_share"].items() if v >= 0.005)
        click.echo(
            f"  {name:<14} {r['steps_per_s']:.3f} steps/s  {r['items_per_s']:.2f} {d['items']}/s"
            f"  ({split})"
        )
    if d.get("cache_build"):
        cb = d["cache_build"]
        click.echo(
            f"  cache build    {cb['items']} items in {cb['seconds']:.1f} s "
            f"({cb['items_per_s']:.2f}/s); cached steps {d['cache_speedup']:.1f}x faster"
        )
    click.echo(f"  peak memory    {d['peak_memory_mb']:.0f} MB ({d['peak_memory_kind']})")
    if d.get("path"):
        click.echo(f"wrote {d['path']}")


@bench.command("read")
@click.argument("slides", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--mpp", type=float, default=0.5, show_default=True, help="Tile µm/px.")
@click.option("--tile-px", type=click.IntRange(8), default=224, show_default=True)
@click.option(
    "--workers",
    "workers_csv",
    default="1,2",
    show_default=True,
    help="Reader process counts to measure, comma-separated.",
)
@click.option("--batch", type=click.IntRange(1), default=32, show_default=True)
@click.option(
    "--repeats",
    type=click.IntRange(1),
    default=3,
    show_default=True,
    help="Side-by-side repeats (medians reported; the decode limit is its fastest repeat).",
)
@click.option("--max-tiles", type=click.IntRange(1), default=None, help="First N tiles only.")
@json_option
def read_cmd(
    slides: tuple[Path, ...],
    mpp: float,
    tile_px: int,
    workers_csv: str,
    batch: int,
    repeats: int,
    max_tiles: int | None,
    as_json: bool,
) -> None:
    """The tile reader alone, without a model: tiles/s per worker count against the plain
    baseline (OpenSlide read_region + PIL resize) and the decode-only limit (the slide's JPEG
    tiles under the tiles, each decoded once, nothing else; its fastest repeat).

    Each worker count keeps one reader pool, as `embed` does for all its slides: rows are the
    passes after its first (every slide after a run's first); the first pass is reported too.

    \b
      edgepath bench read slide.svs --mpp 0.5 --workers 1,2 --json
    """
    from edgepath.bench.read import run_read

    workers = _ints(workers_csv, what="workers")
    with _Steps(disable=as_json or None) as steps:
        result = run_read(
            slides,
            mpp=mpp,
            tile_px=tile_px,
            workers=workers,
            batch=batch,
            repeats=repeats,
            max_tiles=max_tiles,
            on_step=steps.step,
        )
    emit(result, as_json=as_json, human=_human_read)


def _human_read(d: dict[str, Any]) -> None:
    m, st = d["machine"], d["settings"]
    click.secho(
        f"{d['date']}  {m['cpu']}, {m['cores']} cores {'/'.join(m['cpu_features'])}; "
        f"{st['mpp']:g} µm/px, {st['tile_px']} px, batch {st['batch']}, medians of "
        f"{st['repeats']}",
        bold=True,
    )
    for s in d["slides"]:
        dl = s["decode_limit"]
        click.echo(
            f"{Path(s['slide']).name}: {s['tiles']} tiles from level {s['level']} "
            f"({'resized' if s['resize'] else 'no resize'}); tissue detection + tiling "
            f"{s['tissue_s']:.2f} s"
        )
        click.echo(
            f"  baseline (read_region + PIL resize)  {s['baseline']['tiles_per_s']:8.0f} tiles/s"
        )
        click.echo(
            f"  decode limit ({_fmt(dl.get('tiff_tiles'), 'd') if dl.get('tiff_tiles') else '-'} "
            f"TIFF tiles)        {_fmt(dl['tiles_per_s'], '8.0f')} tiles/s"
        )
        for r in s["rows"]:
            click.echo(
                f"  {r['workers']} worker(s): {r['tiles_per_s']:8.0f} tiles/s, "
                f"{r['tiles_per_s_per_worker']:.0f} per worker = "
                f"{_fmt(r['per_worker_vs_baseline'], '.2f')}x baseline, "
                f"{_fmt(None if r['per_worker_vs_decode_limit'] is None else 100 * r['per_worker_vs_decode_limit'], '.0f')}% "
                f"of decode limit, {_fmt(r['scaling_vs_1'], '.2f')}x one worker"
                f"{_repeats(r['scaling_per_repeat']) if r['workers'] > 1 else ''}; first "
                f"pass {r['first_pass']['tiles_per_s']:.0f} tiles/s"
            )
        split = ", ".join(f"{k} {v:.2f} s" for k, v in s["split_s"].items())
        click.echo(f"  time split (one process): {split}")
    rss = d["peak_rss_mb"]
    click.echo(
        f"peak RSS: main {_fmt(rss['main'], '.0f')} MB, largest reader {rss['largest_reader']:.0f} MB"
    )
