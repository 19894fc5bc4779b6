"""ONNX Runtime's own INT8 path for ViT encoders on CPU: transformer fusions, then dynamic INT8.

ONNX Runtime's documentation (onnxruntime.ai, "Quantize ONNX Models") advises dynamic
quantization for RNN and transformer models and static quantization for CNNs, on a graph whose
attention runs in ORT's fused kernel, so that only the Linear MatMuls become INT8 and everything
else runs in fused FP32 kernels. The steps here:

1. :func:`fuse_vit`: on the exported float graph, fold each LayerScale (``x * gamma`` after a
   Linear) into that Linear's weight and bias (exact up to rounding), and replace each block's
   attention core (reshape/transpose/split, scaled QKᵀ, softmax, AV, transpose/reshape) with one
   ``com.microsoft.MultiHeadAttention`` node fed by three Q/K/V Linears (MatMul + bias Add, so
   that the INT8 graph folds each bias into its MatMulIntegerToFloat: 7-15 % less time in
   attention in ORT's profiler on ViT-S/14 than with the bias given to MultiHeadAttention, which
   adds it in a separate pass over Q, K and V, at the same GEMM time). Its CPU kernel runs
   MLAS flash attention in FP32 for unmasked self-attention (``multihead_attention.cc``), never
   materialising the 261×261 score matrices in memory. ORT's own attention fusion does not match
   the pattern torch's exporter emits for ``scaled_dot_product_attention``, hence this pass.
2. :func:`optimize_vit`: ``fuse_vit``, written out and checked against the unfused float graph
   on real tiles before it is used. ORT's transformer optimizer is not run (its
   ``SkipLayerNormalization`` measured slower here than the LayerNorm + Add it replaces; the
   session's own fusions give ``Gelu`` and bias-folded INT8 MatMuls).
3. :func:`quantize_dynamic_int8`: ``onnxruntime.quantization.quantize_dynamic`` on the MatMuls
   with constant weights (INT8 weights, activations quantized per tensor at run time, u8s8).
   ORT then runs them as ``DynamicQuantizeMatMul`` / ``MatMulIntegerToFloat`` (MLAS QGEMM).

Dynamic activation scales are taken per batch, so a tile's INT8 embedding depends slightly on the
tiles it is batched with; the gate embeds held-out tiles in batches, and the test suite bounds
the batch-1 vs batch-16 difference.
"""

from __future__ import annotations

import collections
import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from edgepath.errors import ConfigError, ToleranceError, require
from edgepath.quiet import third_party_output

if TYPE_CHECKING:
    import onnx

    from edgepath.quantize.presets import QuantizePreset

log = logging.getLogger(__name__)

MS_DOMAIN = "com.microsoft"
#: Minimum cosine between the fused and the unfused float graphs on real tiles (pure rewrites:
#: measured 1 - 1e-7 on ViT-S/14).
FUSION_MIN_COSINE = 0.9999


def ort_version() -> str:
    """Installed ONNX Runtime version."""
    return require("onnxruntime", "onnxruntime", purpose="ONNX Runtime INT8").__version__


class _Graph:
    """Index of an ONNX graph: producers, consumers, constant values."""

    def __init__(self, model: onnx.ModelProto) -> None:
        from onnx import numpy_helper

        g = model.graph
        self.graph = g
        self.inits = {t.name: t for t in g.initializer}
        self.consts: dict[str, np.ndarray] = {}
        for n in g.node:
            if n.op_type == "Constant":
                for a in n.attribute:
                    if a.name == "value":
                        self.consts[n.output[0]] = numpy_helper.to_array(a.t)
        self.prod = {o: n for n in g.node for o in n.output}
        self.cons: dict[str, list[Any]] = collections.defaultdict(list)
        for n in g.node:
            for i in n.input:
                self.cons[i].append(n)

    def value(self, name: str) -> np.ndarray | None:
        from onnx import numpy_helper

        if name in self.inits:
            return numpy_helper.to_array(self.inits[name])
        return self.consts.get(name)

    def add_init(self, name: str, arr: np.ndarray) -> str:
        from onnx import numpy_helper

        t = numpy_helper.from_array(np.ascontiguousarray(arr, dtype=np.float32), name)
        self.graph.initializer.append(t)
        self.inits[name] = self.graph.initializer[-1]
        return name

    def op(self, name: str, op_type: str) -> Any:
        n = self.prod.get(name)
        return n if n is not None and n.op_type == op_type else None

    def only_consumer(self, name: str, op_type: str) -> Any:
        c = self.cons.get(name, [])
        return c[0] if len(c) == 1 and c[0].op_type == op_type else None


