"""Checkpoints: atomic (temporary file + rename) every N steps, keep the last K, resume."""

from __future__ import annotations

import logging
import random
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch

from edgepath.errors import ConfigError
from edgepath.io import atomic_path

log = logging.getLogger(__name__)

PATTERN = re.compile(r"^step-(\d{8})\.pt$")


def rng_state() -> dict[str, Any]:
    """This process's RNG states (torch CPU/CUDA, numpy, python)."""
    state = {
        "torch": torch.get_rng_state(),
        "numpy": np.random.get_state(),
        "python": random.getstate(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore ``rng_state()``."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def checkpoints(folder: str | Path) -> list[tuple[int, Path]]:
    """(step, path) of the checkpoints in ``folder``, oldest first."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    out = [(int(m.group(1)), p) for p in folder.iterdir() if (m := PATTERN.match(p.name))]
    return sorted(out)


def save(folder: str | Path, step: int, state: dict[str, Any], *, keep: int) -> Path:
    """Write ``step-XXXXXXXX.pt`` atomically and delete all but the last ``keep``."""
    folder = Path(folder)
    path = folder / f"step-{step:08d}.pt"
    with atomic_path(path, suffix=".pt.tmp") as tmp:
        torch.save(state, tmp)
    for _, old in checkpoints(folder)[:-keep]:
        old.unlink(missing_ok=True)
    log.info("checkpoint %s", path)
    return path


def load_latest(folder: str | Path) -> dict[str, Any] | None:
    """The newest checkpoint's state, or None if there is none."""
    found = checkpoints(folder)
    if not found:
        return None
    _, path = found[-1]
    try:
        return torch.load(path, map_location="cpu", weights_only=False)
    except Exception as exc:
        raise ConfigError(
            f"{path}: unreadable checkpoint ({exc}); delete it to resume from the previous one"
        ) from None
