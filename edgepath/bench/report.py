"""``edgepath report``: benchmark results -> one markdown page, one JSON summary, PNG plots.

Plots: tiles/s per model, engine and precision; WSI/min of a ``--compare`` run (log scale);
a robustness heatmap of top-10 accuracy over every pair of slides or domains and the model's
score among the published PLISM leaderboard's; fidelity histograms of per-tile cosine (raw and
centered).
"""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import numpy as np

from edgepath.io import write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_")[:60]


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    from edgepath.io import atomic_path

    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    _plt().close(fig)


def plot_throughput(result: dict[str, Any], path: Path) -> Path:
    """Bar chart: tiles/s per variant, grouped by model and batch."""
    plt = _plt()
    rows = result["rows"]
    labels = [f"{r['model']}\n{r['engine']} {r['precision']} b{r['batch']}" for r in rows]
    colors = {"fp32": "#4C72B0", "fp16": "#55A868", "int8": "#DD8452"}
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(rows) + 2), 4))
    bars = ax.bar(
        range(len(rows)),
        [r["tiles_per_s"] for r in rows],
        color=[colors.get(r["precision"], "grey") for r in rows],
    )
    for b, r in zip(bars, rows, strict=True):
        note = f"{r['tiles_per_s']:.1f}"
        if r.get("ceiling_fraction") is not None:
            note += f"\n{100 * r['ceiling_fraction']:.0f}% ceil"
        ax.annotate(
            note,
            (b.get_x() + b.get_width() / 2, b.get_height()),
            ha="center",
            va="bottom",
            fontsize=7,
        )
    ax.set_xticks(range(len(rows)), labels, fontsize=7, rotation=0)
    ax.set_ylabel("tiles / s")
    ax.set_title(f"Throughput on {_where(result)}", fontsize=9)
    ax.margins(y=0.2)
    _save(fig, path)
    return path


def plot_compare(result: dict[str, Any], path: Path) -> Path:
    """Bar chart (log scale): WSI/min of teacher and student variants on the same slide."""
    plt = _plt()
    rows = result["rows"]
    labels = [f"{r['model']}\n{r['engine']} {r['precision']}\n{r['mpp']} mpp" for r in rows]
    vals = [r["wsi_per_min"] for r in rows]
    e2e = result["end_to_end"]["candidate"]
    labels.append(f"{result['candidate']['model']}\n{result['candidate']['best']}\nend to end")
    vals.append(e2e["wsi_per_min"])
    fig, ax = plt.subplots(figsize=(max(6, 1.3 * len(vals) + 1), 4))
    bars = ax.bar(range(len(vals)), vals, color=["#4C72B0"] + ["#DD8452"] * (len(vals) - 1))
    for b, v in zip(bars, vals, strict=True):
        ax.annotate(
            f"{v:.3g}", (b.get_x() + b.get_width() / 2, v), ha="center", va="bottom", fontsize=8
        )
    ax.set_yscale("log")
    ax.set_xticks(range(len(vals)), labels, fontsize=7)
    ax.set_ylabel("slides / min (log)")
    ax.set_title(
        f"WSI/min on {Path(result['slide']).name}: ×{result['ratio_computed']:.0f} "
        f"computed, ×{result['ratio_end_to_end']:.0f} end to end",
        fontsize=9,
    )
    _save(fig, path)
    return path


def pair_matrix(result: dict[str, Any], metric: str = "top10") -> tuple[list[str], np.ndarray]:
    """Slides/domains and the symmetric matrix of ``metric`` over their pairs (diagonal NaN)."""
    names = sorted({p["a"] for p in result["pairs"]} | {p["b"] for p in result["pairs"]})
    if "domains" in result:  # keep the suite's order: original, stain, scanner
        order = [d["name"] for d in result["domains"]]
        names = [n for n in order if n in names]
    idx = {n: i for i, n in enumerate(names)}
    mat = np.full((len(names), len(names)), np.nan)
    for p in result["pairs"]:
        i, j = idx[p["a"]], idx[p["b"]]
        mat[i, j] = mat[j, i] = p[metric]
    return names, mat


