"""Every shipped teacher card: published parameter count and token layout, on the meta device."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from edgepath import cards
from edgepath.models import load_teacher
from edgepath.models.convert import detect, hf_dinov2_to_timm
from edgepath.models.encoder import Encoder, build_backbone, count_parameters

DATA = Path(__file__).parent / "data"
REAL = sorted(c.name for c in cards.load_all("teachers") if not c.stand_in)
EXPECTED = {  # the list: every one of these must ship
    "uni",
    "uni2-h",
    "h-optimus-0",
    "h-optimus-1",
    "h0-mini",
    "virchow2",
    "prov-gigapath",
    "gpfm",
    "phikon-v2",
    "conch",
}


def test_all_expected_teachers_ship() -> None:
    assert set(REAL) >= EXPECTED, sorted(EXPECTED - set(REAL))


@pytest.mark.parametrize("name", REAL)
def test_parameter_count_and_token_layout_on_meta(name: str) -> None:
    """Published parameter count (±2 %), and the card's patch size, registers and embedding
    dim agree with the network built from its architecture (meta device: no memory, no I/O)."""
    card = cards.load("teachers", name)
    assert card.params_m, f"{name}: card has no published parameter count"
    with torch.device("meta"):
        enc = Encoder(build_backbone(card.spec), card.spec)
        x = torch.empty(2, 3, card.input.tile_px, card.input.tile_px)
        tokens = enc.forward_tokens(x)
        emb = enc(x)
    got = sum(p.numel() for p in enc.backbone.parameters()) / 1e6
    # ±2 %; figures published to two significant digits ("1.1 B") are good to ±0.05 B.
    tol = max(0.02 * card.params_m, 50.0 if card.params_m % 100 == 0 else 0.0)
    assert abs(got - card.params_m) <= tol, f"{name}: {got:.1f} M vs published {card.params_m} M"
    grid = card.input.tile_px // card.tokens.patch_size
    assert tokens.patches.shape[1] == grid * grid
    assert tokens.registers.shape[1] == card.tokens.num_registers
    assert getattr(enc.backbone, "num_prefix_tokens", 1) == card.tokens.num_prefix
    assert emb.shape == (2, card.embedding.dim)
    factor = 2 if card.embedding.definition == "cls+mean_patch" else 1
    if card.embedding.definition != "attn_pool":
        assert card.embedding.dim == factor * enc.token_dim


def test_count_parameters_matches_published_uni() -> None:
    assert abs(count_parameters(cards.load("teachers", "uni").spec) / 1e6 - 303.0) < 6


@pytest.mark.parametrize("name", REAL)
def test_every_card_cites_a_source_and_license(name: str) -> None:
    card = cards.load("teachers", name)
    assert "huggingface.co/" in card.source
    assert card.license and card.weights.hf_repo and card.weights.files


def test_hf_dinov2_keys_map_exactly_to_timm(tmp_path: Path) -> None:
    """Phikon-v2's Dinov2Model layout -> timm ViT: identical output (fixture made with
    transformers 5.x; the 4.x names of the Hub checkpoint are tested by renaming)."""
    state = load_file(str(DATA / "hf-dinov2-tiny.safetensors"))
    io = load_file(str(DATA / "hf-dinov2-tiny-io.safetensors"))
    v4 = {}
    for k, v in state.items():
        for new, old in (
            ("attention.q_proj", "attention.attention.query"),
            ("attention.k_proj", "attention.attention.key"),
            ("attention.v_proj", "attention.attention.value"),
            ("attention.o_proj", "attention.output.dense"),
        ):
            k = k.replace(new, old)
        v4[k] = v
    import timm

    for layout in (state, v4):
        assert detect(layout) == "hf-dinov2"
        model = timm.create_model(
            "vit_large_patch16_224",
            embed_dim=32,
            depth=2,
            num_heads=2,
            img_size=32,
            init_values=1e-5,
            num_classes=0,
        ).eval()
        model.load_state_dict(hf_dinov2_to_timm(layout), strict=True)
        with torch.no_grad():
            out = model.forward_features(io["x"])
        torch.testing.assert_close(out, io["last_hidden_state"], rtol=1e-5, atol=1e-5)


def test_dinov2_repo_checkpoint_with_block_chunks_loads(tmp_path: Path) -> None:
    """GPFM's GitHub layout: {"teacher": {"backbone.blocks.<chunk>.<i>...", "mask_token", heads}}."""
    text = (Path(cards.shipped_dir("teachers")) / "gpfm.toml").read_text()
    text = text.replace(
        "kwargs = { init_values = 1e-5 }",
        "kwargs = { init_values = 1e-5, embed_dim = 64, depth = 4, num_heads = 2 }",
    )
    text = text.replace("dim = 1024", "dim = 64")
    card_path = tmp_path / "gpfm-tiny.toml"
    card_path.write_text(text)
    ref = load_teacher(card_path, random_weights=True)
    state = {}
    for k, v in ref.backbone.state_dict().items():
        if k.startswith("blocks."):
            i = int(k.split(".")[1])
            k = f"blocks.{i // 2}.{i}." + k.split(".", 2)[2]  # 2 chunks of 2 blocks
        state[f"backbone.{k}"] = v
    state["backbone.mask_token"] = torch.zeros(1, 64)
    state["dino_head.mlp.0.weight"] = torch.zeros(8, 64)
    torch.save({"teacher": state, "iteration": 7}, tmp_path / "GPFM.pth")
    enc = load_teacher(card_path, weights=tmp_path / "GPFM.pth")
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(enc(x), ref(x))


