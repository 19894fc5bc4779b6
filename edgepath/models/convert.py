"""Convert foreign checkpoint layouts (DINOv2 original, Hugging Face Dinov2Model) to timm keys.

Teachers whose public weights are not stored as timm state dicts (GPFM ships a DINOv2-repo
checkpoint, Phikon-v2 a ``transformers`` ``Dinov2Model``) are built as the equivalent timm
``VisionTransformer`` and their keys mapped here, so that every teacher runs through one code
path (tokens, ONNX export, quantization).
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch
    from torch import nn

log = logging.getLogger(__name__)


def detect(state: dict[str, Any]) -> str:
    """Name the layout of a state dict: ``hf-dinov2``, ``dinov2``, ``open-clip`` or ``timm``."""
    if any(k.endswith("embeddings.patch_embeddings.projection.weight") for k in state):
        return "hf-dinov2"
    if "mask_token" in state or "register_tokens" in state:
        return "dinov2"
    if any(k.startswith(("visual.trunk.", "module.visual.trunk.")) for k in state):
        return "open-clip"
    return "timm"


def hf_dinov2_to_timm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Map ``transformers`` ``Dinov2Model`` keys to timm ``VisionTransformer`` keys.

    Dinov2Model (transformers/models/dinov2/modeling_dinov2.py): separate query/key/value
    projections (4.x ``attention.attention.query``, 5.x ``attention.q_proj``; concatenated
    into timm's ``qkv``), ``layer_scale{1,2}.lambda1`` (timm
    ``ls{1,2}.gamma``), a final ``layernorm`` (timm ``norm``); ``mask_token`` is training-only.
    """
    import torch

    prefix = next(
        k[: -len("embeddings.patch_embeddings.projection.weight")]
        for k in state
        if k.endswith("embeddings.patch_embeddings.projection.weight")
    )
    s = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
    out: dict[str, torch.Tensor] = {
        "cls_token": s["embeddings.cls_token"],
        "pos_embed": s["embeddings.position_embeddings"],
        "patch_embed.proj.weight": s["embeddings.patch_embeddings.projection.weight"],
        "patch_embed.proj.bias": s["embeddings.patch_embeddings.projection.bias"],
        "norm.weight": s["layernorm.weight"],
        "norm.bias": s["layernorm.bias"],
    }
    if "embeddings.register_tokens" in s:
        out["reg_token"] = s["embeddings.register_tokens"]
    simple = {
        "norm1": "norm1",
        "norm2": "norm2",
        "mlp.fc1": "mlp.fc1",
        "mlp.fc2": "mlp.fc2",
        "mlp.weights_in": "mlp.fc1",  # SwiGLU variant (packed w12)
        "mlp.weights_out": "mlp.fc2",
    }
    blocks = sorted({int(m.group(1)) for k in s if (m := re.match(r"encoder\.layer\.(\d+)\.", k))})
    for i in blocks:
        src, dst = f"encoder.layer.{i}.", f"blocks.{i}."
        for a, b in simple.items():
            for p in ("weight", "bias"):
                if f"{src}{a}.{p}" in s:
                    out[f"{dst}{b}.{p}"] = s[f"{src}{a}.{p}"]
        for p in ("weight", "bias"):
            # transformers 4.x names (the Hub checkpoints), then 5.x names
            for q, k, v, o in (
                (
                    "attention.attention.query",
                    "attention.attention.key",
                    "attention.attention.value",
                    "attention.output.dense",
                ),
                ("attention.q_proj", "attention.k_proj", "attention.v_proj", "attention.o_proj"),
            ):
                if f"{src}{q}.{p}" in s:
                    out[f"{dst}attn.qkv.{p}"] = torch.cat(
                        [s[f"{src}{n}.{p}"] for n in (q, k, v)], dim=0
                    )
                    out[f"{dst}attn.proj.{p}"] = s[f"{src}{o}.{p}"]
        for n in (1, 2):
            if f"{src}layer_scale{n}.lambda1" in s:
                out[f"{dst}ls{n}.gamma"] = s[f"{src}layer_scale{n}.lambda1"]
    return out


def dinov2_to_timm(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Map facebookresearch/dinov2 keys to timm (timm's own converter: registers, SwiGLU w12/w3)."""
    from timm.models.vision_transformer import _convert_dinov2

    # block_chunks > 0 (GPFM's GitHub checkpoint) stores blocks as blocks.<chunk>.<index>.
    state = {re.sub(r"^blocks\.\d+\.(\d+)\.", r"blocks.\1.", k): v for k, v in state.items()}
    return _convert_dinov2(state, model)


def to_timm(state: dict[str, torch.Tensor], model: nn.Module) -> tuple[dict[str, Any], str]:
    """Convert ``state`` to ``model``'s timm keys when it is in a known foreign layout.

    Returns:
        The converted state dict and the layout detected.
    """
    layout = detect(state)
    if layout == "hf-dinov2":
        return hf_dinov2_to_timm(state), layout
    if layout == "dinov2":
        return dinov2_to_timm(state, model), layout
    return state, layout  # open-clip trunks are handled by prefix stripping (visual.trunk.)


def resample_pos_embed(state: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Resample a checkpoint's absolute position embedding to the model's grid (logged).

    DINOv2-repo checkpoints keep the 518 px (37 x 37) table; timm does the same bicubic
    resampling when it loads them (timm.models.vision_transformer.checkpoint_filter_fn).
    """
    pe = state.get("pos_embed")
    ref = getattr(model, "pos_embed", None)
    if pe is None or ref is None or tuple(pe.shape) == tuple(ref.shape):
        return state
    if pe.ndim != 3 or pe.shape[-1] != ref.shape[-1]:
        return state  # a width mismatch is a wrong card, reported by the strict check
    from timm.layers import resample_abs_pos_embed

    prefix = 0 if getattr(model, "no_embed_class", False) else model.num_prefix_tokens
    grid = model.patch_embed.grid_size
    old = int(round((pe.shape[1] - prefix) ** 0.5))
    if old * old != pe.shape[1] - prefix:
        return state
    log.warning("resampling pos_embed from a %dx%d to a %dx%d grid", old, old, *grid)
    state = dict(state)
    state["pos_embed"] = resample_abs_pos_embed(
        pe, new_size=list(grid), num_prefix_tokens=prefix, verbose=False
    )
    return state
