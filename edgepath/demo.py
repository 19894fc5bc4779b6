"""The whole job offline on real tissue: teacher → XMAG student → INT8 → engines → numbers, report.

Every stage calls the same library functions as the CLI verbs; nothing here is demo-only except
the choice of small settings. Each stage records itself in ``DIR/demo.json`` when it finishes, so
a rerun reuses finished stages (and redoes everything after a stage it had to redo) unless
``force`` is set.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from edgepath.errors import ConfigError
from edgepath.io import write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

STATE = "demo.json"


@dataclass(frozen=True)
class DemoConfig:
    """Settings of the demo run (defaults: under 5 minutes on 2 CPU cores)."""

    out: Path
    teacher: str = "tiny-teacher"
    teacher_weights: str = ""
    student: str = "vit-mini14"
    steps: int = 300
    batch_size: int = 8
    max_items: int = 96
    synth_tiles: int = 1500
    calib_tiles: int = 64
    heldout_tiles: int = 64
    seed: int = 0
    threads: int = 2
    force: bool = False
    targets: tuple[str, ...] = ("onnx", "openvino", "jetson-orin", "triton", "timm")
    extra_overrides: tuple[str, ...] = field(default_factory=tuple)


Stage = Callable[[DemoConfig, dict[str, Any]], dict[str, Any]]


def _paths(cfg: DemoConfig) -> dict[str, Path]:
    o = cfg.out
    return {
        "slides": o / "slides",
        "student": o / "student",
        "quantized": o / "quantized",
        "export": o / "export",
        "bench": o / "bench",
        "report": o / "report",
    }


def stage_slides(cfg: DemoConfig, state: dict[str, Any]) -> dict[str, Any]:
    """The shipped real slide, and a 4-level slide synthesized from its real tissue."""
    from edgepath.data import SAMPLE_SLIDE
    from edgepath.slides import open_slide, synthesize_slide

    folder = _paths(cfg)["slides"]
    folder.mkdir(parents=True, exist_ok=True)
    sample = folder / SAMPLE_SLIDE.name
    if not sample.exists():
        shutil.copy2(SAMPLE_SLIDE, sample)
    synth = synthesize_slide(folder / "synthetic.tiff", tiles=cfg.synth_tiles, seed=cfg.seed)
    with open_slide(synth) as s:
        info = {"levels": s.level_count, "dimensions": list(s.dimensions), "mpp": s.mpp}
    return {"sample": str(sample), "synthetic": str(synth), "synthetic_info": info}


def stage_distill(cfg: DemoConfig, state: dict[str, Any]) -> dict[str, Any]:
    """XMAG distillation of the teacher into the small student on the two slides."""
    import dataclasses

    from edgepath.distill.checkpoint import checkpoints
    from edgepath.distill.recipe import TeacherRef, load_recipe
    from edgepath.distill.trainer import distill

    overrides = [
        f"student.name={cfg.student}",
        f"train.steps={cfg.steps}",
        f"train.batch_size={cfg.batch_size}",
        f"train.seed={cfg.seed}",
        f"train.checkpoint_every={max(cfg.steps // 2, 1)}",
        f"data.max_items={cfg.max_items}",
        *cfg.extra_overrides,
    ]
    card = load_recipe("xmag-demo", overrides)
    if cfg.teacher != card.teachers[0].card or cfg.teacher_weights:
        teacher = TeacherRef(card=cfg.teacher, weights=cfg.teacher_weights)
        card = dataclasses.replace(card, teachers=(teacher,))
        card.validate()
    out = _paths(cfg)["student"]
    # resume a killed run; a first run has nothing to resume (and no warning to print about it)
    resume = bool(checkpoints(out / "checkpoints"))
    result = distill(card, out=out, slides=_paths(cfg)["slides"], resume=resume)
    return {"artifact": str(out), "result": result}


def teacher_is_stand_in(teacher: str) -> bool:
    """Whether the teacher card (name or path) says ``stand_in = true``: no pathology model."""
    from edgepath import cards

    return bool(cards.load("teachers", teacher).stand_in)


def stage_quantize(cfg: DemoConfig, state: dict[str, Any]) -> dict[str, Any]:
    """INT8 for this CPU (backend picked by measurement), gated on fidelity vs the float student."""
    from edgepath.quantize.pipeline import quantize_model

    out = _paths(cfg)["quantized"]
    manifest = quantize_model(
        _paths(cfg)["student"],
        preset="int8-cpu",
        calib=[_paths(cfg)["slides"]],
        out=out,
        calibration_tiles=cfg.calib_tiles,
        heldout_tiles=cfg.heldout_tiles,
        threads=cfg.threads,
        seed=cfg.seed,
    )
    return {"artifact": str(out), "manifest": manifest}


def stage_export(cfg: DemoConfig, state: dict[str, Any]) -> dict[str, Any]:
    """ONNX, OpenVINO, a Jetson Orin bundle, a Triton repository and a timm folder, each
    parity-checked (the timm folder by loading it with timm.create_model)."""
    import json

    from edgepath.export.run import export

    p = _paths(cfg)
    quantized = json.loads((p["quantized"] / "edgepath.json").read_text())
    # int8-cpu picks its backend by measurement: an OpenVINO IR deploys to openvino (and Triton's
    # openvino backend); the ONNX and Jetson targets take the float student (the Jetson bundle at
    # FP16, built strongly typed on the device).
    sources = {
        "onnx": (p["student"], None),
        "openvino": (p["quantized"], None)
        if quantized.get("engine") == "openvino"
        else (p["student"], None),
        "jetson-orin": (p["student"], "fp16"),
        "triton": (p["student"], None),
        "timm": (p["student"], None),
    }
    results = {}
    for target in cfg.targets:
        src, precision = sources.get(target, (p["student"], None))
        out = p["export"] / target
        results[target] = export(src, target=target, out=out, precision=precision, overwrite=True)
    return {"targets": results}


def stage_bench(cfg: DemoConfig, state: dict[str, Any]) -> dict[str, Any]:
    """Throughput per engine/precision, teacher-vs-student WSI/min, robustness, fidelity."""
    from edgepath.bench.compare import run_compare
    from edgepath.bench.results import write_result
    from edgepath.bench.throughput import run_throughput
    from edgepath.eval.embedding import open_measured
    from edgepath.eval.fidelity import as_result as fidelity_result
    from edgepath.eval.fidelity import fidelity_run, load_tiles
    from edgepath.eval.robustness import as_result, synthetic_robustness

    p = _paths(cfg)
    folder = p["bench"]
    folder.mkdir(parents=True, exist_ok=True)
    synthetic = Path(state["slides"]["synthetic"])
    files = {}
    thr = run_throughput(
        [str(p["student"]), str(p["quantized"])],
        engines=("torch", "onnxruntime", "openvino"),
        precisions=("fp32", "int8"),
        batches=(16,),
        threads=cfg.threads,
        slide=synthetic,
        rounds=3,
    )
    files["throughput"] = write_result(folder, thr)
    cmp_ = run_compare(cfg.teacher, str(p["quantized"]), slide=synthetic, threads=cfg.threads)
    files["compare"] = write_result(folder, cmp_)
    # Robustness on the synthetic stain/scanner domain suite (PLISM itself is not shipped):
    # the float student and its INT8 version, so the report shows what quantization cost.
    for label, ref in (("student", p["student"]), ("int8", p["quantized"])):
        engine, info = open_measured(str(ref), threads=cfg.threads)
        with engine:
            rob = synthetic_robustness(engine, seed=cfg.seed)
        files[f"robustness-{label}"] = write_result(
            folder, as_result(rob, info, threads=cfg.threads), label=label
        )
    # Fidelity of the INT8 model against its float parent, on tiles of the synthetic slide.
    a, ia = open_measured(str(p["quantized"]), threads=cfg.threads)
    b, ib = open_measured(str(p["student"]), threads=cfg.threads)
    with a, b:
        tiles, desc = load_tiles(str(synthetic), tile_px=ia["tile_px"], max_tiles=128)
        fid = fidelity_run(a, b, tiles)
    files["fidelity"] = write_result(
        folder,
        fidelity_result(fid, ia, ib, tiles=desc),
        label="int8-vs-float",
    )
    return {"results": {k: str(v) for k, v in files.items()}}


def stage_report(cfg: DemoConfig, state: dict[str, Any]) -> dict[str, Any]:
    """``report.md`` with every stage's figures and plots."""
    import json

    from edgepath.bench.report import make_report

    results = [json.loads(Path(f).read_text()) for f in state["bench"]["results"].values()]
    folder = _paths(cfg)["report"]
    make_report(results, folder)
    md = folder / "report.md"
    write_text_atomic(md, pipeline_section(cfg, state) + "\n" + md.read_text())
    return {"report": str(md)}