def _materialize_aliases(model: onnx.ModelProto) -> None:
    """Turn ``Identity(initializer)`` nodes into initializers (the exporter dedups equal tensors,
    e.g. zero biases, and aliases them through Identity)."""
    import onnx

    g = model.graph
    inits = {t.name: t for t in g.initializer}
    ident = [n for n in g.node if n.op_type == "Identity" and n.input[0] in inits]
    for n in ident:
        t = onnx.TensorProto()
        t.CopyFrom(inits[n.input[0]])
        t.name = n.output[0]
        g.initializer.append(t)
        g.node.remove(n)


def _linear(gr: _Graph, name: str) -> tuple[Any, Any, str] | None:
    """``Add(bias, MatMul(x, W))`` producing ``name`` with constant W and bias: (matmul, add, b)."""
    add = gr.op(name, "Add")
    if add is None:
        return None
    b = [i for i in add.input if i in gr.inits]
    x = [i for i in add.input if i not in gr.inits]
    if len(b) != 1 or len(x) != 1:
        return None
    mm = gr.op(x[0], "MatMul")
    if mm is None or mm.input[1] not in gr.inits or len(gr.cons[x[0]]) != 1:
        return None
    return mm, add, b[0]


def _fold_layerscale(gr: _Graph, drop: set[int]) -> int:
    """``Mul(Add(b, MatMul(x, W)), gamma)`` -> ``Add(b*gamma, MatMul(x, W*gamma))``."""
    n_done = 0
    for n in list(gr.graph.node):
        if n.op_type != "Mul":
            continue
        g_in = [i for i in n.input if i in gr.inits]
        if len(g_in) != 1:
            continue
        gamma = gr.value(g_in[0])
        x = next(i for i in n.input if i != g_in[0])
        lin = _linear(gr, x)
        if gamma is None or gamma.ndim != 1 or lin is None or len(gr.cons[x]) != 1:
            continue
        mm, add, b = lin
        w = gr.value(mm.input[1])
        if w is None or w.ndim != 2 or w.shape[1] != gamma.shape[0]:
            continue
        mm.input[1] = gr.add_init(f"{mm.input[1]}.ls{n_done}", w * gamma[None, :])
        add.input[list(add.input).index(b)] = gr.add_init(f"{b}.ls{n_done}", gr.value(b) * gamma)
        for c in gr.cons[n.output[0]]:
            for k, i in enumerate(c.input):
                if i == n.output[0]:
                    c.input[k] = add.output[0]
        drop.add(id(n))
        n_done += 1
    return n_done


def _attention(gr: _Graph, sm: Any) -> dict[str, Any] | None:
    """Match the exported SDPA pattern around one Softmax; None if it is not the plain one."""
    qk = gr.op(sm.input[0], "MatMul")
    av = gr.only_consumer(sm.output[0], "MatMul")
    tr_out = av is not None and gr.only_consumer(av.output[0], "Transpose")
    rs_out = tr_out and gr.only_consumer(tr_out.output[0], "Reshape")
    if qk is None or not rs_out:
        return None
    mul_q = gr.op(qk.input[0], "Mul")
    sq_q = mul_q is not None and gr.op(mul_q.input[0], "Squeeze")
    split = sq_q and gr.op(sq_q.input[0], "Split")
    tr = split and gr.op(split.input[0], "Transpose")
    rs = tr and gr.op(tr.input[0], "Reshape")
    lin = rs and _linear(gr, rs.input[0])
    if not lin:
        return None
    perm = next((list(a.ints) for a in tr.attribute if a.name == "perm"), None)
    if perm != [2, 0, 3, 1, 4]:  # (B, N, 3, H, D) -> (3, B, H, N, D): timm's qkv layout
        return None
    shape_node = gr.op(rs.input[1], "Concat")
    dims = [gr.value(i) for i in shape_node.input[2:]] if shape_node is not None else []
    if len(dims) != 3 or any(d is None for d in dims) or int(dims[0].reshape(-1)[0]) != 3:
        return None
    heads, head_dim = int(dims[1].reshape(-1)[0]), int(dims[2].reshape(-1)[0])
    # the softmax scale must be the default 1/sqrt(head_dim) (what MultiHeadAttention applies):
    # torch exports it as sqrt(1/sqrt(D)) multiplied into q and k, computed from the shape
    mm, _, bias = lin
    w = gr.value(mm.input[1])
    if w is None or w.shape[1] != 3 * heads * head_dim:
        return None
    return {
        "qkv": mm,
        "bias": bias,
        "heads": heads,
        "out": rs_out.output[0],
        "tail": rs_out,
    }