def plot_robustness(result: dict[str, Any], path: Path) -> Path:
    """Heatmaps of top-10 accuracy and cosine over every pair of slides or domains."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(13, 5.5))
    for ax, metric in zip(axes, ("top10", "cosine"), strict=True):
        names, mat = pair_matrix(result, metric)
        im = ax.imshow(mat, vmin=0, vmax=1, cmap="viridis")
        short = len(names) <= 30
        ax.set_xticks(range(len(names)), names if short else [], rotation=90, fontsize=6)
        ax.set_yticks(range(len(names)), names if short else [], fontsize=6)
        ax.set_title(f"{metric} per pair", fontsize=9)
        fig.colorbar(im, ax=ax, fraction=0.046)
    m = result["model"]
    rw = ", random weights" if m.get("random_weights") else ""
    fig.suptitle(
        f"{m['name']} ({m['engine']} {m['precision']}{rw}): {result['suite']} "
        f"robustness, score {result['score']:.3f}",
        fontsize=10,
    )
    _save(fig, path)
    return path


def _board_rows(result: dict[str, Any]) -> tuple[list[dict[str, Any]], int | None]:
    """The published rows with the model's, and the model's place (None: it does not rank)."""
    from edgepath.eval import plismbench as PB

    ranked = not PB.protocol_differences(result)
    mine = {"extractor": _model_label(result), **PB.components(result), "mine": True}
    rows = [dict(r) for r in PB.LEADERBOARD]
    if not ranked:
        return [*rows, mine], None
    place = PB.place(result["score"])
    rows.insert(place - 1, mine)
    return rows, place


def _model_label(result: dict[str, Any]) -> str:
    m = result["model"]
    if m.get("engine") == "features.npy":
        return f"{m['name']} (features)"
    return f"{m['name']} ({m['engine']} {m['precision']})"


def plot_leaderboard(result: dict[str, Any], path: Path) -> Path:
    """The PLISM leaderboard with the model among it: scores (bars) and the four components."""
    from edgepath.eval import plismbench as PB

    plt = _plt()
    rows, place = _board_rows(result)
    fig, (ax, bx) = plt.subplots(
        1, 2, figsize=(11, 0.3 * len(rows) + 1.8), sharey=True, width_ratios=(1, 1.2)
    )
    y = np.arange(len(rows))[::-1]
    for yi, r in zip(y, rows, strict=True):
        mine = r.get("mine", False)
        ax.barh(yi, r["score"], color="#DD8452" if mine else "#4C72B0",
                hatch="//" if mine and place is None else None,
                edgecolor="black" if mine else "none")  # fmt: skip
        ax.annotate(f"{r['score']:.3f}", (r["score"], yi), xytext=(3, 0),
                    textcoords="offset points", va="center", fontsize=7)  # fmt: skip
    ax.set_yticks(y, [r["extractor"] for r in rows], fontsize=7)
    ax.set_xlim(0, max(0.7, max(r["score"] for r in rows) + 0.1))
    ax.set_xlabel("score (mean of the four components)", fontsize=8)
    labels = ("cosine, all pairs", "top-10 cross-scanner", "top-10 cross-staining",
              "top-10 cross-both")  # fmt: skip
    for c, label, marker in zip(PB.COMPONENTS, labels, "osD^", strict=True):
        bx.scatter([r[c] for r in rows], y, marker=marker, s=22, label=label)
    for yi, r in zip(y, rows, strict=True):
        if r.get("mine"):
            bx.axhspan(yi - 0.45, yi + 0.45, color="#DD8452", alpha=0.25, lw=0)
    bx.set_xlim(0, 1)
    bx.set_xlabel("median over pairs", fontsize=8)
    bx.legend(fontsize=7, loc="lower left", bbox_to_anchor=(0, 1), ncol=2, frameon=False)
    if place is None:
        title = "not ranked (hatched): " + "; ".join(PB.protocol_differences(result))
    else:
        title = f"place {place} of {len(rows)} on the PLISM leaderboard"
    fig.suptitle(f"{title}\npublished rows: {PB.LEADERBOARD_SOURCE}", fontsize=8)
    _save(fig, path)
    return path


def plot_fidelity(result: dict[str, Any], path: Path) -> Path | None:
    """Histograms of per-tile raw and centered cosine (same-dimension pairs only)."""
    per = result.get("per_tile")
    if not per:
        return None
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.linspace(-1, 1, 81)
    ax.hist(per["cosine"], bins=bins, alpha=0.7, label=f"cosine (mean {result['cosine']:.3f})")
    ax.hist(
        per["centered_cosine"],
        bins=bins,
        alpha=0.7,
        label=f"centered (mean {result['centered_cosine']:.3f})",
    )
    ax.set_xlabel("per-tile cosine")
    ax.set_ylabel("tiles")
    ax.legend(fontsize=8)
    ax.set_title(
        f"{result['candidate']['name']} vs {result['reference']['name']}: "
        f"kNN-10 {result['knn10_agreement']:.3f}, CKA {result['cka']:.3f}",
        fontsize=9,
    )
    _save(fig, path)
    return path


def _f(v: Any, spec: str = ".1f") -> str:
    return "–" if v is None else format(v, spec)


def _where(r: dict[str, Any]) -> str:
    """What a throughput result's torch engine ran on: the GPU (and CUDA) or the CPU's threads."""
    m, st = r["machine"], r["settings"]
    c = m.get("cuda")
    if str(st.get("device", "cpu")).startswith("cuda") and c:
        return f"{c['device_name']} (torch {m['versions'].get('torch')}, CUDA {c['cuda']})"
    return f"{m['cpu']} ({st['threads']} threads)"


def _md_throughput(r: dict[str, Any], img: str) -> list[str]:
    m = r["machine"]
    gpu = f"torch engine on {_where(r)}; " if r["settings"].get("device", "cpu") != "cpu" else ""
    out = [
        "## Throughput",
        "",
        f"{gpu}{m['cpu']}, {m['cores']} cores "
        f"({', '.join(m['cpu_features']) or 'no SIMD flags'}), "
        f"{r['settings']['threads']} threads, load average {m.get('load_avg')}; "
        f"{r['settings']['rounds']} interleaved rounds × {r['settings']['per_round']} batches, "
        "medians.",
        "",
        "| model | engine | precision | batch | tiles/s | p50 ms | p95 ms | × torch fp32 | "
        "GFLOP/tile | GFLOP/s | % of GEMM ceiling | WSI/min | peak RSS MB |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for x in r["rows"]:
        name = x["model"] + (" (random weights)" if x["random_weights"] else "")
        ceil = None if x["ceiling_fraction"] is None else 100 * x["ceiling_fraction"]
        out.append(
            f"| {name} | {x['engine']} | {x['precision']} | {x['batch']} | "
            f"{x['tiles_per_s']:.3g} | {x['latency_ms_p50']:.0f} | {x['latency_ms_p95']:.0f} | "
            f"{_f(x['speedup_vs_torch_fp32'], '.2f')} | {x['gflops_per_tile']:.2f} | "
            f"{x['achieved_gflops']:.1f} | {_f(ceil, '.0f')} | {x['wsi_per_min']:.3f} | "
            f"{_f(x['peak_rss_mb'], '.0f')} |"
        )
    out += ["", "GEMM ceilings (measured in the same run at each model's Linear shapes):", ""]
    for c in r["ceilings"]:
        out.append(
            f"- {c['engine']} {c['precision']} ({c['kernel']}), {c['model']} at batch "
            f"{c['batch']}: {c['gflops']:.1f} GFLOP/s"
        )
    if r["rows"]:
        out.append(f"- WSI/min basis: {r['rows'][0]['tiles_per_slide_basis']}")
    out += ["", f"![throughput]({img})", ""]
    return out


def _md_compare(r: dict[str, Any], img: str) -> list[str]:
    ref, cand = r["reference"], r["candidate"]
    e2e = r["end_to_end"]
    out = [
        "## Teacher vs student, slides per minute",
        "",
        f"Slide `{Path(r['slide']).name}` {r.get('slide_dimensions')}: {ref['model']} sees "
        f"{ref['tiles']} tiles at {ref['mpp']} mpp, {cand['model']} {cand['tiles']} tiles at "
        f"{cand['mpp']} mpp.",
        "",
        "| model | engine | precision | mpp | tiles | tiles/s | WSI/min (computed) |",
        "|---|---|---|---:|---:|---:|---:|",
    ]
    for x in r["rows"]:
        out.append(
            f"| {x['model']} | {x['engine']} | {x['precision']} | {x['mpp']} | "
            f"{x['tiles_per_slide']} | {x['tiles_per_s']:.2f} | {x['wsi_per_min']:.4g} |"
        )
    c = e2e["candidate"]
    out += [
        "",
        f"- {cand['model']} {cand['best']} end to end through the embed pipeline: "
        f"{c['seconds']:.1f} s per slide ({c['n_tiles']} tiles) = {c['wsi_per_min']:.3g} WSI/min",
        f"- ratio: **×{r['ratio_computed']:.0f}** computed (model only, both), "
        f"**×{r['ratio_end_to_end']:.0f}** end to end ({r['ratio_end_to_end_basis']})",
        "",
        f"![wsi per minute]({img})",
        "",
    ]
    return out


def _md_robustness(r: dict[str, Any], img: str) -> list[str]:
    m = r["model"]
    rw = " (random weights)" if m.get("random_weights") else ""
    out = [
        f"## Robustness: {m['name']}{rw}, {r['suite']}",
        "",
        f"{m['engine']} {m['precision']}; {r['n_slides']} slides/domains × {r['n_tiles']} aligned "
        f"tiles ({r['source']}), {r['n_pairs']} pairs, {r.get('precision', 'float32')} "
        "metrics. Median (IQR) over pairs.",
        "",
        "| group | pairs | cosine | top-1 | top-3 | top-5 | top-10 |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for g, st in r["groups"].items():
        cells = " | ".join(
            f"{st[k]['median']:.3f} ({st[k]['iqr']:.3f})"
            for k in ("cosine", "top1", "top3", "top5", "top10")
        )
        out.append(f"| {g} | {st['cosine']['n']} | {cells} |")
    out += [
        "",
        f"**Score: {r['score']:.3f}** (mean of the median cosine over all pairs and the "
        "median top-10 of the three cross groups)",
        "",
        f"![robustness]({img})",
        "",
    ]
    return out


def _md_leaderboard(r: dict[str, Any], img: str) -> list[str]:
    """The model's score and components beside the published PLISM leaderboard."""
    from edgepath.eval import plismbench as PB

    rows, place = _board_rows(r)
    diffs = PB.protocol_differences(r)
    proto = r.get("protocol", {})
    subset = proto.get("subset_file") or proto.get("subset", "?")
    if proto.get("subset") == "seeded":
        subset = f"seeded subset (seed {proto.get('subset_seed')})"
    out = [
        "### On the PLISM leaderboard",
        "",
        f"Protocol of this run: {r['suite']} suite, {r['n_slides']} slides, {r['n_tiles']} "
        f"tiles ({subset}), {r.get('precision', 'float32')} metrics"
        + (f"; {proto['subset_note']}" if proto.get("subset_note") else "")
        + ".",
        f"Leaderboard: {PB.LEADERBOARD_SOURCE}.",
        "",
        f"**Place {place} of {len(rows)}.**"
        if place is not None
        else "**Not ranked**: the protocol differs from the leaderboard's: "
        + "; ".join(diffs)
        + ". The model's row is shown below the table for reference only.",
        "",
        "| # | extractor | cosine (all) | top-10 x-scanner | top-10 x-staining | top-10 x-both "
        "| score |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for i, x in enumerate(rows, 1):
        cells = " | ".join(f"{x[c]:.3f}" for c in (*PB.COMPONENTS, "score"))
        name, rank = x["extractor"], str(i)
        if x.get("mine"):
            name, cells = f"**{name}**", " | ".join(f"**{c}**" for c in cells.split(" | "))
            rank = rank if place is not None else "–"
        out.append(f"| {rank} | {name} | {cells} |")
    out += ["", f"![leaderboard]({img})", ""]
    return out


def _md_fidelity(r: dict[str, Any], img: str | None) -> list[str]:
    a, b = r["candidate"], r["reference"]
    out = [
        f"## Fidelity: {a['name']} ({a['engine']} {a['precision']}) vs {b['name']} "
        f"({b['engine']} {b['precision']})",
        "",
        f"{r['tiles']}.",
        "",
        "| cosine | cosine p1 | centered cosine | kNN-10 agreement | CKA |",
        "|---:|---:|---:|---:|---:|",
        f"| {_f(r['cosine'], '.4f')} | {_f(r['cosine_p1'], '.4f')} | "
        f"{_f(r['centered_cosine'], '.4f')} | {_f(r['knn10_agreement'], '.4f')} | "
        f"{_f(r['cka'], '.4f')} |",
        "",
    ]
    if img:
        out += [f"![fidelity]({img})", ""]
    return out


def _md_distill(r: dict[str, Any]) -> list[str]:
    """Training speed of one recipe (``edgepath bench distill``)."""
    teachers = ", ".join(f"{t['card']} ({t['params_m']} M)" for t in r["teachers"])
    rows = [(n, r[n]) for n in ("live", "cached") if r.get(n)]
    keys = list(dict.fromkeys(k for _, row in rows for k in row["phases_s"]))
    out = [
        f"## Distillation speed: {r['card']}, {teachers} -> {r['student']}",
        "",
        f"{r['device_name']} ({r['device']}, {r['precision']}), batch {r['batch_size']} "
        f"{r['items']}, {r['steps_timed']} timed steps after {r['warmup_steps']}, {r['date']}; "
        f"teachers: {', '.join(t['weights'] for t in r['teachers'])}.",
        "",
        "| teacher side | steps/s | items/s | " + " | ".join(keys) + " |",
        "|---|---:|---:|" + "---:|" * len(keys),
    ]
    for name, row in rows:
        shares = [f"{row['phase_share'].get(k, 0):.0%}" for k in keys]
        out.append(
            f"| {name} | {row['steps_per_s']:.3f} | {row['items_per_s']:.2f} | "
            + " | ".join(shares)
            + " |"
        )
    out += ["", f"Peak memory {r['peak_memory_mb']:.0f} MB ({r['peak_memory_kind']}).", ""]
    return out


def _compact(r: dict[str, Any]) -> dict[str, Any]:
    """A result without its bulky parts (per-pair rows, per-tile lists) for report.json."""
    return {k: v for k, v in r.items() if k not in ("pairs", "per_tile", "_path")} | {
        "source_file": r.get("_path")
    }


def make_report(results: list[dict[str, Any]], out_dir: str | Path) -> dict[str, Any]:
    """Write ``report.md``, ``report.json`` and PNG plots into ``out_dir``.

    Returns:
        ``{"markdown", "json", "images", "n_results"}`` paths.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    md = ["# edgepath benchmark report", ""]
    images: list[str] = []
    order = {"throughput": 0, "compare": 1, "robustness": 2, "fidelity": 3, "distill": 4}
    for i, r in enumerate(sorted(results, key=lambda r: order[r["kind"]])):
        kind = r["kind"]
        if kind == "throughput":
            img = plot_throughput(r, out / f"throughput-{i}.png").name
            md += _md_throughput(r, img)
        elif kind == "compare":
            img = plot_compare(r, out / f"compare-{i}.png").name
            md += _md_compare(r, img)
        elif kind == "robustness":
            name = _slug(f"{r['model']['name']}-{r['suite']}")
            img = plot_robustness(r, out / f"robustness-{name}-{i}.png").name
            board = plot_leaderboard(r, out / f"leaderboard-{name}-{i}.png").name
            images.append(str(out / board))
            md += _md_robustness(r, img) + _md_leaderboard(r, board)
        elif kind == "distill":
            img = None
            md += _md_distill(r)
        else:
            name = _slug(f"{r['candidate']['name']}-vs-{r['reference']['name']}")
            p = plot_fidelity(r, out / f"fidelity-{name}-{i}.png")
            img = p.name if p else None
            md += _md_fidelity(r, img)
        if img:
            images.append(str(out / img))
    write_text_atomic(out / "report.md", "\n".join(md).rstrip() + "\n")
    write_json_atomic(out / "report.json", {"results": [_compact(r) for r in results]})
    return {
        "markdown": str(out / "report.md"),
        "json": str(out / "report.json"),
        "images": images,
        "n_results": len(results),
    }
