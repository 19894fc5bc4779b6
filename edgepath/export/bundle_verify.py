"""Verify an edgepath deployment bundle: embed the shipped tiles, compare with the reference.

This file is copied into every Jetson bundle as ``verify.py`` and runs there on its own (numpy,
plus TensorRT with torch or cuda-python for device buffers; or onnxruntime with ``--cpu``): the
device does not need edgepath installed.

    python3 verify.py            # the TensorRT engine built by build_engine.sh (model.plan)
    python3 verify.py --cpu      # model.onnx in onnxruntime on the CPU (any machine)

Exit status 0 when every tile's embedding has cosine >= the bundle's threshold with the
reference embeddings computed from the validated model at export time; 1 otherwise; 2 when
something is missing. One JSON line on stdout says what was measured.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

MANIFEST = "edgepath.json"


def load(folder: Path) -> dict:
    """The ``bundle`` table of the manifest."""
    path = folder / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: run verify.py inside the bundle folder")
    return json.loads(path.read_text())["bundle"]


def prepare(tiles: np.ndarray, bundle: dict) -> np.ndarray:
    """uint8 NHWC tiles -> the graph's input (uint8 NHWC, or normalised float32 NCHW)."""
    if bundle["input_format"] == "nhwc-uint8":
        return np.ascontiguousarray(tiles)
    x = tiles.astype(np.float32) / np.float32(255.0)
    x = (x - np.asarray(bundle["mean"], np.float32)) / np.asarray(bundle["std"], np.float32)
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


def run_onnxruntime(folder: Path, bundle: dict, batches: list[np.ndarray]) -> np.ndarray:
    """Embed with onnxruntime on the CPU."""
    import onnxruntime as ort

    sess = ort.InferenceSession(str(folder / bundle["onnx"]), providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    return np.concatenate([sess.run(None, {name: b})[0] for b in batches])


def run_tensorrt(folder: Path, bundle: dict, batches: list[np.ndarray]) -> np.ndarray:
    """Embed with the TensorRT plan (TensorRT 8.5+ tensor API), buffers from torch or cudart."""
    import tensorrt as trt

    plan = folder / bundle["plan"]
    if not plan.is_file():
        raise FileNotFoundError(f"{plan} not found: run ./build_engine.sh first")
    logger = trt.Logger(trt.Logger.WARNING)
    engine = trt.Runtime(logger).deserialize_cuda_engine(plan.read_bytes())
    if engine is None:
        raise RuntimeError(f"{plan}: TensorRT could not load it; rebuild with ./build_engine.sh")
    ctx = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    inp = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT)
    out = next(n for n in names if engine.get_tensor_mode(n) == trt.TensorIOMode.OUTPUT)
    dim = int(bundle["embed_dim"])
    results = []
    try:
        import torch

        for b in batches:
            x = torch.from_numpy(b).cuda()
            y = torch.empty((len(b), dim), dtype=torch.float32, device="cuda")
            ctx.set_input_shape(inp, tuple(b.shape))
            ctx.set_tensor_address(inp, x.data_ptr())
            ctx.set_tensor_address(out, y.data_ptr())
            stream = torch.cuda.current_stream()
            ctx.execute_async_v3(stream.cuda_stream)
            stream.synchronize()
            results.append(y.cpu().numpy())
        return np.concatenate(results)
    except ImportError:
        pass
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        from cuda import cudart  # cuda-python < 12.6
    for b in batches:
        y = np.empty((len(b), dim), dtype=np.float32)
        _, d_in = cudart.cudaMalloc(b.nbytes)
        _, d_out = cudart.cudaMalloc(y.nbytes)
        h2d, d2h = (
            cudart.cudaMemcpyKind.cudaMemcpyHostToDevice,
            cudart.cudaMemcpyKind.cudaMemcpyDeviceToHost,
        )
        cudart.cudaMemcpy(d_in, b.ctypes.data, b.nbytes, h2d)
        ctx.set_input_shape(inp, tuple(b.shape))
        ctx.set_tensor_address(inp, int(d_in))
        ctx.set_tensor_address(out, int(d_out))
        ctx.execute_async_v3(0)
        cudart.cudaDeviceSynchronize()
        cudart.cudaMemcpy(y.ctypes.data, d_out, y.nbytes, d2h)
        cudart.cudaFree(d_in)
        cudart.cudaFree(d_out)
        results.append(y)
    return np.concatenate(results)


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise cosine (float64)."""
    a, b = a.astype(np.float64), b.astype(np.float64)
    return (a * b).sum(1) / np.maximum(np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1), 1e-12)


def verify(folder: Path, *, cpu: bool = False, min_cosine: float | None = None) -> dict:
    """Run the check; returns the JSON-able result (``ok`` says whether it passed)."""
    bundle = load(folder)
    tiles = np.load(folder / bundle["tiles"])
    reference = np.load(folder / bundle["reference"])
    threshold = float(bundle["min_cosine"] if min_cosine is None else min_cosine)
    if cpu:
        # The CPU mode checks the ONNX the engine is built from; an FP16 graph on the CPU keeps
        # its casts, so its threshold is the bundle's too.
        runner, engine = run_onnxruntime, "onnxruntime-cpu"
    else:
        runner, engine = run_tensorrt, "tensorrt"
    step = max(1, int(bundle.get("verify_batch", 4)))
    batches = [prepare(tiles[i : i + step], bundle) for i in range(0, len(tiles), step)]
    emb = runner(folder, bundle, batches)
    if emb.shape != reference.shape:
        return {"ok": False, "engine": engine, "error": f"shape {emb.shape} != {reference.shape}"}
    cos = cosine(emb, reference)
    finite = bool(np.isfinite(emb).all())
    return {
        "ok": bool(finite and cos.min() >= threshold),
        "engine": engine,
        "precision": bundle["precision"],
        "n_tiles": int(len(tiles)),
        "min_cosine": round(float(cos.min()), 7) if finite else None,
        "mean_cosine": round(float(cos.mean()), 7) if finite else None,
        "threshold": threshold,
    }


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cpu", action="store_true", help="run model.onnx in onnxruntime (CPU)")
    ap.add_argument("--min-cosine", type=float, default=None, help="override the threshold")
    ap.add_argument("--dir", default=str(Path(__file__).resolve().parent), help="bundle folder")
    args = ap.parse_args(argv)
    try:
        result = verify(Path(args.dir), cpu=args.cpu, min_cosine=args.min_cosine)
    except (FileNotFoundError, ImportError, RuntimeError) as exc:
        print(json.dumps({"ok": False, "error": str(exc)}))
        print(f"verify: {exc}", file=sys.stderr)
        return 2
    print(json.dumps(result))
    if not result["ok"]:
        print(
            f"verify: FAILED: min cosine {result.get('min_cosine')} < {result.get('threshold')}",
            file=sys.stderr,
        )
        return 1
    print(f"verify: ok ({result['engine']}, min cosine {result['min_cosine']})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