def fuse_vit(model: onnx.ModelProto) -> dict[str, int]:
    """Fold LayerScale and fuse attention into ``MultiHeadAttention``, in place.

    Returns:
        ``{"layerscale": n, "attention": n}``: how many of each were rewritten (a graph without
        the patterns is left as it was).
    """
    from onnx import helper

    _materialize_aliases(model)
    gr = _Graph(model)
    drop: set[int] = set()
    new_nodes = []
    n_ls = _fold_layerscale(gr, drop)
    n_att = 0
    for sm in [n for n in gr.graph.node if n.op_type == "Softmax"]:
        m = _attention(gr, sm)
        if m is None:
            continue
        mm, c = m["qkv"], m["heads"]
        w = gr.value(mm.input[1])
        width = w.shape[1] // 3
        base = mm.name or mm.output[0]
        b_qkv = gr.value(m["bias"])
        outs = []
        for j, part in enumerate("qkv"):
            cols = slice(j * width, (j + 1) * width)
            wn = gr.add_init(f"{mm.input[1]}.{part}", w[:, cols])
            bn = gr.add_init(f"{m['bias']}.{part}", b_qkv[cols])
            mm_out, outs = f"{base}.{part}.mm", [*outs, f"{base}.{part}"]
            new_nodes.append(helper.make_node("MatMul", [mm.input[0], wn], [mm_out]))
            new_nodes[-1].name = f"{base}.{part}"
            # the bias as the MatMul's own Add (not MultiHeadAttention's bias input): the INT8
            # graph then folds it into MatMulIntegerToFloat's output, and attention skips its
            # separate bias pass over Q, K and V
            new_nodes.append(helper.make_node("Add", [mm_out, bn], [outs[-1]]))
            new_nodes[-1].name = f"{base}.{part}.bias"
        node = helper.make_node(
            "MultiHeadAttention",
            outs,
            [m["out"]],
            name=f"{base}.mha",
            domain=MS_DOMAIN,
            num_heads=c,
        )
        new_nodes.append(node)
        drop.add(id(m["tail"]))
        n_att += 1
    nodes = [n for n in gr.graph.node if id(n) not in drop] + new_nodes
    _rebuild(model, nodes)
    if n_att:
        if not any(o.domain == MS_DOMAIN for o in model.opset_import):
            model.opset_import.append(helper.make_opsetid(MS_DOMAIN, 1))
        import onnx

        for n in model.graph.node:  # shape inference stops at contrib ops: state the type
            if n.op_type == "MultiHeadAttention":
                model.graph.value_info.append(
                    helper.make_tensor_value_info(n.output[0], onnx.TensorProto.FLOAT, None)
                )
    return {"layerscale": n_ls, "attention": n_att}


def _rebuild(model: onnx.ModelProto, nodes: list[Any]) -> None:
    """Dead-code eliminate, topologically sort, drop unused initializers."""
    g = model.graph
    outputs = {o.name for o in g.output}
    while True:
        used = outputs | {i for n in nodes for i in n.input}
        kept = [n for n in nodes if any(o in used for o in n.output)]
        if len(kept) == len(nodes):
            break
        nodes = kept
    ready = {i.name for i in g.input} | {t.name for t in g.initializer} | {""}
    order, pending = [], nodes
    while pending:
        rest = []
        for n in pending:
            if all(i in ready for i in n.input):
                order.append(n)
                ready.update(n.output)
            else:
                rest.append(n)
        if len(rest) == len(pending):
            raise ConfigError("ONNX graph rewrite left a cycle or a dangling input (a bug)")
        pending = rest
    del g.node[:]
    g.node.extend(order)
    used = {i for n in order for i in n.input}
    inits = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(inits)
    del g.value_info[:]


