"""Benchmark result files: one JSON per run in a run folder, read back by ``edgepath report``."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from edgepath.errors import ConfigError
from edgepath.io import write_json_atomic

KINDS = ("throughput", "compare", "robustness", "fidelity", "distill")


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.@+-]+", "_", text).strip("_")[:80] or "run"


def write_result(out_dir: str | Path, result: dict[str, Any], *, label: str | None = None) -> Path:
    """Write ``result`` (it must have a ``kind``) as ``OUT/KIND[-LABEL].json``, atomically."""
    kind = result.get("kind")
    if kind not in KINDS:
        raise ValueError(f"result kind {kind!r} is not one of {KINDS}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    path = out / (f"{kind}-{_slug(label)}.json" if label else f"{kind}.json")
    write_json_atomic(path, result)
    return path


def read_results(paths: list[str | Path]) -> list[dict[str, Any]]:
    """Every result in the given run folders (or result files), each tagged with ``_path``."""
    found: list[dict[str, Any]] = []
    for p in map(Path, paths):
        files = sorted(p.glob("*.json")) if p.is_dir() else [p]
        if not p.exists():
            raise ConfigError(f"{p}: no such run folder; pass folders written by edgepath bench -o")
        for f in files:
            try:
                data = json.loads(f.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if isinstance(data, dict) and data.get("kind") in KINDS:
                data["_path"] = str(f)
                found.append(data)
    if not found:
        raise ConfigError(
            f"no benchmark results in {', '.join(map(str, paths))}; run edgepath bench ... -o DIR"
        )
    return found