def test_hub_twin_file_name_is_accepted(tmp_path: Path) -> None:
    """A card naming pytorch_model.bin finds model.safetensors in a folder (timm Hub names)."""
    card = cards.load("teachers", "uni")
    assert card.weights.files == ("pytorch_model.bin",)
    from edgepath.models.weights import resolve_local

    save_file({"a": torch.zeros(1)}, str(tmp_path / "model.safetensors"))
    (tmp_path / "notes.txt").write_text("x")
    assert resolve_local(tmp_path, card) == [tmp_path / "model.safetensors"]


def test_conch_checkpoint_layout_and_attn_pool_embedding(tmp_path: Path) -> None:
    """CONCH: the full CoCa checkpoint (visual.* + text.*) loads strictly into the vision tower;
    the embedding is ln_contrast(attn_pool_contrast(all tokens)[:, 0]), not the CLS token."""
    text = (Path(cards.shipped_dir("teachers")) / "conch.toml").read_text()
    text = text.replace(
        "width = 768, depth = 12, num_heads = 12, embed_dim_contrast = 512",
        "width = 64, depth = 2, num_heads = 2, embed_dim_contrast = 32, "
        "embed_dim_caption = 64, n_queries_caption = 4, attn_pooler_heads = 2",
    )
    text = text.replace("tile_px = 448", "tile_px = 64").replace("dim = 512", "dim = 32")
    card_path = tmp_path / "conch-tiny.toml"
    card_path.write_text(text)
    ref = load_teacher(card_path, random_weights=True)
    state = {f"visual.{k}": v for k, v in ref.backbone.state_dict().items()}
    state["text.token_embedding.weight"] = torch.zeros(10, 8)
    state["logit_scale"] = torch.zeros(())
    torch.save(state, tmp_path / "pytorch_model.bin")
    enc = load_teacher(card_path, weights=tmp_path)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        emb = enc(x)
        seq = enc.sequence(x)
        assert torch.equal(emb, ref(x))
        pooled = enc.backbone.ln_contrast(enc.backbone.attn_pool_contrast(seq)[:, 0])
        assert torch.allclose(emb, pooled)
        # every token (CLS included) enters the pooler: changing a patch changes the embedding
        seq2 = seq.clone()
        seq2[:, 5] = torch.randn_like(seq2[:, 5])  # (a constant shift would vanish in LayerNorm)
        assert not torch.allclose(enc.backbone.pool_embedding(seq2), emb)
    assert emb.shape == (2, 32) and seq.shape == (2, 1 + 16, 64)


def test_sequence_is_normed_when_timm_pools_before_its_norm() -> None:
    """global_pool="avg" puts timm's final LayerNorm after pooling (fc_norm); the Encoder
    still returns the normed token sequence."""
    from edgepath.models.cards import (
        Architecture,
        EmbeddingSpec,
        EncoderSpec,
        InputSpec,
        TokenLayout,
    )

    spec = EncoderSpec(
        Architecture(
            "vit_small_patch14_dinov2",
            kwargs={"embed_dim": 32, "depth": 1, "num_heads": 2, "global_pool": "avg"},
        ),
        InputSpec(56, 0.5, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)),
        TokenLayout(patch_size=14),
        EmbeddingSpec("mean_patch", 32),
    )
    enc = Encoder(build_backbone(spec), spec).eval()
    assert isinstance(enc.backbone.norm, torch.nn.Identity)
    with torch.no_grad():
        seq = enc.sequence(torch.randn(2, 3, 56, 56))
    assert seq.shape == (2, 17, 32)
    torch.testing.assert_close(seq.mean(-1), torch.zeros(2, 17), atol=1e-5, rtol=0)