def _embed(path: Path, x: np.ndarray) -> np.ndarray:
    """Outputs of the ONNX file at ``path`` on ``x``, in batches of 8 (CPU provider)."""
    ort = require("onnxruntime", "onnxruntime", purpose="ONNX Runtime INT8")
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    s = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    name = s.get_inputs()[0].name
    return np.concatenate([s.run(None, {name: x[i : i + 8]})[0] for i in range(0, len(x), 8)])


def optimize_vit(float_onnx: Path, out: Path, check: np.ndarray) -> dict[str, Any]:
    """The fused float graph of a ViT for ONNX Runtime, checked against the unfused one.

    Args:
        float_onnx: The exported float ONNX (``edgepath.export.onnx.export_onnx``).
        out: Where to write the fused float ONNX (atomically).
        check: Normalised float32 NCHW tiles the two graphs must agree on.

    Returns:
        What was fused (``layerscale``, ``attention``) and the parity cosine.

    Raises:
        ToleranceError: The fused graph disagrees with the unfused one (a rewrite bug).
    """
    import onnx

    from edgepath.io import atomic_path
    from edgepath.metrics import rowwise_cosine

    require("onnxruntime", "onnxruntime", purpose="ONNX Runtime INT8")
    model = onnx.load(str(float_onnx))
    stats: dict[str, Any] = fuse_vit(model)
    # ORT's transformer optimizer (SkipLayerNormalization, BiasGelu) is deliberately not run:
    # in ORT's profiler on ViT-S/14 INT8 here, its SkipLayerNormalization took 139 ms per batch of 16
    # against 52 ms for the LayerNormalization + Add it replaces, and the session's own fusions
    # already fold each bias into MatMulIntegerToFloat and the erf pattern into Gelu.
    with atomic_path(out, suffix=".onnx") as tmp:
        onnx.save(model, str(tmp))
    a, b = _embed(Path(float_onnx), check), _embed(Path(out), check)
    cos = float(rowwise_cosine(a, b).min())
    stats["parity_cosine_min"] = cos
    if not cos >= FUSION_MIN_COSINE:
        raise ToleranceError(
            f"{out}: the ONNX Runtime-fused float graph disagrees with {float_onnx} (min cosine "
            f"{cos:.6f} < {FUSION_MIN_COSINE}); use the 'onnx' backend (NNCF QDQ) for this model"
        )
    log.info("ORT fusions on %s: %s", float_onnx.name, stats)
    return stats


def quantize_dynamic_int8(fused_onnx: Path, preset: QuantizePreset, out: Path) -> Path:
    """Dynamic INT8 (ORT ``quantize_dynamic``) of the MatMuls with constant weights.

    Args:
        fused_onnx: The fused float graph from :func:`optimize_vit`.
        preset: Supplies ``per_channel`` and ``reduce_range`` (7-bit weights: ORT's advice
            against u8s8 ``vpmaddubsw`` saturation on AVX2/AVX-512 CPUs without VNNI).
        out: The INT8 ONNX file to write (atomically).
    """
    require("onnxruntime", "onnxruntime", purpose="ONNX Runtime INT8")
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from edgepath.io import atomic_path

    root = logging.getLogger()
    level = root.level
    root.setLevel(max(level, logging.WARNING))  # ORT's quantizer logs one INFO line per tensor
    try:
        with atomic_path(out, suffix=".onnx") as tmp, third_party_output():
            quantize_dynamic(
                str(fused_onnx),
                str(tmp),
                weight_type=QuantType.QInt8,
                per_channel=preset.per_channel,
                reduce_range=preset.reduce_range,
                op_types_to_quantize=["MatMul"],
                extra_options={
                    "MatMulConstBOnly": True,  # weights only; attention runs in fused FP32
                    "DefaultTensorType": onnx.TensorProto.FLOAT,  # outputs of contrib ops
                },
            )
    finally:
        root.setLevel(level)
    return Path(out)
