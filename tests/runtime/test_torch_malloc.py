"""The torch engine on CPU reuses freed memory: a forward pass does not page-fault its
activations in afresh at every batch (``keep_freed_memory``)."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import textwrap

import pytest

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's malloc"
)

# A tiny student at batch 192: its attention scores (>100 MB) are far above glibc's mmap
# threshold, so without the tuning each call maps and faults them in again.
CHILD = textwrap.dedent(
    """
    import resource
    import numpy as np
    import torch
    from edgepath import cards
    from edgepath.models.encoder import build_encoder
    from edgepath.models.students import student_spec
    from edgepath.runtime.torch_engine import TorchEngine

    torch.manual_seed(0)
    spec = student_spec(
        "vit-test14", input=cards.load("teachers", "tiny-teacher").input,
        embedding="cls+mean_patch",
    )
    engine = TorchEngine(build_encoder(spec).eval(), threads=1)
    x = np.random.default_rng(0).standard_normal((192, 3, 224, 224)).astype(np.float32)
    for _ in range(3):  # the heap reaches its peak
        engine(x)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    engine(x)
    engine(x)
    print(engine.info["malloc"], resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    """
)


def _faults(tuning: str) -> tuple[str, int]:
    env = {**os.environ, "EDGEPATH_MALLOC_TUNING": tuning}
    run = subprocess.run(
        [sys.executable, "-c", CHILD], capture_output=True, text=True, timeout=600, env=env
    )
    assert run.returncode == 0, run.stderr[-2000:]
    setting, faults = run.stdout.strip().splitlines()[-1].rsplit(" ", 1)
    return setting, int(faults)


def test_forward_passes_reuse_freed_memory() -> None:
    setting, faults = _faults("1")
    assert setting.startswith("glibc mallopt M_MMAP_MAX=0")
    off_setting, off_faults = _faults("0")
    assert off_setting == "None"
    # without the setting two batches fault their activations in again (~180,000 pages here);
    # with it 0 standalone, and 12,528 once inside the whole suite's CI run
    assert off_faults > 50_000, off_faults
    assert faults < off_faults / 5, (faults, off_faults)
