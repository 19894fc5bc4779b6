"""The histology-feature stand-in teacher: deterministic, batch-independent, ViT token layout,
and its features respond to the tissue properties they name."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from edgepath.eval.domains import hed_to_rgb, rgb_to_hed
from edgepath.models import resolve
from edgepath.models.standin import N_FEATURES, HistoFeatureTeacher

TILES = Path(__file__).resolve().parents[2] / "edgepath" / "data" / "tiles"
TISSUE = sorted((TILES / "tissue").glob("tissue-*.png")) + sorted((TILES / "he").glob("*.png"))


def _tile(path: Path, px: int = 224) -> np.ndarray:
    im = Image.open(path).convert("RGB")
    w, h = im.size
    s = min(w, h)
    im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
    return np.asarray(im.resize((px, px), Image.BILINEAR))


def _tensor(rgb: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.array(rgb)).permute(2, 0, 1).float().div(255)[None]


@pytest.fixture(scope="module")
def tiles() -> torch.Tensor:
    return torch.cat([_tensor(_tile(p)) for p in TISSUE])


def test_card_builds_with_vit_token_layout(tiles: torch.Tensor) -> None:
    m = resolve("histo-teacher")
    enc = m.encoder
    assert m.random_weights and enc.spec.embedding.dim == 192
    tok = enc.forward_tokens(tiles[:2])
    assert tok.cls.shape == (2, 192) and tok.patches.shape == (2, 14 * 14, 192)
    assert tok.registers.shape[1] == 0
    assert torch.equal(enc(tiles[:2]), tok.cls)  # (raw tiles here: only shapes matter)
    b = resolve("histo-teacher-b").encoder
    assert b.forward_tokens(tiles[:1]).patches.shape == (1, 7 * 7, 256)


def test_card_normalisation_is_undone_before_the_features(tiles: torch.Tensor) -> None:
    """The cards feed H&E-standardised tiles (so students inherit a sane normalisation); the
    encoder must see the same intensities as the bare module on [0, 1] RGB."""
    enc = resolve("histo-teacher").encoder
    mean, std = enc.spec.input.mean, enc.spec.input.std
    assert std != (1.0, 1.0, 1.0), "the card should standardise, not feed raw [0, 1]"
    x = (tiles - torch.tensor(mean).view(1, 3, 1, 1)) / torch.tensor(std).view(1, 3, 1, 1)
    with torch.no_grad():
        assert torch.allclose(enc(x), HistoFeatureTeacher(seed=0)(tiles), atol=1e-5)
        # fed raw [0, 1] instead, the features are wrong: the card's normalisation is in use
        assert not torch.allclose(enc(tiles), HistoFeatureTeacher(seed=0)(tiles), atol=1e-2)


def test_deterministic_and_batch_independent(tiles: torch.Tensor) -> None:
    a, b = HistoFeatureTeacher(seed=0), HistoFeatureTeacher(seed=0)
    with torch.no_grad():
        batch = a(tiles)
        alone = torch.cat([b(t[None]) for t in tiles])
        other = HistoFeatureTeacher(seed=1)(tiles)
    assert torch.allclose(batch, alone, atol=1e-5)
    assert not torch.allclose(batch, other, atol=1e-2)


def test_standardisation_constants_fit_real_tiles(tiles: torch.Tensor) -> None:
    """The fixed centre/scale keep real H&E features near zero and at unit scale (they were
    measured on other tiles), so the tanh projections are neither saturated nor flat."""
    with torch.no_grad():
        z = HistoFeatureTeacher().patch_features(tiles)
    z = z.transpose(0, 1).reshape(N_FEATURES, -1)
    assert z.shape[0] == N_FEATURES
    assert z.median(1).values.abs().max() < 1.5
    std = z.std(1)
    assert (std > 0.2).all() and (std < 3.0).all()


def test_features_follow_stain_amounts(tiles: torch.Tensor) -> None:
    """More haematoxylin in the same tile raises the H channel, not the E channel; more eosin
    the other way round (colour deconvolution, Ruifrok-Johnston)."""
    rgb = _tile(TISSUE[0])
    hed = rgb_to_hed(rgb)
    more_h = hed_to_rgb(hed * np.array([2.0, 1.0, 1.0]))
    more_e = hed_to_rgb(hed * np.array([1.0, 2.0, 1.0]))
    m = HistoFeatureTeacher()
    with torch.no_grad():
        f0, fh, fe = (m.patch_features(_tensor(x)).mean((2, 3))[0] for x in (rgb, more_h, more_e))
    assert fh[0] - f0[0] > 0.3 and abs(fh[1] - f0[1]) < 0.5 * (fh[0] - f0[0])
    assert fe[1] - f0[1] > 0.3 and abs(fe[0] - f0[0]) < 0.5 * (fe[1] - f0[1])


def test_nuclei_blobs_drive_the_blob_channels() -> None:
    """Dark purple nucleus-sized dots on pink raise DoG+ (channel 6) and its patch maximum
    (channel 14) far above a flat pink tile."""
    pink = np.full((224, 224, 3), (230, 170, 200), np.uint8)
    dots = pink.copy()
    yy, xx = np.mgrid[:224, :224]
    for cy in range(8, 224, 16):
        for cx in range(8, 224, 16):
            dots[(yy - cy) ** 2 + (xx - cx) ** 2 <= 9] = (90, 50, 140)
    m = HistoFeatureTeacher()
    with torch.no_grad():
        flat, blob = (m.patch_features(_tensor(x)).mean((2, 3))[0] for x in (pink, dots))
    assert blob[6] - flat[6] > 2.0 and blob[14] - flat[14] > 2.0


def test_rejects_sizes_that_do_not_tile() -> None:
    with pytest.raises(ValueError, match="multiple of patch_size"):
        HistoFeatureTeacher(img_size=100, patch_size=16)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("tile_px = 224", "tile_px = 220", "bad-teacher.toml: input.tile_px 220 is not a multiple"),
        ("embed_dim = 192", "embed_dims = 192", "cannot build edgepath model 'histo_features'"),
    ],
)
def test_bad_card_is_one_config_error(tmp_path: Path, old: str, new: str, message: str) -> None:
    """A bad stand-in card fails with one message (no traceback at the CLI), not a raw error."""
    from edgepath.errors import ConfigError

    card = Path(__file__).resolve().parents[2] / "teachers" / "histo-teacher.toml"
    bad = tmp_path / "bad-teacher.toml"
    bad.write_text(card.read_text().replace(old, new))
    with pytest.raises(ConfigError, match=message):
        resolve(str(bad))
