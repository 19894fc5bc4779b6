"""Helpers of ``benchmarks/gpu_proof.sh``: the parts that are more than one edgepath command, and
the final step that combines the parts' JSONs into ``gpu-<device>-<date>.json``.

    python benchmarks/gpu_proof.py pytest -- -m gpu tests        # pytest, summarised as JSON
    python benchmarks/gpu_proof.py embed --model vit-s14 --device cuda --precision bf16 ...
    python benchmarks/gpu_proof.py keep STDOUT_FILE PART_JSON NAME STATE EXIT_CODE LOG
    python benchmarks/gpu_proof.py combine OUT_DIR STATUS_TSV [--dry-run]
    python benchmarks/gpu_proof.py table docs/results/gpu-nvidia-h200-DATE.json   # README rows

Each subcommand prints exactly one JSON object on stdout (``combine`` also writes its file and
prints a short table of the figures on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

#: What the GPU image cannot run, stated in every combined result.
NOT_EXECUTED = [
    "TensorRT: not on the GPU image and its wheels exceed the 64 MiB that can be carried there; "
    "the tensorrt engine, TensorRT plan builds (export --target tensorrt / jetson) and "
    "`pytest -m tensorrt` stay unexecuted",
    "OpenVINO and NNCF: not on the GPU image (CPU engines, measured on CPU elsewhere)",
    "onnxruntime: the image's build is CPU-only (no CUDA execution provider), so no "
    "onnxruntime-on-GPU figures",
]


#: The papers' data sets, for the one-pass arithmetic under the table: XMAG's 3.49 M images
#: (regions) and H0-mini's 43 M tiles.
PAPER_ITEMS = {"xmag": 3.49e6, "h0mini": 43e6}


def _tail(text: str, n: int = 3000) -> str:
    return text[-n:]


def cmd_pytest(args: list[str]) -> int:
    """Run pytest with a JUnit report; print counts and every test's outcome as JSON.

    pytest's own output goes to stderr as it runs (the part's log keeps it if a limit cuts it).
    """
    with tempfile.TemporaryDirectory(prefix="gpu-proof-pytest-") as tmp:
        xml = Path(tmp) / "junit.xml"
        cmd = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--junitxml={xml}", "-q"]
        t0 = time.perf_counter()
        proc = subprocess.run([*cmd, *args], cwd=REPO, stdout=sys.stderr, stderr=sys.stderr)
        seconds = time.perf_counter() - t0
        tests = []
        if xml.is_file():
            for case in ET.parse(xml).getroot().iter("testcase"):
                outcome, message = "passed", None
                for kind in ("failure", "error", "skipped"):
                    el = case.find(kind)
                    if el is not None:
                        outcome = {"failure": "failed", "error": "error"}.get(kind, kind)
                        message = (el.get("message") or "")[:500]
                        break
                tests.append(
                    {
                        "test": f"{case.get('classname')}::{case.get('name')}",
                        "outcome": outcome,
                        "seconds": round(float(case.get("time") or 0), 3),
                        "message": message,
                    }
                )
    counts: dict[str, int] = {}
    for t in tests:
        counts[t["outcome"]] = counts.get(t["outcome"], 0) + 1
    print(
        json.dumps(
            {
                "kind": "pytest",
                "args": args,
                "exit_code": proc.returncode,
                "seconds": round(seconds, 2),
                "counts": counts,
                "tests": tests,
            }
        )
    )
    return proc.returncode


def _last_json(text: str) -> dict[str, Any]:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                continue
    raise ValueError("no JSON object in the output")


def cmd_embed(argv: list[str]) -> int:
    """``edgepath embed`` of a synthesized slide end to end, then the engine alone vs the pipeline."""
    p = argparse.ArgumentParser(prog="gpu_proof.py embed")
    p.add_argument("--model", default="vit-s14")
    p.add_argument("--device", default="cuda")
    p.add_argument("--precision", default="bf16")
    p.add_argument("--tiles", type=int, default=3000, help="Tissue tiles of the synthetic slide.")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--workers", type=int, default=8)
    p.add_argument("--preload", type=int, default=512)
    p.add_argument("--work", type=Path, required=True)
    a = p.parse_args(argv)
    from edgepath.slides import open_slide, synthesize_slide

    a.work.mkdir(parents=True, exist_ok=True)
    slide = a.work / "synthetic.tiff"
    t0 = time.perf_counter()
    synthesize_slide(slide, tiles=a.tiles, seed=0)
    synth_s = time.perf_counter() - t0
    with open_slide(slide) as s:
        dims = list(s.dimensions)
    common = ["--batch", str(a.batch), "--workers", str(a.workers)]
    torch_opts = ["--device", a.device, "--precision", a.precision]
    cli = [
        *[sys.executable, "-m", "edgepath", "-q", "embed", a.model, str(slide)],
        *["-o", str(a.work / "features"), "--engine", "torch", *torch_opts, *common, "--json"],
    ]
    t0 = time.perf_counter()
    proc = subprocess.run(cli, cwd=REPO, stdout=subprocess.PIPE, stderr=sys.stderr, text=True)
    cli_wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"edgepath embed failed (exit {proc.returncode}); see above")
    summary = _last_json(proc.stdout)
    overhead_cmd = [
        *[sys.executable, str(REPO / "benchmarks" / "embed_overhead.py")],
        *["--student", a.model, "--engine", "torch", *torch_opts, *common],
        *["--slide", str(slide), "--preload", str(a.preload), "--repeats", "1"],
    ]
    proc = subprocess.run(
        overhead_cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=sys.stderr, text=True
    )
    if proc.returncode != 0:
        raise SystemExit(f"embed_overhead failed (exit {proc.returncode}); see above")
    row = _last_json(proc.stdout)
    row.pop("machine", None)  # the combined result holds the machine once
    print(
        json.dumps(
            {
                "kind": "embed-proof",
                "model": a.model,
                "engine": "torch",
                "device": a.device,
                "precision": a.precision,
                "batch": a.batch,
                "workers": a.workers,
                "slide": {"tiles_asked": a.tiles, "dimensions": dims, "synth_s": round(synth_s, 2)},
                "cli": summary,
                "cli_wall_s": round(cli_wall, 2),
                "overhead": row,
                "end_to_end_tiles_per_s": row["pipeline_median"],
                "engine_alone_tiles_per_s": row["engine_median"],
                "ratio_end_to_end": row["ratio_end_to_end"],
                "wsi_per_min_end_to_end": row["wsi_per_min"],
                "wsi_per_min_engine_alone": round(60 * row["engine_median"] / row["n_tiles"], 4),
                "tiles_per_slide": row["n_tiles"],
            }
        )
    )
    return 0


def cmd_keep(argv: list[str]) -> int:
    """Keep a part's JSON: its whole stdout, else its last JSON line, else a failure record.

    Prints the part's final state: the given one, or ``invalid-json`` for an ``ok`` part whose
    output holds no JSON object.
    """
    stdout, dest, name, state, rc, log = argv
    text = _read(stdout)
    try:
        result = json.loads(text)
    except ValueError:
        try:
            result = _last_json(text)
        except ValueError:
            result = None
    if not isinstance(result, dict):
        state = "invalid-json" if state == "ok" else state
        result = {
            "part": name,
            "status": state,
            "exit_code": int(rc),
            "stdout_tail": _tail(text, 1000),
            "stderr_tail": _tail(_read(log)),
        }
    Path(dest).write_text(json.dumps(result) + "\n")
    print(state)
    return 0


def _device_name(dry_run: bool) -> str:
    try:
        import torch

        if torch.cuda.is_available():
            return torch.cuda.get_device_name(0)
    except Exception:  # pragma: no cover - torch missing or broken CUDA
        pass
    return "dry-run-cpu" if dry_run else "cpu"


def _nvidia_smi() -> str | None:
    try:
        proc = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return proc.stdout.strip() or None


def slug(name: str) -> str:
    """``NVIDIA H200`` -> ``nvidia-h200``."""
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "device"


def summarize(parts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """The headline figures of each part (what the README table shows)."""
    out: dict[str, Any] = {"throughput": [], "distill": [], "embed": None, "pytest": None}
    for name, part in parts.items():
        r = part.get("result")
        if not isinstance(r, dict):
            continue
        if r.get("kind") == "throughput":
            for row in r["rows"]:
                out["throughput"].append(
                    {
                        k: row.get(k)
                        for k in (
                            "model",
                            "random_weights",
                            "device",
                            "precision",
                            "batch",
                            "mpp",
                            "tiles_per_s",
                            "latency_ms_p50",
                            "wsi_per_min",
                            "achieved_gflops",
                            "ceiling_gflops",
                            "ceiling_fraction",
                            "peak_gpu_mb",
                        )
                    }
                )
        elif r.get("kind") == "distill":
            out["distill"].append(
                {
                    "part": name,
                    "card": r.get("card"),
                    "teachers": [t.get("card") for t in r.get("teachers", [])],
                    "student": r.get("student"),
                    "device_name": r.get("device_name"),
                    "precision": r.get("precision"),
                    "batch_size": r.get("batch_size"),
                    "items": r.get("items"),
                    "steps_timed": r.get("steps_timed"),
                    "steps_per_s": r.get("steps_per_s"),
                    "items_per_s": r.get("items_per_s"),
                    "cached_steps_per_s": r.get("cached_steps_per_s"),
                    "cached_items_per_s": (r.get("cached") or {}).get("items_per_s"),
                    "cache_speedup": r.get("cache_speedup"),
                    "peak_memory_mb": r.get("peak_memory_mb"),
                }
            )
        elif r.get("kind") == "embed-proof":
            out["embed"] = {
                k: r.get(k)
                for k in (
                    "model",
                    "device",
                    "precision",
                    "batch",
                    "tiles_per_slide",
                    "end_to_end_tiles_per_s",
                    "engine_alone_tiles_per_s",
                    "ratio_end_to_end",
                    "wsi_per_min_end_to_end",
                    "wsi_per_min_engine_alone",
                )
            }
        elif r.get("kind") == "pytest":
            out["pytest"] = {"exit_code": r.get("exit_code"), "counts": r.get("counts")}
    return out


def _table(summary: dict[str, Any], parts: dict[str, dict[str, Any]]) -> str:
    lines = ["", "part                  status   seconds  limit"]
    for name, p in parts.items():
        lines.append(f"{name:<21} {p['status']:<8} {p['seconds']:>7.1f} {p['limit_s']:>6}")
    if summary["throughput"]:
        lines += [
            "",
            f"{'model':<14} {'prec':<5} {'batch':>5} {'tiles/s':>10} {'WSI/min':>9} {'ceil%':>6}",
        ]
        for r in summary["throughput"]:
            ceil = "-" if r["ceiling_fraction"] is None else f"{100 * r['ceiling_fraction']:.0f}"
            lines.append(
                f"{r['model']:<14} {r['precision']:<5} {r['batch']:>5} {r['tiles_per_s']:>10.1f} "
                f"{r['wsi_per_min']:>9.2f} {ceil:>6}"
            )
    for d in summary["distill"]:
        lines.append(
            f"distill {d['card']} {'+'.join(d['teachers'])} -> {d['student']}: "
            f"{d['steps_per_s']} steps/s, {d['items_per_s']} {d['items']}/s live; cached "
            f"{d['cached_steps_per_s']} steps/s; peak {d['peak_memory_mb']} MB"
        )
    if summary["embed"]:
        e = summary["embed"]
        lines.append(
            f"embed {e['model']} {e['precision']}: {e['end_to_end_tiles_per_s']} tiles/s end to "
            f"end ({e['wsi_per_min_end_to_end']} WSI/min) vs {e['engine_alone_tiles_per_s']} "
            f"engine alone"
        )
    if summary["pytest"]:
        lines.append(f"pytest -m gpu: {summary['pytest']}")
    return "\n".join(lines) + "\n"


def cmd_combine(argv: list[str]) -> int:
    """Read the status table and the parts' JSONs; write ``gpu-<device>-<date>.json``."""
    p = argparse.ArgumentParser(prog="gpu_proof.py combine")
    p.add_argument("out", type=Path)
    p.add_argument("status", type=Path, help="TSV: name, status, rc, seconds, limit_s, log")
    p.add_argument("--dry-run", action="store_true")
    p.add_argument("--started", type=float, default=None, help="Unix time the script started.")
    a = p.parse_args(argv)
    parts: dict[str, dict[str, Any]] = {}
    for line in a.status.read_text().splitlines():
        if not line.strip():
            continue
        name, status, rc, seconds, limit, log = line.split("\t")
        f = a.out / f"{name}.json"
        result = None
        if f.is_file():
            try:
                result = json.loads(f.read_text())
            except ValueError:
                status = "invalid-json" if status == "ok" else status
        elif status == "ok":
            status = "no-json"
        parts[name] = {
            "status": status,
            "exit_code": int(rc),
            "seconds": float(seconds),
            "limit_s": int(limit),
            "file": f.name if f.is_file() else None,
            "result": result,
            "stderr_tail": None if status == "ok" else _tail(_read(log)),
        }
    device = _device_name(a.dry_run)
    from edgepath import __version__
    from edgepath.eval.machine import describe

    now = datetime.now(timezone.utc)
    started = (
        datetime.fromtimestamp(a.started, timezone.utc).isoformat(timespec="seconds")
        if a.started
        else None
    )
    summary = summarize(parts)
    combined = {
        "kind": "gpu-proof",
        "dry_run": a.dry_run,
        "device": device,
        "date": now.strftime("%Y-%m-%d"),
        "started_utc": started,
        "finished_utc": now.isoformat(timespec="seconds"),
        "seconds": round(time.time() - a.started, 1) if a.started else None,
        "edgepath": __version__,
        "nvidia_smi": _nvidia_smi(),
        "machine": describe(),
        "not_executed": NOT_EXECUTED,
        "all_ok": all(p["status"] == "ok" for p in parts.values()),
        "parts": parts,
        "summary": summary,
    }
    path = a.out / f"gpu-{slug(device)}-{combined['date']}.json"
    path.write_text(json.dumps(combined, indent=1) + "\n")
    sys.stderr.write(_table(summary, parts))
    print(json.dumps({"path": str(path), "all_ok": combined["all_ok"]}))
    return 0


