"""Pipeline overhead of ``edgepath embed``: end-to-end tiles/s vs the engine on pre-loaded tensors.

Both are measured side by side in one run, interleaved (engine, pipeline, engine, ...), so that
load from other processes hits both alike; the ratio is the pipeline's figure over the mean of
the engine runs around it. The pipeline figure counts everything ``Embedder.process`` does for a
slide: tissue detection and tiling, reading and decoding (in reader processes), normalisation,
inference and the HDF5 write. It also checks the features against direct torch embedding of the
same tiles and the coords against ``tile_slide``.

Run (writes one JSON row per line to --out and prints it)::

    python benchmarks/embed_overhead.py --student vit-s14 --engine onnxruntime \
        --slide /tmp/full.tiff --tiles 6000 --out embed_overhead.jsonl
    python benchmarks/embed_overhead.py --student vit-s14 --engine torch --device cuda \
        --precision bf16 --batch 256 --preload 512 --workers 8 --tiles 3000
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def build_model(student: str, folder: Path, *, onnx: bool = True) -> Path:
    """A student artifact with torch weights and (``onnx``) ``model.onnx`` (seeded random weights)."""
    from edgepath.export.onnx import export_onnx
    from edgepath.models import resolve
    from edgepath.models.artifact import is_artifact, save_encoder, write_manifest

    if is_artifact(folder):
        return folder
    enc = resolve(student).encoder
    manifest = save_encoder(folder, enc, kind="student", name=student)
    if onnx:
        export_onnx(enc, folder / "model.onnx")
        manifest["files"]["onnx"] = "model.onnx"
        write_manifest(folder, manifest)
    return folder


class _Timer:
    """Reporter that records when a slide's embedding starts and its last batch ends."""

    def __init__(self) -> None:
        self.start = self.end = 0.0
        self.n = 0

    def slide_started(self, slide, n_tiles) -> None:
        self.start, self.n = time.perf_counter(), 0

    def tiles_done(self, n) -> None:
        self.n += n
        self.end = time.perf_counter()

    def slide_finished(self, result) -> None:
        pass