def _f(x: Any, nd: int = 3) -> str:
    return "–" if x is None else f"{x:.{nd}f}"


def _quantize_lines(qm: dict[str, Any]) -> list[str]:
    """The quantization gate and speed tables of the demo report."""
    gate = qm.get("gate", {})
    fig = gate.get("figures", {})
    thr = gate.get("thresholds", {})
    backend = qm.get("backend", {})
    lines = [
        "",
        "## Quantization gate (INT8 vs float student, held-out tiles)",
        "",
        f"Preset `int8-cpu`: backend **{backend.get('name')}** chosen by {backend.get('selection')} "
        f"speed on this CPU; gate **{'passed' if gate.get('passed') else 'FAILED'}**.",
        "",
        f"| cosine (≥ {thr.get('min_cosine')}) | p1 cosine (≥ {thr.get('min_cosine_p1')}) "
        "| centered cosine | kNN-10 | robustness drop |",
        "|---:|---:|---:|---:|---:|",
        f"| {_f(fig.get('cosine'), 5)} | {_f(fig.get('cosine_p1'), 5)} | "
        f"{_f(fig.get('centered_cosine'), 4)} | {_f(fig.get('knn10_agreement'))} | "
        f"{_f(fig.get('robustness_drop'), 4)} |",
        "",
        "| backend | fp32 tiles/s | int8 tiles/s | int8 / fp32 |",
        "|---|---:|---:|---:|",
    ]
    for name, b in qm.get("speed", {}).get("backends", {}).items():
        lines.append(
            f"| {name} | {_f(b.get('fp32_tiles_per_s'), 1)} | {_f(b.get('quantized_tiles_per_s'), 1)} "
            f"| {_f(b.get('speedup'), 2)} |"
        )
    return lines