def cmd_table(argv: list[str]) -> int:
    """Markdown tables of a combined result (for the README): every figure read from the JSON."""
    d = json.loads(Path(argv[0]).read_text())
    s, m = d["summary"], d["machine"]
    cuda = m.get("cuda") or {}
    smi = (d.get("nvidia_smi") or "").split(", ")  # name, driver, memory
    lines = [
        f"{d['date']}, {d['device']} ({cuda.get('memory_gb', '?')} GB, compute "
        f"{cuda.get('compute_capability', '?')}), torch {m['versions'].get('torch')}, "
        f"CUDA {cuda.get('cuda')}, driver {smi[1] if len(smi) > 1 else '?'}; "
        f"`{Path(argv[0]).name}`",
        "",
        "| model | precision | batch | tiles/s | WSI/min | % of GEMM ceiling | peak GPU MB |",
        "|---|---|---:|---:|---:|---:|---:|",
    ]
    for r in s["throughput"]:
        rw = " (random weights)" if r["random_weights"] else ""
        ceil = "–" if r["ceiling_fraction"] is None else f"{100 * r['ceiling_fraction']:.0f}"
        gpu = "–" if r["peak_gpu_mb"] is None else f"{r['peak_gpu_mb']:.0f}"
        lines.append(
            f"| {r['model']}{rw} | {r['precision']} | {r['batch']} | {r['tiles_per_s']:,.0f} | "
            f"{r['wsi_per_min']:.2f} | {ceil} | {gpu} |"
        )
    lines += [
        "",
        "| distillation | precision | batch | steps/s | items/s | cached steps/s | cached items/s "
        "| peak MB |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    for x in s["distill"]:
        lines.append(
            f"| {x['card']}: {' + '.join(x['teachers'])} → {x['student']} | {x['precision']} | "
            f"{x['batch_size']} {x['items']} | {x['steps_per_s']} | {x['items_per_s']} | "
            f"{x['cached_steps_per_s']} | {x['cached_items_per_s']} | {x['peak_memory_mb']} |"
        )
    for x in s["distill"]:
        n = PAPER_ITEMS.get(x["card"])
        if not n or not x["items_per_s"]:
            continue
        live = n / x["items_per_s"] / 3600
        cached = n / x["cached_items_per_s"] / 3600 if x["cached_items_per_s"] else None
        lines.append(
            f"- {x['card']}: one pass over {n / 1e6:g} M {x['items']} takes {live:.1f} h on one "
            f"{x['device_name']} with the teacher live"
            + (f", {cached:.1f} h from the teacher cache" if cached else "")
            + f"; on 8 by linear scaling (an assumption, not measured) {live / 8:.1f} h"
            + (f" and {cached / 8:.1f} h" if cached else "")
            + "."
        )
    if s.get("embed"):
        e = s["embed"]
        lines += [
            "",
            f"`edgepath embed` {e['model']} {e['precision']} on {e['device']}, batch {e['batch']}: "
            f"{e['end_to_end_tiles_per_s']:,.0f} tiles/s end to end "
            f"({e['wsi_per_min_end_to_end']:.2f} WSI/min of {e['tiles_per_slide']} tiles) vs "
            f"{e['engine_alone_tiles_per_s']:,.0f} tiles/s for the engine alone "
            f"(ratio {e['ratio_end_to_end']}).",
        ]
    print("\n".join(lines))
    return 0


def _read(path: str) -> str:
    try:
        return Path(path).read_text(errors="replace")
    except OSError:
        return ""


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv:
        raise SystemExit(__doc__)
    cmd, rest = argv[0], argv[1:]
    if cmd == "pytest":
        return cmd_pytest(rest[1:] if rest[:1] == ["--"] else rest)
    if cmd == "embed":
        return cmd_embed(rest)
    if cmd == "keep":
        return cmd_keep(rest)
    if cmd == "combine":
        return cmd_combine(rest)
    if cmd == "table":
        return cmd_table(rest)
    raise SystemExit(f"unknown subcommand {cmd!r}; expected pytest, embed, keep, combine, table")


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    sys.exit(main())