def proc_cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of other processes so far (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += (int(fields[11]) + int(fields[12])) / tick  # utime, stime
    return total


def engine_run(engine, x: np.ndarray, *, batch: int, tiles: int) -> tuple[float, float]:
    """(tiles/s, CPU s per tile) of ``engine`` on pre-loaded tiles, cycled, as ``embed`` feeds
    it: uint8 tiles if ``x`` holds them, else normalised float32, one batch in flight
    (``Engine.submit``: an asynchronous engine runs a batch while the next one is copied)."""
    n, pending = 0, None
    u8 = x.dtype == np.uint8
    c0, t0 = time.process_time(), time.perf_counter()
    while n < tiles:
        for s in range(0, len(x), batch):
            fetch = engine.submit(x[s : s + batch], tiles=u8)
            if pending is not None:
                pending()
            pending = fetch
            n += len(x[s : s + batch])
            if n >= tiles:
                break
    if pending is not None:  # tiles <= 0: nothing was submitted
        pending()
    return n / (time.perf_counter() - t0), (time.process_time() - c0) / max(n, 1)


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", type=Path, help="Artifact folder (default: build --student).")
    p.add_argument("--student", default="vit-s14", help="Student to build when --model is absent.")
    p.add_argument("--engine", default="onnxruntime")
    p.add_argument("--device", default=None, help="The torch engine's device (cpu, cuda, auto).")
    p.add_argument(
        "--precision", default=None, help="The torch engine's (fp32; fp16/bf16 on CUDA)."
    )
    p.add_argument("--slide", type=Path, help="Slide (default: synthesize --tiles tiles).")
    p.add_argument("--tiles", type=int, default=6000, help="Tissue tiles of a synthesized slide.")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--preload", type=int, default=128, help="Tiles held in memory for the engine.")
    p.add_argument("--engine-tiles", type=int, default=None, help="Tiles per engine run.")
    p.add_argument("--repeats", type=int, default=1, help="Pipeline runs (engine runs: +1).")
    p.add_argument("--check", type=int, default=64, help="Tiles checked against torch.")
    p.add_argument("--out", type=Path, help="Append the JSON row to this file.")
    args = p.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="edgepath-embed-bench-"))
    try:
        return _run(args, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def check_features(model: Path, slide: Path, ff, pre, n: int) -> np.ndarray:
    """Cosine of ``n`` written features (spread over the slide) against direct torch embedding of
    the same tiles."""
    import torch

    from edgepath.metrics import rowwise_cosine
    from edgepath.models.artifact import load_encoder
    from edgepath.models.encoder import to_tensor
    from edgepath.slides import open_slide

    enc = load_encoder(model)
    idx = np.linspace(0, len(ff.coords) - 1, min(n, len(ff.coords))).astype(int)
    with open_slide(slide) as s:
        tiles = np.stack(
            [s.read_tile(*map(int, ff.coords[i]), mpp=pre.mpp, tile_px=pre.tile_px) for i in idx]
        )
    with torch.no_grad():
        ref = enc(to_tensor(tiles, enc.spec)).numpy()
    return rowwise_cosine(ff.features[idx], ref)


def _run(args: argparse.Namespace, work: Path) -> dict:
    from edgepath.embed.features import read_features
    from edgepath.embed.model import open_model
    from edgepath.embed.reader import Preprocess, TileReader
    from edgepath.embed.run import Embedder
    from edgepath.eval.machine import describe
    from edgepath.slides import open_slide, synthesize_slide, tile_slide

    model = args.model or build_model(
        args.student, work / args.student, onnx=args.engine != "torch"
    )
    slide = args.slide or work / "synthetic.tiff"
    if not slide.exists():
        synthesize_slide(slide, tiles=args.tiles)
    engine, info = open_model(
        model,
        engine=args.engine,
        threads=args.threads,
        device=args.device,
        precision=args.precision,
    )
    spec = engine.spec
    with open_slide(slide) as s:
        grid = tile_slide(s, mpp=spec.input.mpp, tile_px=spec.input.tile_px)
    pre = Preprocess(
        mpp=spec.input.mpp,
        tile_px=spec.input.tile_px,
        mean=spec.input.mean,
        std=spec.input.std,
        uint8=engine.input_format == "nhwc-uint8",  # what embed hands this engine
    )
    with TileReader(pre, batch=args.preload, workers=0) as r:
        x = next(iter(r.batches(slide, grid.coords[: args.preload])))[1].copy()
    engine.submit(x[: args.batch], tiles=pre.uint8)()  # warm-up
    engine_tiles = args.engine_tiles or min(len(grid.coords), 4 * args.preload)

    timer = _Timer()
    out_dir = work / "features"
    engine_runs, engine_cpu, e2e_runs, embed_runs, e2e_cpu = [], [], [], [], []
    with Embedder(
        engine, info, out_dir, batch=args.batch, workers=args.workers, force=True, reporter=timer
    ) as emb:
        pids = [p.pid for p in emb.reader._procs]

        def engine_once() -> None:
            tps, cpu = engine_run(engine, x, batch=args.batch, tiles=engine_tiles)
            engine_runs.append(tps)
            engine_cpu.append(cpu)

        engine_once()
        for _ in range(args.repeats):
            c0, w0 = time.process_time(), proc_cpu_seconds(pids)
            r = emb.process(slide)
            if r.status != "done":
                raise SystemExit(f"pipeline failed: {r.error}")
            cpu = time.process_time() - c0 + proc_cpu_seconds(pids) - w0
            e2e_runs.append(r.n_tiles / r.seconds)
            e2e_cpu.append(cpu / r.n_tiles)
            embed_runs.append(timer.n / (timer.end - timer.start))
            engine_once()
        ff = read_features(r.output)
        # the readers alone: how many tiles/s they can feed an engine (no inference)
        c0, w0, t0 = time.process_time(), proc_cpu_seconds(pids), time.perf_counter()
        n_read = sum(len(b) for _, b in emb.reader.batches(slide, grid.coords[:engine_tiles]))
        read_tps = n_read / (time.perf_counter() - t0)
        read_cpu = (time.process_time() - c0 + proc_cpu_seconds(pids) - w0) / n_read

    # correctness on the side: coords as tile_slide, features as torch on the same tiles
    coords_match = bool(np.array_equal(ff.coords, grid.coords))
    cos = check_features(model, slide, ff, pre, args.check) if args.check else None

    engine_med = statistics.median(engine_runs)
    row = {
        "benchmark": "embed_overhead",
        "machine": describe(threads=args.threads),
        "load_avg_1m": os.getloadavg()[0],
        "model": info.id,
        "engine": engine.name,
        "device": str(engine.device),
        "precision": engine.precision,
        "batch": args.batch,
        "workers": args.workers,
        "threads": args.threads,
        "slide": str(slide),
        "slide_dimensions": list(open_slide(slide).dimensions),
        "n_tiles": len(grid.coords),
        "engine_tiles_per_s": [round(v, 3) for v in engine_runs],
        "pipeline_tiles_per_s": [round(v, 3) for v in e2e_runs],
        "pipeline_embed_phase_tiles_per_s": [round(v, 3) for v in embed_runs],
        "engine_median": round(engine_med, 3),
        "engine_cpu_ms_per_tile": [round(1000 * v, 2) for v in engine_cpu],
        "pipeline_cpu_ms_per_tile": [round(1000 * v, 2) for v in e2e_cpu],
        "readers_only_tiles_per_s": round(read_tps, 2),
        "readers_only_cpu_ms_per_tile": round(1000 * read_cpu, 2),
        # CPU-bound and alone on the machine, throughput goes as 1 / CPU per tile: this ratio
        # is the pipeline/engine throughput ratio that shared-machine noise cannot fake.
        "ratio_cpu_time": round(statistics.median(engine_cpu) / statistics.median(e2e_cpu), 3),
        "pipeline_median": round(statistics.median(e2e_runs), 3),
        "ratio_end_to_end": round(statistics.median(e2e_runs) / engine_med, 3),
        "ratio_embed_phase": round(statistics.median(embed_runs) / engine_med, 3),
        "wsi_per_min": round(60 * statistics.median(e2e_runs) / len(grid.coords), 4),
        "coords_match_tile_slide": coords_match,
        # --check 0: not checked (a quantized artifact has no torch weights to check against)
        "cosine_vs_torch_min": None if cos is None else round(float(cos.min()), 6),
        "cosine_checked_tiles": 0 if cos is None else len(cos),
    }
    line = json.dumps(row)
    print(line)
    if args.out:
        with open(args.out, "a") as f:
            f.write(line + "\n")
    return row


if __name__ == "__main__":
    main()
