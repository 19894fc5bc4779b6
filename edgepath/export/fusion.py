"""Does fusing preprocessing (uint8 NHWC -> normalised NCHW) into the graph pay off? Measure it.

Run: ``python -m edgepath.export.fusion --model vit-s14 --batch 16 --repeats 7 --json``.

Both variants start from the same uint8 tiles, as ``embed`` hands them over: *unfused* normalises
in numpy (``edgepath.runtime.normalize``) and feeds float32 NCHW; *fused* feeds the uint8 tiles to
a graph that casts, scales and transposes itself. Timings alternate between the two variants
(A/B/A/B) after a warm-up, and the report gives medians and the ratio measured side by side.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np


def measure(
    encoder: Any,
    *,
    batch: int = 16,
    repeats: int = 7,
    engines: tuple[str, ...] = ("onnxruntime", "openvino"),
    threads: int | None = None,
) -> dict[str, Any]:
    """Median seconds per batch, unfused vs fused, per engine; ``ratio`` = unfused / fused."""
    from edgepath.export.onnx import export_onnx
    from edgepath.export.parity import parity_tiles
    from edgepath.metrics import rowwise_cosine
    from edgepath.runtime.onnxruntime_engine import OnnxRuntimeEngine
    from edgepath.runtime.openvino_engine import OpenVINOEngine

    px = encoder.spec.input.tile_px
    base = parity_tiles(px, n=16)
    tiles = np.ascontiguousarray(np.resize(base, (batch, px, px, 3)))
    cls = {"onnxruntime": OnnxRuntimeEngine, "openvino": OpenVINOEngine}
    out: dict[str, Any] = {"batch": batch, "repeats": repeats, "engines": {}}
    with tempfile.TemporaryDirectory() as tmp:
        plain = export_onnx(encoder, Path(tmp) / "plain.onnx")
        fused = export_onnx(encoder, Path(tmp) / "fused.onnx", fuse_preprocess=True)
        for name in engines:
            a = cls[name](plain, spec=encoder.spec, threads=threads)
            b = cls[name](fused, spec=encoder.spec, threads=threads)
            ea, eb = a.embed_tiles(tiles), b.embed_tiles(tiles)  # warm-up + same result
            cos = float(rowwise_cosine(ea, eb).min())
            ta, tb, tpre = [], [], []
            for _ in range(repeats):
                t0 = time.perf_counter()
                a.embed_tiles(tiles)
                ta.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                b.embed_tiles(tiles)
                tb.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                from edgepath.runtime import normalize

                normalize(tiles, encoder.spec)
                tpre.append(time.perf_counter() - t0)
            ma, mb = statistics.median(ta), statistics.median(tb)
            out["engines"][name] = {
                "unfused_s": round(ma, 4),
                "fused_s": round(mb, 4),
                "numpy_preprocess_s": round(statistics.median(tpre), 4),
                "ratio_unfused_over_fused": round(ma / mb, 3),
                "min_cosine_fused_vs_unfused": round(cos, 7),
                "input_bytes_unfused": int(batch * 3 * px * px * 4),
                "input_bytes_fused": int(batch * 3 * px * px),
            }
            a.close()
            b.close()
    return out


def main(argv: list[str] | None = None) -> None:
    """Command line: print the measurement (JSON with --json)."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="vit-s14", help="anything edgepath.models.resolve takes")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    from edgepath.models import resolve

    encoder = resolve(args.model).require_encoder()
    result = measure(encoder, batch=args.batch, repeats=args.repeats, threads=args.threads)
    result["model"] = args.model
    if args.json:
        print(json.dumps(result))
        return
    for name, r in result["engines"].items():
        print(
            f"{name:<12} unfused {r['unfused_s']:.3f} s  fused {r['fused_s']:.3f} s  "
            f"ratio {r['ratio_unfused_over_fused']:.3f}  (numpy preprocessing "
            f"{r['numpy_preprocess_s']:.3f} s, min cosine {r['min_cosine_fused_vs_unfused']})"
        )


if __name__ == "__main__":
    main()
