"""``edgepath quantize``: INT8 / FP8 post-training quantization, gated on embedding fidelity."""

from __future__ import annotations

from pathlib import Path

import click

from edgepath.cli.common import emit, json_option, quiet


@click.command("quantize")
@click.argument("model")
@click.option(
    "--preset",
    "preset",
    default="int8-cpu",
    show_default=True,
    help="Quantization preset (quantize/*.toml name or path; `edgepath cards list quantize`).",
)
@click.option(
    "--calib",
    "calib",
    multiple=True,
    required=True,
    help="Slides, tile images or folders for calibration and held-out tiles (repeatable).",
)
@click.option(
    "-o",
    "--out",
    "out",
    required=True,
    type=click.Path(file_okay=False),
    help="Artifact folder to write.",
)
@click.option(
    "--calibration-tiles",
    type=int,
    default=None,
    help="Calibration tiles (default: the preset's, 300).",
)
@click.option(
    "--heldout-tiles",
    type=int,
    default=None,
    help="Held-out tiles for the gate (default: the preset's).",
)
@click.option(
    "--accuracy-control",
    is_flag=True,
    help="Restore layers to float until the gate's cosine passes (NNCF, OpenVINO backend).",
)
@click.option("--threads", type=int, default=None, help="Inference threads (default: all cores).")
@click.option("--seed", type=int, default=0, show_default=True, help="Tile sampling seed.")
@json_option
def quantize(
    model: str,
    preset: str,
    calib: tuple[str, ...],
    out: str,
    calibration_tiles: int | None,
    heldout_tiles: int | None,
    accuracy_control: bool,
    threads: int | None,
    seed: int,
    as_json: bool,
) -> None:
    """Quantize MODEL (student artifact, teacher card, or student name[@mpp]) and gate it.

    The gate compares quantized and float embeddings on held-out tiles that calibration never
    saw. Below the preset's thresholds the artifact is written with status "failed", the figures
    are printed, and the command exits with code 3.
    """
    from edgepath.errors import ToleranceError
    from edgepath.quantize.pipeline import quantize_model

    def on_step(msg: str) -> None:
        if not (quiet() or as_json):
            click.secho(f"• {msg}", err=True, dim=True)

    manifest = quantize_model(
        model,
        preset=preset,
        calib=list(calib),
        out=out,
        calibration_tiles=calibration_tiles,
        heldout_tiles=heldout_tiles,
        accuracy_control=accuracy_control,
        threads=threads,
        seed=seed,
        on_step=on_step,
    )
    data = summary(manifest, Path(out))
    emit(data, as_json=as_json, human=_human)
    if manifest["status"] != "ok":
        err = ToleranceError(
            f"{out}: quantized model FAILED the fidelity gate ({'; '.join(data['failures'])}); "
            "it is marked failed and must not be used (try int8 with --accuracy-control, a "
            "larger ignored_scope, or another preset)"
        )
        err.exit_code = 3
        raise err


def summary(manifest: dict, out: Path) -> dict:
    """The report printed by the command (also its ``--json`` object)."""
    gate = manifest["gate"]
    chosen = manifest["backend"]["name"]
    return {
        "out": str(out),
        "status": manifest["status"],
        "precision": manifest["precision"],
        "engine": manifest["engine"],
        "backend": chosen,
        "preset": manifest["preset"]["name"],
        "emulated": manifest["scheme"]["emulated"],
        "figures": gate["figures"],
        "thresholds": gate["thresholds"],
        "failures": gate["failures"],
        "speed": manifest["speed"]["backends"],
        "calibration": manifest["calibration"],
        "candidates": {b: c["gate"]["passed"] for b, c in manifest["candidates"].items()},
    }


def _human(d: dict) -> None:
    ok = d["status"] == "ok"
    click.secho(
        f"{'PASSED' if ok else 'FAILED'}  {d['preset']} -> {d['out']}  "
        f"({d['precision']}, {d['engine']}{', FP8 emulated on CPU' if d['emulated'] else ''})",
        fg="green" if ok else "red",
        bold=True,
    )
    f, t = d["figures"], d["thresholds"]

    def line(label: str, key: str, limit: str | None) -> None:
        v = f.get(key)
        shown = f"{v:.5f}" if isinstance(v, float) else str(v)
        click.echo(f"  {label:<22} {shown:>10}" + (f"   (gate {limit})" if limit else ""))

    line("cosine mean", "cosine", f">= {t['min_cosine']}")
    line("cosine p1", "cosine_p1", f">= {t['min_cosine_p1']}")
    line("centered cosine", "centered_cosine", None)
    line("kNN-10 agreement", "knn10_agreement", f">= {t['min_knn10']}" if t["min_knn10"] else None)
    if "robustness_drop" in f:
        line("robustness (float)", "robustness_float", None)
        line("robustness (quant.)", "robustness_quantized", None)
        drop = t["max_robustness_drop"]
        line("robustness drop", "robustness_drop", f"<= {drop}" if drop is not None else None)
    click.echo(
        f"  held-out tiles         {f['n_tiles']:>10}   (calibration {d['calibration']['n_tiles']})"
    )
    for b, s in d["speed"].items():
        mark = "*" if b == d["backend"] else " "
        click.echo(
            f"{mark} {s['engine']:<12} fp32 {s['fp32_tiles_per_s']:8.1f} tiles/s   "
            f"{d['precision']} {s['quantized_tiles_per_s']:8.1f} tiles/s   x{s['speedup']:.2f}"
            f"   gate {'pass' if d['candidates'][b] else 'FAIL'}"
        )
    for msg in d["failures"]:
        click.secho(f"  fail: {msg}", fg="red")
