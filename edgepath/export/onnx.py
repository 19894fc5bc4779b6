"""ONNX export: fixed tile size, dynamic batch, opset ≥ 17 (fused LayerNorm), parity on real tiles.

Why opset 17: ``LayerNormalization`` entered the default ONNX domain in opset 17; below it the
exporters decompose LayerNorm into ReduceMean/Sub/Pow/Sqrt/Div, whose variance term overflows in
FP16 on the large residual-stream outliers of ViTs (TensorRT warns about exactly this and keeps a
fused LayerNorm in FP32 only when it sees the op). Opset 17 is also the newest that TensorRT 8.6
(JetPack 5) parses, so one file serves JetPack 5, 6 and 7.

Position embeddings: the encoder is built at the spec's ``tile_px`` (timm resamples pretrained
position embeddings to it once, when the weights are loaded), and the input is fixed at that size,
so the exported graph carries the resampled table as a constant: no interpolation at run time.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import warnings
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from edgepath.errors import ConfigError, ToleranceError
from edgepath.export.parity import Parity, check_parity
from edgepath.io import atomic_path

if TYPE_CHECKING:
    from torch import nn

    from edgepath.models.encoder import Encoder

log = logging.getLogger(__name__)

INPUT_NAME = "pixel_values"
INPUT_NAME_UINT8 = "tiles"
OUTPUT_NAME = "embedding"
MIN_OPSET = 17

#: Ops kept in FP32 when an ONNX graph is autocast to FP16: LayerNorm (variance overflow on ViT
#: residual outliers), Softmax (exp overflow), and the reductions/pow of any decomposed norm.
FP16_KEEP_FP32 = (
    "LayerNormalization",
    "Softmax",
    "ReduceMean",
    "Pow",
    "Sqrt",
    "Erf",
)


def _fused_preprocess(encoder: Encoder) -> nn.Module:
    """Wrap an encoder so that it takes uint8 NHWC tiles: cast, /255, mean/std and permute in-graph.

    (x / 255 - mean) / std is folded into one per-channel multiply-add: x * a + b with
    a = 1 / (255 std), b = -mean / std.
    """
    import torch
    from torch import nn

    mean = torch.tensor(encoder.spec.input.mean, dtype=torch.float32)
    std = torch.tensor(encoder.spec.input.std, dtype=torch.float32)

    class Fused(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.encoder = encoder
            self.register_buffer("scale", (1.0 / (255.0 * std)).view(1, 3, 1, 1))
            self.register_buffer("shift", (-mean / std).view(1, 3, 1, 1))

        def forward(self, tiles: torch.Tensor) -> torch.Tensor:
            x = tiles.permute(0, 3, 1, 2).to(torch.float32)
            return self.encoder(x * self.scale + self.shift)

    return Fused().eval()


def export_onnx(
    encoder: Encoder,
    path: str | Path,
    *,
    opset: int = 17,
    batch_dynamic: bool = True,
    fuse_preprocess: bool = False,
    exporter: Literal["auto", "torchscript", "dynamo"] = "auto",
) -> Path:
    """Export an encoder to ONNX: (N, 3, tile_px, tile_px) float32 in, (N, dim) float32 out.

    Args:
        encoder: The torch encoder (eval mode is set here).
        path: The ``.onnx`` file to write (atomically).
        opset: ONNX opset, at least 17 so that LayerNorm stays one ``LayerNormalization`` op.
        batch_dynamic: Dynamic batch axis (``batch``); else the batch is fixed at 1.
        fuse_preprocess: Take uint8 NHWC tiles (input ``tiles``) and normalise inside the graph.
        exporter: ``torchscript`` (the tracer: fast, emits opset 17 natively), ``dynamo``
            (``torch.export``; emits opset ≥ 18), or ``auto``: the tracer for opset 17 while this
            torch still ships it, else dynamo.

    Returns:
        The path written.

    Raises:
        ConfigError: Opset below 17, or an export that lost the fused LayerNorm.
    """
    import torch

    if opset < MIN_OPSET:
        raise ConfigError(
            f"opset {opset} would decompose LayerNorm (overflows in FP16 on ViT outliers); "
            f"use opset >= {MIN_OPSET}"
        )
    path = Path(path)
    encoder = encoder.eval()
    px = encoder.spec.input.tile_px
    if fuse_preprocess:
        module = _fused_preprocess(encoder)
        example = torch.randint(0, 256, (2, px, px, 3), dtype=torch.uint8)
        in_name = INPUT_NAME_UINT8
    else:
        module = encoder
        example = torch.randn(2, 3, px, px)
        in_name = INPUT_NAME
    if not batch_dynamic:
        example = example[:1]
    if exporter == "auto":
        exporter = "torchscript" if opset == 17 and _has_torchscript_exporter() else "dynamo"
    with atomic_path(path, suffix=".onnx") as tmp, torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer and deprecation chatter; parity is checked
        _EXPORTERS[exporter](
            module, example, tmp, opset=opset, in_name=in_name, dynamic=batch_dynamic
        )
        _finalize_graph(tmp, encoder, batch_dynamic=batch_dynamic)
    log.info("exported %s (opset %d, %s exporter)", path, opset, exporter)
    return path


def _torchscript(module, example, tmp: Path, *, opset: int, in_name: str, dynamic: bool) -> None:
    """The tracer (``torch.onnx.export(dynamo=False)``): emits opset 17 natively."""
    import torch

    torch.onnx.export(
        module,
        (example,),
        str(tmp),
        dynamo=False,
        opset_version=opset,
        input_names=[in_name],
        output_names=[OUTPUT_NAME],
        dynamic_axes={in_name: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if dynamic else None,
        do_constant_folding=True,
    )


def _dynamo(module, example, tmp: Path, *, opset: int, in_name: str, dynamic: bool) -> None:
    """``torch.export`` based (``torch.onnx.export(dynamo=True)``): emits opset >= 18."""
    import torch

    dims = {0: torch.export.Dim("batch", min=1, max=4096)} if dynamic else None
    arg = "tiles" if in_name == INPUT_NAME_UINT8 else "x"  # the module's forward argument
    with contextlib.redirect_stdout(sys.stderr):  # its progress lines: keep --json clean
        program = torch.onnx.export(
            module,
            (example,),
            dynamo=True,
            opset_version=max(opset, 18),
            input_names=[in_name],
            output_names=[OUTPUT_NAME],
            dynamic_shapes={arg: dims} if dims else None,
            optimize=True,
            verbose=False,
        )
    program.save(str(tmp), external_data=False)


_EXPORTERS = {"torchscript": _torchscript, "dynamo": _dynamo}


def _has_torchscript_exporter() -> bool:
    try:
        from torch.onnx import utils  # noqa: F401  (the TorchScript exporter's module)
    except ImportError:  # pragma: no cover - removed in a future torch
        return False
    return True


def _finalize_graph(path: Path, encoder: Encoder, *, batch_dynamic: bool) -> None:
    """Name the output shape (batch, dim) and check the graph: valid, fused LayerNorm kept.

    The tracer leaves the embedding width symbolic after the CLS ⊕ mean-patch ``Concat``;
    runtimes and Triton configs read it from the graph, so it is written in.
    """
    import onnx
    from torch import nn

    model = onnx.load(str(path))
    out = model.graph.output[0].type.tensor_type.shape
    del out.dim[:]
    first = out.dim.add()
    if batch_dynamic:
        first.dim_param = "batch"
    else:
        first.dim_value = 1
    out.dim.add().dim_value = encoder.embed_dim
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    n_ln = sum(isinstance(m, nn.LayerNorm) for m in encoder.modules())
    ops = Counter(n.op_type for n in model.graph.node)
    if n_ln and ops["LayerNormalization"] < n_ln:
        raise ConfigError(
            f"{path}: the export decomposed LayerNorm ({ops['LayerNormalization']} fused of "
            f"{n_ln}); export with opset >= {MIN_OPSET}"
        )


def describe_onnx(path: str | Path) -> dict[str, Any]:
    """Opset, inputs/outputs (name, element type, shape) and op counts of an ONNX file."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)

    def io(values: Any) -> list[dict[str, Any]]:
        out = []
        for v in values:
            t = v.type.tensor_type
            shape = [d.dim_param or d.dim_value for d in t.shape.dim]
            out.append(
                {
                    "name": v.name,
                    "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name,
                    "shape": shape,
                }
            )
        return out

    ops = Counter(n.op_type for n in model.graph.node)
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    return {
        "opset": opset,
        "inputs": io(model.graph.input),
        "outputs": io(model.graph.output),
        "ops": dict(ops.most_common()),
        "qdq": ops["QuantizeLinear"] > 0 or ops["DequantizeLinear"] > 0,
    }


