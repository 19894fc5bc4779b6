"""``--target timm``: a model folder that timm itself loads, in the layout of timm's Hugging Face
hub repositories (``config.json`` + ``model.safetensors``, see ``timm/models/_hub.py``).

``timm.create_model(f"local-dir:{DIR}", pretrained=True)`` (timm >= 1.0) rebuilds the exact
architecture from ``config.json``'s ``model_args`` and loads the weights; after
``hf upload ORG/NAME DIR`` the same works as ``hf-hub:ORG/NAME``. Through timm, TRIDENT (custom
encoder), LazySlide, eva and TIAToolbox can use the model.

What timm's format cannot say, and how it is said instead:

- timm's ``PretrainedCfg`` is a dataclass that rejects unknown keys, so the card's mpp and
  embedding definition are not put into ``pretrained_cfg``: they sit in a top-level ``edgepath``
  table (timm ignores top-level keys it does not know; its own ``save_config_for_hf`` writes
  extra top-level keys the same way) and, readable, in ``pretrained_cfg.notes``.
- ``model_args`` are JSON, and timm's ``VisionTransformer`` takes ``mlp_layer`` as a class, not
  a name. A SwiGLU student is therefore written as the registered timm architecture that
  carries timm's ``SwiGLUPacked`` + SiLU MLP (``vit_giant_patch14_reg4_dinov2``) with every size
  argument restated in ``model_args``: the weights decide, and the export is checked by loading
  it with timm.
- Embeddings: ``cls`` is timm's ``global_pool="token"`` and ``mean_patch`` its ``"avg"`` (with
  ``fc_norm=False``: the final LayerNorm on every token, then the mean of the patch tokens,
  registers excluded). CLS ⊕ mean patch has no timm pooling: ``global_pool=""`` makes
  ``model(x)`` return the token sequence, and the one-line pooling (``pooling_code``; eva's
  ``concat_mean_patch_tokens``) gives the embedding.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from edgepath.errors import ArtifactError, ConfigError
from edgepath.models.cards import EncoderSpec

CONFIG = "config.json"
WEIGHTS = "model.safetensors"
README = "README.md"

#: Embedding definition -> timm ``global_pool`` (and ``fc_norm``) that gives it as ``model(x)``.
GLOBAL_POOL: dict[str, tuple[str, bool | None]] = {
    "cls": ("token", None),
    "mean_patch": ("avg", False),
    "cls+mean_patch": ("", None),
}

#: A registered timm architecture that builds timm's SwiGLUPacked + SiLU MLP (the one layer a
#: JSON ``model_args`` cannot name); every size argument is overridden in ``model_args``.
SWIGLU_CARRIER = "vit_giant_patch14_reg4_dinov2"


def pooling_code(definition: str, num_prefix_tokens: int) -> str:
    """The Python that turns ``model(x)`` of an exported folder into the card's embedding."""
    if definition == "cls+mean_patch":
        return (
            "t = model.forward_features(x); "
            f"emb = torch.cat([t[:, 0], t[:, {num_prefix_tokens}:].mean(1)], dim=-1)"
        )
    return "emb = model(x)"


def embed(model: Any, x: Any, definition: str) -> Any:
    """The card's embedding from a timm model loaded from an export (``pooling_code``)."""
    import torch

    if definition == "cls+mean_patch":
        t = model.forward_features(x)
        return torch.cat([t[:, 0], t[:, model.num_prefix_tokens :].mean(1)], dim=-1)
    return model(x)


def _mlp(block: Any) -> tuple[str | None, dict[str, Any]]:
    """(carrier architecture or None, MLP model_args) of a ViT block's MLP."""
    from timm.layers import GluMlp, Mlp
    from torch import nn

    mlp = block.mlp
    if type(mlp) is Mlp and isinstance(mlp.act, nn.GELU):
        return None, {}
    if type(mlp) is GluMlp and isinstance(mlp.act, nn.SiLU) and not mlp.gate_last:
        return SWIGLU_CARRIER, {"act_layer": "silu"}
    raise ConfigError(
        f"--target timm: a {type(mlp).__name__} MLP with {type(mlp.act).__name__} has no name in "
        "timm's config.json (model_args are JSON); export to onnx or openvino instead"
    )


