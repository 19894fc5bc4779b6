"""``edgepath export``: a model to ONNX, OpenVINO, TensorRT, Jetson, Triton or a timm folder."""

from __future__ import annotations

import click

from edgepath.cli.common import emit, json_option


@click.command("export")
@click.argument("model")
@click.option(
    "-t",
    "--target",
    required=True,
    help="onnx | openvino | tensorrt | jetson-orin (alias jetson) | jetson-thor | triton | timm "
    "(timm's hub layout: config.json + model.safetensors), or a target card path.",
)
@click.option(
    "-p",
    "--precision",
    type=click.Choice(["fp32", "fp16", "int8", "fp8"]),
    default=None,
    help="Default: the model's own (INT8/FP8 need a quantized artifact from edgepath quantize).",
)
@click.option("-o", "--out", required=True, type=click.Path(file_okay=False), help="Output folder.")
@click.option("--jetpack", default=None, help="Jetson targets: the device's JetPack (e.g. 6.2).")
@click.option(
    "--fuse-preprocess/--no-fuse-preprocess",
    default=None,
    help="Graph takes uint8 NHWC tiles and normalises inside (default: the target card's).",
)
@click.option("--overwrite", is_flag=True, help="Replace an existing output folder.")
@json_option
def export_cmd(
    model: str,
    target: str,
    precision: str | None,
    out: str,
    jetpack: str | None,
    fuse_preprocess: bool | None,
    overwrite: bool,
    as_json: bool,
) -> None:
    """Export MODEL (artifact folder, teacher card, or student name[@mpp]) for a deployment target.

    \b
    Every export is checked against the validated model on real H&E tiles (cosine >= 0.9999
    for fp32) and fails with exit code 2 if it does not match.
    \b
    Examples:
      edgepath export runs/student --target onnx -o out/onnx
      edgepath export runs/quantized --target jetson -o out/orin      # built on the device
      edgepath export runs/student --target triton --precision fp16 -o out/triton
      edgepath export runs/student --target timm -o out/timm
    \b
    --target timm writes timm's own hub format (config.json with model_args + pretrained_cfg,
    model.safetensors): timm.create_model("local-dir:DIR", pretrained=True) loads it, and so do
    TRIDENT, LazySlide and eva through timm (docs/export.md).
    """
    from edgepath.cli.common import quiet
    from edgepath.export.run import export

    with _spinner(f"exporting {model} to {target}", disable=quiet() or as_json):
        manifest = export(
            model,
            target=target,
            out=out,
            precision=precision,
            jetpack=jetpack,
            fuse_preprocess=fuse_preprocess,
            overwrite=overwrite,
        )
    data = {
        "out": out,
        "target": manifest["target"],
        "precision": manifest["precision"],
        "engine": manifest["engine"],
        "files": manifest["files"],
        "graph": manifest.get("graph", {}),
        "parity": manifest["parity"],
    }
    if "bundle" in manifest:
        b = manifest["bundle"]
        data["bundle"] = {
            k: b[k] for k in ("soc", "jetpack", "tensorrt_expected", "compute_capability")
        }
    if "tensorrt" in manifest:
        data["tensorrt"] = manifest["tensorrt"]
    if "timm" in manifest:
        data["timm"] = manifest["timm"]

    def human(d: dict) -> None:
        click.secho(f"exported to {d['out']}  ({d['target']}, {d['precision']})", bold=True)
        for engine, p in d["parity"].items():
            click.echo(
                f"  parity {engine:<12} min cosine {p['min_cosine']:.6f} over {p['n_tiles']} "
                f"real tiles (threshold {p['threshold']})"
            )
        for role, name in d["files"].items():
            click.echo(f"  {role:<14} {name}")
        if "bundle" in d:
            b = d["bundle"]
            click.echo(
                f"\n  on the {b['soc']} (JetPack {b['jetpack']}, TensorRT {b['tensorrt_expected']}):"
                f"\n    ./build_engine.sh && python3 verify.py"
                f"\n  here (CPU check of the same ONNX):  python3 {d['out']}/verify.py --cpu"
            )
        if "timm" in d:
            click.echo(
                f'\n  model = timm.create_model("local-dir:{d["out"]}", pretrained=True)'
                f"\n  {d['timm']['embedding']['pooling']}"
                f"\n  (tiles at {d['timm']['mpp']:g} µm/px, {d['timm']['tile_px']} px)"
            )

    emit(data, as_json=as_json, human=human)


def _spinner(text: str, *, disable: bool):
    import contextlib

    if disable:
        return contextlib.nullcontext()
    from rich.console import Console

    return Console(stderr=True).status(text)
