"""Shared fixtures; ``gpu`` and ``tensorrt`` tests skip with a reason where the hardware is absent."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network

REPO = Path(__file__).resolve().parents[1]

#: Test-only cards (the ``vit-test14`` student, the ``int8-generic-broken`` preset), in the
#: layout of the shipped card folders. Found through the user-card mechanism ($EDGEPATH_CARDS),
#: by every test and every process a test starts; never shipped, never in a user's listing.
TEST_CARDS = REPO / "tests" / "cards"


def _add_test_cards() -> None:
    from edgepath.cards import ENV_VAR

    dirs = [d for d in os.environ.get(ENV_VAR, "").split(os.pathsep) if d.strip()]
    if str(TEST_CARDS) not in dirs:
        os.environ[ENV_VAR] = os.pathsep.join([str(TEST_CARDS), *dirs])


_add_test_cards()


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # pragma: no cover
        return False


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    has_cuda = _cuda()
    has_trt = has_cuda and importlib.util.find_spec("tensorrt") is not None
    skip_gpu = pytest.mark.skip(reason="needs a CUDA GPU; none on this machine")
    skip_trt = pytest.mark.skip(
        reason="needs TensorRT and a CUDA GPU (pip install 'edgepath[tensorrt]' on a GPU machine)"
    )
    for item in items:
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(skip_gpu)
        if "tensorrt" in item.keywords and not has_trt:
            item.add_marker(skip_trt)


@pytest.fixture(scope="session")
def sample_slide() -> Path:
    from edgepath.data import SAMPLE_SLIDE

    return SAMPLE_SLIDE


@pytest.fixture()
def run_cli():
    """Run the CLI in-process; returns (exit_code, stdout, stderr)."""
    import contextlib
    import io

    from edgepath.cli.main import main

    def run(*args: str) -> tuple[int, str, str]:
        out, err = io.StringIO(), io.StringIO()
        code = 0
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                main(list(args))
            except SystemExit as exc:
                code = exc.code if isinstance(exc.code, int) else 1
        return code, out.getvalue(), err.getvalue()

    return run


# Shared by tests/export and tests/runtime: each area defines its own ``tiny_encoder``, so this
# is made per test module (cheap), from the module's own encoder. At session scope, one pytest process running both areas handed
# tests/runtime the artifact of tests/export's encoder (LayerScale 0.5, not runtime's 1e-5), and
# test_torch_engine_from_encoder_and_artifact_agree failed there only.
@pytest.fixture(scope="module")
def student_artifact(tiny_encoder, tmp_path_factory) -> Path:
    """The area's tiny encoder saved as a student artifact."""
    from edgepath.models.artifact import save_encoder

    folder = tmp_path_factory.mktemp("student")
    save_encoder(folder, tiny_encoder, kind="student", name="vit-test14")
    return folder


@pytest.fixture(scope="session")
def tiles():
    """Six real parity tiles (uint8, 224 px)."""
    from edgepath.export.parity import parity_tiles

    return parity_tiles(224, n=6)