def model_args(encoder: Any) -> tuple[str, dict[str, Any]]:
    """timm architecture name and the ``model_args`` that rebuild ``encoder``'s backbone exactly.

    Raises:
        ConfigError: Not a timm VisionTransformer, or a layer timm's JSON config cannot name.
    """
    from timm.models.vision_transformer import VisionTransformer

    spec: EncoderSpec = encoder.spec
    b = encoder.backbone
    if spec.architecture.library != "timm" or type(b) is not VisionTransformer:
        raise ConfigError(
            f"--target timm writes timm VisionTransformers; {spec.architecture.name} is a "
            f"{spec.architecture.library} {type(b).__name__}: export to onnx or openvino instead"
        )
    definition = spec.embedding.definition
    if definition not in GLOBAL_POOL:
        raise ConfigError(f"--target timm: embedding '{definition}' has no timm pooling")
    block = b.blocks[0]
    carrier, mlp_args = _mlp(block)
    hidden = block.mlp.fc1.out_features
    ratio = hidden / b.embed_dim
    if int(b.embed_dim * ratio) != hidden:  # timm: hidden = int(dim * mlp_ratio)
        raise ConfigError(f"--target timm: MLP width {hidden} is not dim x a float ratio")
    pool, fc_norm = GLOBAL_POOL[definition]
    args: dict[str, Any] = {
        "img_size": spec.input.tile_px,
        "patch_size": int(b.patch_embed.patch_size[0]),
        "embed_dim": int(b.embed_dim),
        "depth": len(b.blocks),
        "num_heads": int(block.attn.num_heads),
        "mlp_ratio": ratio,
        "qkv_bias": block.attn.qkv.bias is not None,
        "class_token": b.cls_token is not None,
        "reg_tokens": int(b.num_reg_tokens),
        "no_embed_class": bool(b.no_embed_class),
        "global_pool": pool,
        "num_classes": 0,
        **mlp_args,
    }
    if type(block.ls1).__name__ == "LayerScale":
        args["init_values"] = 1e-5  # LayerScale present; its gamma comes from the weights
    if fc_norm is not None:
        args["fc_norm"] = fc_norm
    return carrier or spec.architecture.name, args


def timm_config(encoder: Any, *, name: str, license: str = "") -> dict[str, Any]:
    """The ``config.json`` of an export: timm's hub layout, plus an ``edgepath`` table."""
    spec: EncoderSpec = encoder.spec
    architecture, args = model_args(encoder)
    prefix = int(encoder.backbone.num_prefix_tokens)
    definition = spec.embedding.definition
    tile = spec.input.tile_px
    pretrained_cfg: dict[str, Any] = {
        "tag": name,
        "custom_load": False,
        "input_size": [3, tile, tile],
        "fixed_input_size": True,
        "interpolation": "bicubic",
        "crop_pct": 1.0,
        "crop_mode": "center",
        "mean": list(spec.input.mean),
        "std": list(spec.input.std),
        "num_classes": 0,
        "pool_size": None,
        "first_conv": "patch_embed.proj",
        "classifier": "head",
        "description": f"{name}: tile encoder for {tile} px tiles at {spec.input.mpp:g} µm/px "
        f"(edgepath export)",
        "notes": [
            f"mpp={spec.input.mpp:g}: tiles must be read at {spec.input.mpp:g} µm/px",
            f"embedding={definition} ({spec.embedding.dim}-d): {pooling_code(definition, prefix)}",
        ],
    }
    if license:
        pretrained_cfg["license"] = license
    return {
        "architecture": architecture,
        "num_classes": 0,
        "num_features": int(encoder.backbone.num_features),
        "global_pool": args["global_pool"],
        "model_args": args,
        "pretrained_cfg": pretrained_cfg,
        "edgepath": {
            "name": name,
            "mpp": spec.input.mpp,
            "tile_px": tile,
            "embedding": {
                "definition": definition,
                "dim": spec.embedding.dim,
                "num_prefix_tokens": prefix,
                "pooling": pooling_code(definition, prefix),
            },
        },
    }


