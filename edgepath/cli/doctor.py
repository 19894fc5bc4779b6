"""``edgepath doctor``: what this machine offers (OpenSlide, engines, devices, CUDA, CPU features)."""

from __future__ import annotations

import click

from edgepath.cli.common import emit, json_option


@click.command("doctor")
@json_option
def doctor(as_json: bool) -> None:
    """Report OpenSlide, engines and their devices/providers, CUDA/TensorRT and CPU features."""
    from edgepath.runtime.doctor import report

    data = report()

    def human(d: dict) -> None:
        ok, no = click.style("ok", fg="green"), click.style("--", fg="yellow")
        click.secho(f"edgepath {d['edgepath']}  python {d['python']}  {d['platform']}", bold=True)
        s = d["openslide"]
        click.echo(
            f"  openslide   {ok if s.get('library') else no} library {s.get('library')}, "
            f"python {s.get('python')}"
        )
        c = d["cpu"]
        click.echo(f"  cpu         {c['model']} ({c['arch']}, {c['cores']} cores)")
        click.echo(f"              features: {', '.join(c['features']) or 'none of note'}")
        click.echo(
            f"              INT8: {c['int8_acceleration']}; BF16: {'yes' if c['bf16'] else 'no'}"
        )
        e = d["engines"]
        if "torch" in e:
            t = e["torch"]
            click.echo(
                f"  torch       {ok} {t['version']} ({t['cpu_capability']}, {t['threads']} threads; "
                f"devices {', '.join(t['devices'])})"
            )
            for g in t["gpus"]:
                click.echo(
                    f"              {g['name']} (compute capability {g['compute_capability']})"
                )
        if "onnxruntime" in e:
            o = e["onnxruntime"]
            click.echo(f"  onnxruntime {ok} {o['version']} ({', '.join(o['providers'])})")
        if "openvino" in e:
            v = e["openvino"]
            if "error" in v:
                click.echo(f"  openvino    {no} {v['error']}")
            else:
                devs = "; ".join(
                    f"{k}: {x.get('name', '?')} [{', '.join(x.get('capabilities', []))}]"
                    for k, x in v["devices"].items()
                )
                click.echo(f"  openvino    {ok} {v['version']} ({devs})")
        else:
            click.echo(f"  openvino    {no} not installed")
        trt = e["tensorrt"]
        click.echo(
            f"  tensorrt    {ok + ' ' + trt['version'] if trt.get('version') else no + ' not installed'}"
            f"  (torch built for CUDA {d['cuda']['torch_cuda'] or '-'}; {len(d['cuda']['gpus'])} GPU(s) visible)"
        )
        click.echo(f"  engines usable here, fastest first: {', '.join(d['usable_engines'])}")
        for n in d["notes"]:
            click.echo(f"  note: {n}")

    emit(data, as_json=as_json, human=human)