def convert_fp16(
    src: str | Path, dst: str | Path, *, keep_fp32: tuple[str, ...] = FP16_KEEP_FP32
) -> Path:
    """Autocast an FP32 ONNX graph to FP16, keeping the ops in ``keep_fp32`` (and I/O) in FP32.

    The result carries its precision in the graph (Cast nodes around the FP32 islands), which is
    what a strongly typed TensorRT build needs (TensorRT 10+ ``--stronglyTyped``; TensorRT 11
    dropped the ``--fp16`` builder flag). Uses onnxruntime's ``float16`` converter.
    """
    import onnx
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = onnx.load(str(src))
    noisy = logging.getLogger("onnxruntime.transformers.float16")
    level = noisy.level
    noisy.setLevel(logging.ERROR)  # it logs every Identity node it leaves alone
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        half = convert_float_to_float16(
            model, keep_io_types=True, op_block_list=list(keep_fp32), disable_shape_infer=False
        )
    noisy.setLevel(level)
    dst = Path(dst)
    with atomic_path(dst, suffix=".onnx") as tmp:
        onnx.save(half, str(tmp))
    return dst


def onnx_parity(
    encoder: Encoder,
    path: str | Path,
    *,
    precision: str = "fp32",
    threshold: float | None = None,
    tiles: np.ndarray | None = None,
) -> Parity:
    """Check an exported ONNX file against its torch encoder on real sample tiles (onnxruntime).

    Raises:
        ToleranceError: When the row-wise cosine falls below the threshold (0.9999 for FP32).
    """
    from edgepath.runtime import open_engine
    from edgepath.runtime.onnxruntime_engine import OnnxRuntimeEngine

    reference = open_engine(encoder, engine="torch")
    try:
        candidate = OnnxRuntimeEngine(path, spec=encoder.spec, precision=precision)
    except Exception as exc:  # an unloadable file is a failed export, said in one line
        raise ToleranceError(f"{path}: onnxruntime cannot load the export ({exc})") from None
    with reference, candidate:
        return check_parity(
            reference.embed_tiles,
            candidate.embed_tiles,
            what=str(path),
            tile_px=encoder.spec.input.tile_px,
            precision=precision,
            threshold=threshold,
            tiles=tiles,
        )
