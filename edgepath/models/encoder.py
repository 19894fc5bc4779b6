"""One interface for every model: tokens (CLS, registers, patches) and the card's tile embedding."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import nn

from edgepath.errors import ConfigError
from edgepath.models.cards import EncoderSpec
from edgepath.models.preprocess import normalize

log = logging.getLogger(__name__)

#: Layer kwargs that cards may give as class names (resolved in timm.layers, then torch.nn).
_LAYER_KWARGS = ("mlp_layer", "act_layer", "norm_layer", "block_fn", "embed_layer")


@dataclass
class Tokens:
    """A backbone's output sequence split by role.

    Attributes:
        cls: (B, D) class token.
        registers: (B, R, D) register tokens (R may be 0).
        patches: (B, N, D) patch tokens in row-major grid order.
    """

    cls: torch.Tensor
    registers: torch.Tensor
    patches: torch.Tensor

    @property
    def grid(self) -> int:
        """Side of the square patch grid."""
        n = self.patches.shape[1]
        side = int(round(n**0.5))
        if side * side != n:
            raise ValueError(f"{n} patch tokens do not form a square grid")
        return side


def _resolve_layer(value: Any) -> Any:
    if not isinstance(value, str):
        return value
    import timm.layers

    for ns in (timm.layers, nn):
        if hasattr(ns, value):
            return getattr(ns, value)
    return value  # timm accepts some layers by string name (e.g. act_layer="gelu")


def build_backbone(spec: EncoderSpec, *, pretrained: bool = False) -> nn.Module:
    """Instantiate the backbone of ``spec`` with random weights (weights are loaded separately)."""
    arch = spec.architecture
    kwargs = {k: (_resolve_layer(v) if k in _LAYER_KWARGS else v) for k, v in arch.kwargs.items()}
    if arch.library == "timm":
        import timm

        kwargs.setdefault("img_size", spec.input.tile_px)
        kwargs.setdefault("num_classes", 0)
        try:
            return timm.create_model(arch.name, pretrained=pretrained, **kwargs)
        except (RuntimeError, TypeError) as exc:
            raise ConfigError(f"cannot build timm model '{arch.name}': {exc}") from None
    if arch.library == "transformers":
        from edgepath.errors import require

        transformers = require("transformers", "transformers", purpose=f"building {arch.name}")
        config_cls = getattr(transformers, arch.name.replace("Model", "Config"))
        model_cls = getattr(transformers, arch.name)
        return model_cls(config_cls(**kwargs))
    if arch.library == "edgepath":
        from edgepath.models.conch import ARCHITECTURES as CONCH
        from edgepath.models.standin import ARCHITECTURES as STANDIN

        ARCHITECTURES = {**CONCH, **STANDIN}
        if arch.name not in ARCHITECTURES:
            raise ConfigError(
                f"unknown edgepath architecture '{arch.name}'; expected one of: "
                f"{', '.join(ARCHITECTURES)}"
            )
        kwargs.setdefault("img_size", spec.input.tile_px)
        if getattr(ARCHITECTURES[arch.name], "takes_input_norm", False):
            kwargs.setdefault("input_mean", tuple(spec.input.mean))
            kwargs.setdefault("input_std", tuple(spec.input.std))
        try:
            return ARCHITECTURES[arch.name](**kwargs)
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"cannot build edgepath model '{arch.name}': {exc}") from None
    raise ConfigError(f"unknown architecture library '{arch.library}'")


class Encoder(nn.Module):
    """A tile encoder: normalised NCHW float tiles in, the card's embedding out.

    Args:
        backbone: A timm VisionTransformer-like module with ``forward_features`` returning the
            full token sequence (B, prefix + N, D) after the final norm, or a transformers
            vision model returning ``last_hidden_state``.
        spec: The encoder spec (architecture, input, token layout, embedding definition).
    """

    def __init__(self, backbone: nn.Module, spec: EncoderSpec) -> None:
        super().__init__()
        self.backbone = backbone
        self.spec = spec

    @property
    def token_dim(self) -> int:
        """Width of one token."""
        dim = getattr(self.backbone, "embed_dim", None) or getattr(
            getattr(self.backbone, "config", None), "hidden_size", None
        )
        return int(dim)

    @property
    def embed_dim(self) -> int:
        """Dimension of the tile embedding."""
        return self.spec.embedding.dim

    def sequence(self, x: torch.Tensor) -> torch.Tensor:
        """The full output token sequence (B, prefix + N, D)."""
        if self.spec.architecture.library == "transformers":
            return self.backbone(pixel_values=x).last_hidden_state
        seq = self.backbone.forward_features(x)
        # timm ViTs with global_pool "avg"/"max" move the final LayerNorm after pooling
        # (norm = Identity, fc_norm = LayerNorm): forward_features then returns un-normed tokens.
        # LayerNorm acts per token, so applying fc_norm to each token gives the normed sequence.
        fc_norm = getattr(self.backbone, "fc_norm", None)
        if isinstance(getattr(self.backbone, "norm", None), nn.Identity) and isinstance(
            fc_norm, nn.LayerNorm
        ):
            seq = fc_norm(seq)
        return seq

    def forward_tokens(self, x: torch.Tensor) -> Tokens:
        """Split the output sequence into CLS, registers and patch tokens."""
        seq = self.sequence(x)
        layout = self.spec.tokens
        prefix = layout.num_prefix
        cls = seq[:, layout.cls_index]
        regs = seq[:, 1:prefix] if layout.cls_index == 0 else seq[:, :0]
        return Tokens(cls=cls, registers=regs, patches=seq[:, prefix:])

    @staticmethod
    def pool(tokens: Tokens, definition: str) -> torch.Tensor:
        """Apply an embedding definition to tokens; registers never enter the mean."""
        if definition == "cls":
            return tokens.cls
        if definition == "mean_patch":
            return tokens.patches.mean(dim=1)
        if definition == "cls+mean_patch":
            return torch.cat([tokens.cls, tokens.patches.mean(dim=1)], dim=-1)
        if definition == "attn_pool":
            raise ConfigError(
                "embedding 'attn_pool' is the backbone's learned pooling: call the Encoder, "
                "not Encoder.pool"
            )
        raise ConfigError(f"unknown embedding definition '{definition}'")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """The card's tile embedding (B, embedding.dim)."""
        if self.spec.embedding.definition == "attn_pool":
            # a learned pooler over all output tokens (CONCH: CLS included, see models/conch.py)
            return self.backbone.pool_embedding(self.sequence(x))
        return self.pool(self.forward_tokens(x), self.spec.embedding.definition)


def to_tensor(tiles: Any, spec: EncoderSpec) -> torch.Tensor:
    """uint8 tiles (N, H, W, 3) numpy/torch -> normalised float32 NCHW as the card prescribes.

    ``edgepath.models.preprocess.normalize`` as a tensor (the same numbers as every engine's).
    """
    t = np.asarray(tiles)
    if t.shape[-1] != 3:
        raise ValueError(f"expected (N, H, W, 3) RGB tiles, got {tuple(t.shape)}")
    return torch.from_numpy(normalize(t, spec))


def build_encoder(spec: EncoderSpec) -> Encoder:
    """An ``Encoder`` with random weights for ``spec``."""
    return Encoder(build_backbone(spec), spec)


def count_parameters(spec: EncoderSpec) -> int:
    """Parameter count of the architecture, instantiated on the meta device (no memory, no I/O)."""
    with torch.device("meta"):
        model = build_backbone(spec)
    return sum(p.numel() for p in model.parameters())
