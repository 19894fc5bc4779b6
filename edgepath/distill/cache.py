"""Teacher-feature cache: teacher outputs computed once per (tile, fixed view), sharded on disk.

With a ViT-g teacher the teacher's forward pass dominates a distillation step; the cache pays it
once and every epoch reuses it. ``meta.json`` records what the features depend on (teacher card,
weights hash, recipe views, tiling, dtype); a cache that does not match is rebuilt or refused.
Shards (``shard-00000.safetensors``: each feature as (items, views, ...)) are written atomically
and split over the processes of a DDP run; an interrupted build resumes where it stopped.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from edgepath.errors import ConfigError
from edgepath.io import atomic_path, write_json_atomic

log = logging.getLogger(__name__)

META = "meta.json"
#: Stored dtype of teacher features (live-teacher runs round to it too, so both agree).
CACHE_DTYPE = "float16"
DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16, "float32": torch.float32}


def as_stored(feats: dict[str, torch.Tensor], dtype: str) -> dict[str, torch.Tensor]:
    """Round features to the cache dtype and back to float32 (live runs do the same)."""
    dt = DTYPES[dtype]
    return {k: v.detach().to("cpu", dt).float() for k, v in feats.items()}


class FeatureCache:
    """A sharded on-disk store of teacher features keyed by (item index, view index).

    Args:
        folder: Cache folder.
        key: Everything the features depend on (JSON-able); compared on open.
        n_items: Number of training items.
        n_views: Fixed views per item.
        shard_size: Items per shard.
        dtype: Stored dtype (``float16`` halves the disk and I/O of fp32).
    """

    def __init__(
        self,
        folder: str | Path,
        key: dict[str, Any],
        *,
        n_items: int,
        n_views: int,
        shard_size: int = 64,
        dtype: str = "float16",
        max_shards_in_memory: int = 64,
    ) -> None:
        self.folder = Path(folder)
        self.key = json.loads(json.dumps(key, default=str))
        self.n_items, self.n_views = n_items, n_views
        self.shard_size, self.dtype = shard_size, dtype
        self._loaded: OrderedDict[int, dict[str, torch.Tensor]] = OrderedDict()
        self._max = max_shards_in_memory

    @property
    def n_shards(self) -> int:
        """Number of shards."""
        return (self.n_items + self.shard_size - 1) // self.shard_size

    def shard_path(self, s: int) -> Path:
        """File of shard ``s``."""
        return self.folder / f"shard-{s:05d}.safetensors"

    def _meta(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "n_items": self.n_items,
            "n_views": self.n_views,
            "shard_size": self.shard_size,
            "dtype": self.dtype,
        }

    def status(self) -> str:
        """``complete``, ``partial`` (same key, shards missing), ``missing`` or ``mismatch``."""
        path = self.folder / META
        if not path.is_file():
            return "missing"
        try:
            meta = json.loads(path.read_text())
        except json.JSONDecodeError:
            return "mismatch"
        if {k: meta.get(k) for k in self._meta()} != self._meta():
            return "mismatch"
        done = all(self.shard_path(s).is_file() for s in range(self.n_shards))
        return "complete" if done and meta.get("complete") else "partial"

    def mismatch_reason(self) -> str:
        """Which recorded field differs (for the error message)."""
        try:
            meta = json.loads((self.folder / META).read_text())
        except (OSError, json.JSONDecodeError):
            return "unreadable meta.json"
        mine = self._meta()
        for k in mine:
            if k == "key":
                for kk in sorted(set(mine["key"]) | set(meta.get("key", {}))):
                    if mine["key"].get(kk) != meta.get("key", {}).get(kk):
                        return f"key.{kk}"
            elif meta.get(k) != mine[k]:
                return k
        return "unknown"

    def prepare(self, *, on_mismatch: str = "rebuild", rank: int = 0) -> str:
        """Check the cache on rank 0; start a new one where missing or (if allowed) mismatched.

        Raises:
            ConfigError: A mismatched cache and ``on_mismatch = "error"``.
        """
        st = self.status()
        if rank != 0:
            return st
        if st == "mismatch":
            reason = self.mismatch_reason()
            if on_mismatch == "error":
                raise ConfigError(
                    f"{self.folder}: teacher-feature cache was built for a different {reason}; "
                    "delete it, pass another --cache-dir, or set train.cache_mismatch=rebuild"
                )
            log.warning("%s: cache built for a different %s: rebuilding", self.folder, reason)
            shutil.rmtree(self.folder)
        if st in ("missing", "mismatch"):
            self.folder.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.folder / META, {**self._meta(), "complete": False})
        return st

    def build(
        self,
        compute: Callable[[list[int], int], dict[str, torch.Tensor]],
        *,
        rank: int = 0,
        world: int = 1,
        batch: int = 32,
        on_shard: Callable[[int, int], None] | None = None,
    ) -> int:
        """Compute the missing shards of this rank (shard s goes to rank s % world).

        Args:
            compute: (item indices, view) -> {name: (len(indices), ...)} teacher features.
            batch: Items per teacher forward pass.
            on_shard: Progress callback (shards done, shards of this rank).

        Returns:
            Number of shards this rank computed.
        """
        mine = [s for s in range(self.n_shards) if s % world == rank]
        done = 0
        for s in mine:
            path = self.shard_path(s)
            if path.is_file():
                continue
            lo, hi = s * self.shard_size, min((s + 1) * self.shard_size, self.n_items)
            chunks: list[dict[str, list[torch.Tensor]]] = [{} for _ in range(self.n_views)]
            for a in range(lo, hi, batch):  # all views of a batch in turn: items read once
                for v in range(self.n_views):
                    out = compute(list(range(a, min(a + batch, hi))), v)
                    for k, t in as_stored(out, self.dtype).items():
                        chunks[v].setdefault(k, []).append(t.to(DTYPES[self.dtype]))
            per_view = [{k: torch.cat(c) for k, c in cv.items()} for cv in chunks]
            tensors = {
                k: torch.stack([pv[k] for pv in per_view], 1).contiguous() for k in per_view[0]
            }
            from safetensors.torch import save_file

            with atomic_path(path, suffix=".safetensors") as tmp:
                save_file(tensors, str(tmp))
            done += 1
            if on_shard:
                on_shard(done, len(mine))
        return done

    def finish(self) -> None:
        """Mark the cache complete (rank 0, after every rank has built its shards)."""
        write_json_atomic(self.folder / META, {**self._meta(), "complete": True})

    def _shard(self, s: int) -> dict[str, torch.Tensor]:
        if s in self._loaded:
            self._loaded.move_to_end(s)
            return self._loaded[s]
        from safetensors.torch import load_file

        path = self.shard_path(s)
        if not path.is_file():
            raise ConfigError(f"{path}: cache shard missing; rerun to rebuild the cache")
        data = load_file(str(path))
        self._loaded[s] = data
        if len(self._loaded) > self._max:
            self._loaded.popitem(last=False)
        return data

    def get(self, indices: list[int], views: list[int]) -> dict[str, torch.Tensor]:
        """Features of items ``indices`` at views ``views`` (float32, stacked on dim 0)."""
        rows: dict[str, list[torch.Tensor]] = {}
        for i, v in zip(indices, views, strict=True):
            shard = self._shard(i // self.shard_size)
            for k, t in shard.items():
                rows.setdefault(k, []).append(t[i % self.shard_size, v])
        return {k: torch.stack(r).float() for k, r in rows.items()}
