"""Hugging Face lookup: cache hits need no network; downloads only when online; gated repos."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from edgepath import cards
from edgepath.errors import MissingWeightsError
from edgepath.models import load_teacher
from edgepath.models.loading import random_encoder

TINY = Path(__file__).resolve().parents[2] / "teachers" / "tiny-teacher.toml"
REPO = "edgepath-tests/tiny-real"


@pytest.fixture()
def card(tmp_path: Path) -> Path:
    text = TINY.read_text().replace("stand_in = true", "stand_in = false")
    text += f'hf_repo = "{REPO}"\nfiles = ["model.safetensors"]\ngated = true\n'
    p = tmp_path / "tiny-real.toml"
    p.write_text(text)
    return p


def _no_network(*args, **kwargs):
    raise AssertionError("hf_hub_download must not be called")


def _fake_cache(cache: Path, state: dict[str, torch.Tensor]) -> Path:
    """The layout huggingface_hub writes: models--org--name/{refs/main, snapshots/<rev>/…}."""
    repo = cache / ("models--" + REPO.replace("/", "--"))
    snap = repo / "snapshots" / "0123abcd"
    snap.mkdir(parents=True)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123abcd")
    save_file(state, str(snap / "model.safetensors"))
    return snap / "model.safetensors"


def test_weights_from_the_hf_cache_without_network(card, tmp_path, monkeypatch) -> None:
    src = random_encoder(cards.load("teachers", card).spec, seed=5)
    state = {k: v.contiguous() for k, v in src.backbone.state_dict().items()}
    path = _fake_cache(tmp_path / "hub", state)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)  # online, yet the cache must win
    monkeypatch.setattr("huggingface_hub.hf_hub_download", _no_network)
    from edgepath.models import resolve

    m = resolve(card)
    enc = m.encoder
    assert m.files == (str(path),)
    x = torch.randn(1, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(enc(x), src(x))


def test_download_only_when_online(card, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("huggingface_hub.hf_hub_download", _no_network)
    with pytest.raises(MissingWeightsError, match="offline"):
        load_teacher(card)


def test_gated_repo_message_names_the_token(card, tmp_path, monkeypatch) -> None:
    from huggingface_hub.errors import GatedRepoError

    def gated(*args, **kwargs):
        err = GatedRepoError.__new__(GatedRepoError)
        Exception.__init__(err, "401 gated")
        raise err

    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.setattr("huggingface_hub.hf_hub_download", gated)
    with pytest.raises(MissingWeightsError) as err:
        load_teacher(card)
    msg = str(err.value)
    assert f"hf:{REPO} is gated" in msg and "$HF_TOKEN" in msg and "--weights PATH" in msg