def pipeline_section(cfg: DemoConfig, state: dict[str, Any]) -> str:
    """Markdown of every stage's figures: data, distillation, quantization gate, export parity."""
    sl, di = state["slides"], state["distill"]["result"]
    qm = state["quantize"]["manifest"]
    stand_in = teacher_is_stand_in(cfg.teacher)
    who = (
        f"`{cfg.teacher}` (**random-weight stand-in, not a pathology model**: the numbers show "
        "the pipeline working, not a useful encoder)"
        if stand_in
        else f"`{cfg.teacher}`"
    )
    info = sl["synthetic_info"]
    lines = [
        "# edgepath demo",
        "",
        f"Teacher {who} → `xmag` student `{cfg.student}` → INT8 → engines, on the shipped real "
        f"slide and a {info['levels']}-level slide synthesized from its tissue "
        f"({info['dimensions'][0]}×{info['dimensions'][1]} px at {info['mpp']:.3f} µm/px).",
        "",
        "| stage | seconds |",
        "|---|---:|",
        *[
            f"| {k} | {v['seconds']:.1f} |"
            for k, v in state.items()
            if isinstance(v, dict) and "seconds" in v
        ],
        "",
        "## Distillation (held-out tiles, student vs teacher)",
        "",
        f"Recipe `xmag-demo`, {di.get('steps', cfg.steps)} steps, student at "
        f"{di.get('input', {}).get('mpp', 2.0)} µm/px, teacher at 0.5 µm/px (4×4 tiles per region).",
        "",
        "| | cosine | centered cosine | kNN-10 agreement | tiles |",
        "|---|---:|---:|---:|---:|",
    ]
    for label, key in (("at initialisation", "fidelity_init"), ("after training", "fidelity")):
        f = di.get(key) or {}
        lines.append(
            f"| {label} | {_f(f.get('cosine'))} | {_f(f.get('centered_cosine'))} | "
            f"{_f(f.get('knn10_agreement'))} | {f.get('n_tiles', '–')} |"
        )
    lines += _quantize_lines(qm)
    lines += [
        "",
        "## Export (parity on real tiles)",
        "",
        "| target | precision | checked on | min cosine | threshold |",
        "|---|---|---|---:|---:|",
    ]
    for target, m in state["export"]["targets"].items():
        for engine, par in (m.get("parity") or {}).items():
            lines.append(
                f"| {target} | {m.get('precision')} | {engine} | {_f(par.get('min_cosine'), 6)} "
                f"| {par.get('threshold')} |"
            )
    lines.append("")
    return "\n".join(lines)


STAGES: list[tuple[str, Stage]] = [
    ("slides", stage_slides),
    ("distill", stage_distill),
    ("quantize", stage_quantize),
    ("export", stage_export),
    ("bench", stage_bench),
    ("report", stage_report),
]


def run_demo(
    cfg: DemoConfig, *, on_stage: Callable[[str, str, float], None] | None = None
) -> dict[str, Any]:
    """Run (or resume) the demo; returns the state with each stage's result and seconds."""
    import json

    cfg.out.mkdir(parents=True, exist_ok=True)
    state_path = cfg.out / STATE
    state: dict[str, Any] = {}
    if state_path.is_file() and not cfg.force:
        try:
            state = json.loads(state_path.read_text())
        except json.JSONDecodeError:
            state = {}
        if state.get("config", {}).get("teacher") not in (None, cfg.teacher):
            raise ConfigError(
                f"{cfg.out} holds a demo run with teacher {state['config']['teacher']}; "
                "pass --force or another -o"
            )
    state["config"] = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(cfg).items()}
    redo = cfg.force
    for name, fn in STAGES:
        done = state.get(name, {}).get("status") == "done"
        if done and not redo:
            if on_stage:
                on_stage(name, "reused", state[name].get("seconds", 0.0))
            continue
        redo = True  # everything after a redone stage is redone too
        if on_stage:
            on_stage(name, "running", 0.0)
        t0 = time.perf_counter()
        result = fn(cfg, state)
        state[name] = {"status": "done", "seconds": round(time.perf_counter() - t0, 2), **result}
        write_json_atomic(state_path, state)
        if on_stage:
            on_stage(name, "done", state[name]["seconds"])
    return state