def write_timm(
    folder: str | Path, encoder: Any, *, name: str, teacher: str = "", license: str = ""
) -> dict[str, Any]:
    """Write ``config.json``, ``model.safetensors`` and a model card ``README.md`` into ``folder``.

    Returns:
        The config written.
    """
    from safetensors.torch import save_file

    from edgepath.io import atomic_path, write_json_atomic, write_text_atomic

    folder = Path(folder)
    config = timm_config(encoder, name=name, license=license)
    state = {k: v.detach().contiguous().cpu() for k, v in encoder.backbone.state_dict().items()}
    with atomic_path(folder / WEIGHTS, suffix=".safetensors") as tmp:
        save_file(state, str(tmp), metadata={"format": "pt"})
    write_json_atomic(folder / CONFIG, config)
    write_text_atomic(folder / README, model_card(config, teacher=teacher, license=license))
    return config


def model_card(config: dict[str, Any], *, teacher: str = "", license: str = "") -> str:
    """A Hugging Face model card for the folder (``library_name: timm``), with the one-liners."""
    e = config["edgepath"]
    emb = e["embedding"]
    front = ["---", "library_name: timm", "tags:", "- image-feature-extraction", "- timm"]
    front += ["- pathology", "- edgepath", "---", ""]
    body = [
        f"# {e['name']}",
        "",
        f"Tile encoder for {e['tile_px']} px H&E tiles read at **{e['mpp']:g} µm/px**, exported "
        "by `edgepath export --target timm`.",
        "",
        f"- Embedding: `{emb['definition']}` ({emb['dim']}-d)",
        f"- Teacher: {teacher or 'none recorded'}",
        f"- License: {license or 'not recorded: check the teacher license before sharing'}",
        "",
        "```python",
        "import timm, torch",
        'model = timm.create_model("local-dir:PATH/TO/THIS/FOLDER", pretrained=True).eval()',
        "transform = timm.data.create_transform(**timm.data.resolve_model_data_config(model))",
        f"{emb['pooling']}  # x = transform(tiles), a (N, 3, H, W) batch",
        "```",
        "",
    ]
    return "\n".join(front + body)


class TimmFolder:
    """An export folder loaded by timm itself, embedding uint8 tiles the way a timm user would
    (timm's own transform from ``pretrained_cfg``, then ``pooling_code``): the parity check of
    ``--target timm``."""

    name = "timm"

    def __init__(self, folder: str | Path) -> None:
        import timm

        self.folder = Path(folder)
        config = json.loads((self.folder / CONFIG).read_text())
        self.definition = config["edgepath"]["embedding"]["definition"]
        try:
            self.model = timm.create_model(f"local-dir:{self.folder}", pretrained=True).eval()
        except (RuntimeError, TypeError, ValueError) as exc:
            raise ArtifactError(
                f"{self.folder}: timm {timm.__version__} cannot load this export ({exc}); "
                "please report it"
            ) from None
        cfg = timm.data.resolve_model_data_config(self.model)
        self.transform = timm.data.create_transform(**cfg, is_training=False)

    def embed_tiles(self, tiles: np.ndarray) -> np.ndarray:
        """(N, D) float32 embeddings of uint8 (N, H, W, 3) tiles."""
        import torch
        from PIL import Image

        x = torch.stack([self.transform(Image.fromarray(t)) for t in np.asarray(tiles)])
        with torch.no_grad():
            return embed(self.model, x, self.definition).numpy().astype(np.float32)

    def close(self) -> None:
        """Nothing to release."""

    def __enter__(self) -> TimmFolder:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
