"""Heads: DINO head shape and weight norm, projection MLPs, the frozen teacher-side prototype head."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from edgepath.distill.heads import DINOHead, FrozenPrototypeHead, ProjectionHead


def test_dino_head_bottleneck_l2_and_weight_norm() -> None:
    torch.manual_seed(0)
    head = DINOHead(16, 32, hidden_dim=24, bottleneck_dim=8, nlayers=3)
    x = torch.randn(4, 16)
    out = head(x)
    assert out.shape == (4, 32)
    # logits are dot products of a unit bottleneck vector with unit-norm prototypes (g = 1)
    w = head.last_layer.weight
    assert torch.allclose(w.norm(dim=1), torch.ones(32), atol=1e-5)
    assert out.abs().max() <= 1.0 + 1e-5
    # rescaling the raw direction parameter does not change the output (weight norm)
    with torch.no_grad():
        head.last_layer.parametrizations.weight.original1.mul_(3.0)
    assert torch.allclose(head(x), out, atol=1e-6)


def test_projection_head_shapes() -> None:
    assert ProjectionHead(8, 5, hidden_dim=4, nlayers=2)(torch.randn(3, 7, 8)).shape == (3, 7, 5)
    assert len(ProjectionHead(8, 5, nlayers=1).mlp) == 1


def test_frozen_prototype_head_is_deterministic_frozen_and_angle_preserving() -> None:
    a, b = FrozenPrototypeHead(64, 512, seed=3), FrozenPrototypeHead(64, 512, seed=3)
    assert torch.equal(a.prototypes, b.prototypes)
    assert not list(a.parameters())  # nothing to train, nothing to drift
    g = torch.Generator().manual_seed(0)
    x = torch.randn(64, generator=g)
    noise = torch.randn(64, generator=g)
    sims = []
    for eps in (0.1, 0.5, 1.0, 3.0):
        y = x + eps * noise * x.norm() / noise.norm()
        p, q = F.softmax(a(x) / 0.1, -1), F.softmax(a(y) / 0.1, -1)
        sims.append((F.cosine_similarity(x, y, 0).item(), (p * q).sum().item()))
    # target overlap falls as the teacher cosine falls
    overlaps = [s for _, s in sims]
    assert overlaps == sorted(overlaps, reverse=True)
    assert a(x).requires_grad is False


def test_released_teacher_heads_are_loaded_frozen(tmp_path) -> None:
    from types import SimpleNamespace

    import pytest
    from safetensors.torch import save_file

    from edgepath.distill.recipe import load_recipe
    from edgepath.distill.recipes.h0mini import teacher_heads
    from edgepath.errors import ConfigError

    dims = [
        "loss.dino_out_dim=32",
        "loss.ibot_out_dim=16",
        "loss.head_hidden_dim=8",
        "loss.head_bottleneck_dim=4",
    ]
    src = {}
    for prefix, out in (("dino.", 32), ("ibot.", 16)):
        h = DINOHead(12, out, hidden_dim=8, bottleneck_dim=4)
        src.update({prefix + k: v.contiguous() for k, v in h.state_dict().items()})
    path = tmp_path / "heads.safetensors"
    save_file(src, str(path))
    card = load_recipe("h0mini", [*dims, f'teachers=[{{card="tiny-teacher", heads="{path}"}}]'])
    dino, ibot = teacher_heads(card, SimpleNamespace(token_dim=12))
    assert isinstance(dino, DINOHead) and not any(p.requires_grad for p in dino.parameters())
    w = src["dino.mlp.0.weight"]
    assert torch.equal(dino.mlp[0].weight, w) and ibot(torch.randn(2, 12)).shape == (2, 16)
    # without a heads file: the frozen random-prototype heads
    plain = load_recipe("h0mini", [*dims, 'teachers=[{card="tiny-teacher"}]'])
    assert isinstance(teacher_heads(plain, SimpleNamespace(token_dim=12))[0], FrozenPrototypeHead)
    wrong = load_recipe(
        "h0mini",
        [
            *dims[:1],
            "loss.ibot_out_dim=99",
            *dims[2:],
            f'teachers=[{{card="tiny-teacher", heads="{path}"}}]',
        ],
    )
    with pytest.raises(ConfigError, match="do not match"):
        teacher_heads(wrong, SimpleNamespace(token_dim=12))


def test_h0mini_teacher_temp_frozen_heads_vs_released_heads() -> None:
    from types import SimpleNamespace

    from edgepath.distill.recipe import load_recipe
    from edgepath.distill.recipes.h0mini import H0MiniRecipe

    card = load_recipe("h0mini", ["loss.frozen_head_temp=0.4"])
    frozen = SimpleNamespace(card=card, t_dino=FrozenPrototypeHead(8, 16))
    assert H0MiniRecipe.teacher_temp(frozen, 0) == 0.4 == H0MiniRecipe.teacher_temp(frozen, 10**6)
    released = SimpleNamespace(card=card, t_dino=DINOHead(8, 16, hidden_dim=8, bottleneck_dim=4))
    lo = card.loss  # DINOv2's warmup 0.04 -> 0.07 over teacher_temp_warmup_steps
    assert H0MiniRecipe.teacher_temp(released, 0) == lo.teacher_temp_start
    half = H0MiniRecipe.teacher_temp(released, lo.teacher_temp_warmup_steps // 2)
    assert abs(half - (lo.teacher_temp_start + lo.teacher_temp) / 2) < 1e-6
    assert H0MiniRecipe.teacher_temp(released, lo.teacher_temp_warmup_steps) == lo.teacher_temp
