"""Per-slide HDF5 feature files in the CLAM/TRIDENT layout: ``features`` (N×D), ``coords`` (N×2).

TRIDENT keeps its metadata on the datasets (``coords``: the patching attributes,
``features``: ``encoder`` and ``name``), edgepath on the file's root as well: both are written,
and both are read back.
"""

from __future__ import annotations

import io
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from edgepath import __version__
from edgepath.errors import ArtifactError
from edgepath.io import atomic_path

log = logging.getLogger(__name__)

# Files are opened with HDF5 file locking off: outputs are only ever written under a private
# temporary name and renamed, and HDF5's flock() fails on many network shares ("unable to lock
# file"), where scanner outputs and feature folders often live.

#: Bumped when the layout or the meaning of an attribute changes (part of the resume key).
FEATURES_FORMAT = 1
SUFFIX = ".h5"


@dataclass
class FeatureFile:
    """A slide's features as read back from disk.

    Attributes:
        features: (N, D) float32 tile embeddings, row ``i`` for ``coords[i]``.
        coords: (N, 2) int64 level-0 top-left corners (x, y) of the tiles.
        attrs: The root attributes (mpp, tile_px, level0_tile_size, model, key, ...).
        coords_attrs: The ``coords`` dataset's attributes (TRIDENT's patching attributes:
            patch_size, patch_size_level0, level0_magnification, target_magnification, ...).
        features_attrs: The ``features`` dataset's attributes (TRIDENT's encoder, name).
    """

    features: np.ndarray
    coords: np.ndarray
    attrs: dict[str, Any] = field(default_factory=dict)
    coords_attrs: dict[str, Any] = field(default_factory=dict)
    features_attrs: dict[str, Any] = field(default_factory=dict)


def _attr_value(value: Any) -> Any:
    """HDF5-friendly attribute value: dicts and lists of mixed types become JSON strings."""
    if value is None:
        return ""
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True)
    if isinstance(value, Path):
        return str(value)
    return value


def write_features(
    path: str | os.PathLike[str],
    features: np.ndarray,
    coords: np.ndarray,
    *,
    mpp: float,
    tile_px: int,
    level0_tile_size: float,
    attrs: dict[str, Any] | None = None,
    coords_attrs: dict[str, Any] | None = None,
    features_attrs: dict[str, Any] | None = None,
) -> Path:
    """Write one slide's feature file atomically (temporary name, renamed when complete).

    The layout is the one CLAM and TRIDENT readers expect: datasets ``features`` (N×D float32)
    and ``coords`` (N×2 int64, level-0 px, top-left corners). ``coords`` carries ``patch_size``,
    ``patch_size_level0`` and ``mpp`` plus ``coords_attrs`` (TRIDENT's patching attributes,
    ``TileGrid.trident_attrs``), ``features`` carries ``features_attrs`` (TRIDENT's ``encoder``
    and ``name``); the root carries everything else.

    Args:
        path: Final ``.h5`` path.
        features: (N, D) embeddings.
        coords: (N, 2) level-0 coordinates.
        mpp: Microns per pixel the tiles were read at.
        tile_px: Tile side in pixels at ``mpp``.
        level0_tile_size: Tile side in level-0 pixels (exact, may be fractional).
        attrs: Extra root attributes (model id and hash, resume key, engine, ...).
        coords_attrs: Extra attributes of the ``coords`` dataset.
        features_attrs: Attributes of the ``features`` dataset.

    Returns:
        The final path.
    """
    import h5py

    features = np.asarray(features, dtype=np.float32)
    coords = np.asarray(coords, dtype=np.int64).reshape(-1, 2)
    if features.ndim != 2 or len(features) != len(coords):
        raise ValueError(
            f"features {features.shape} and coords {coords.shape} do not describe the same tiles"
        )
    path = Path(path)
    root = {
        "features_format": FEATURES_FORMAT,
        "edgepath_version": __version__,
        "mpp": float(mpp),
        "tile_px": int(tile_px),
        "level0_tile_size": float(level0_tile_size),
        "n_tiles": len(coords),
        "embed_dim": int(features.shape[1]),
        **(attrs or {}),
    }
    # The HDF5 file is assembled in memory and written with plain writes. HDF5 does not recover
    # from a write error in its own I/O: a disk that fills while it writes gave "Can't close
    # file" OSErrors whose first line says nothing useful, RuntimeErrors ("Can't destroy cache")
    # from an explicit flush, and "Exception ignored in ObjectID.__dealloc__" tracebacks on
    # stderr. In memory HDF5 cannot meet a disk error; ours are ordinary OSErrors (errno kept),
    # and atomic_path removes the partial temporary file.
    image = io.BytesIO()
    with h5py.File(image, "w") as f:
        _fill(f, features, coords, mpp=mpp, tile_px=tile_px, level0_tile_size=level0_tile_size)
        for name, extra in (("coords", coords_attrs), ("features", features_attrs)):
            for k, v in (extra or {}).items():
                f[name].attrs[k] = _attr_value(v)
        for k, v in root.items():
            f.attrs[k] = _attr_value(v)
    with atomic_path(path, suffix=".tmp") as tmp:
        _write_all(tmp, image.getbuffer())
    del image
    log.debug("wrote %s (%d tiles)", path, len(coords))
    return path


def _write_all(path: Path, data: memoryview) -> None:
    """Write ``data`` to ``path`` and sync it (on disk before the rename makes it visible)."""
    fd = os.open(path, os.O_WRONLY | os.O_TRUNC)
    try:
        done = 0
        while done < len(data):
            done += os.write(fd, data[done:])
        os.fsync(fd)
    finally:
        os.close(fd)
        data.release()


def _fill(
    f: Any,
    features: np.ndarray,
    coords: np.ndarray,
    *,
    mpp: float,
    tile_px: int,
    level0_tile_size: float,
) -> None:
    f.create_dataset("features", data=features)
    c = f.create_dataset("coords", data=coords)
    # TRIDENT reads these two from the coords dataset (patch size at the target mpp and
    # its footprint in level-0 px, as an int).
    c.attrs["patch_size"] = int(tile_px)
    c.attrs["patch_size_level0"] = int(round(level0_tile_size))
    c.attrs["mpp"] = float(mpp)


def read_attrs(path: str | os.PathLike[str]) -> dict[str, Any]:
    """The root attributes of a feature file (no arrays read).

    Raises:
        ArtifactError: The file is not a readable feature file.
    """
    import h5py

    try:
        with h5py.File(path, "r", locking=False) as f:
            if "features" not in f or "coords" not in f:
                raise ArtifactError(f"{path}: no 'features'/'coords' datasets; not a feature file")
            return {k: _from_h5(v) for k, v in f.attrs.items()}
    except OSError as exc:
        raise ArtifactError(f"{path}: unreadable HDF5 ({exc}); delete it to recompute") from None


def read_features(path: str | os.PathLike[str]) -> FeatureFile:
    """Read a feature file written by :func:`write_features` (or by CLAM/TRIDENT), with the
    root's and both datasets' attributes (TRIDENT stores its metadata on the datasets).

    Raises:
        ArtifactError: The file is not a readable feature file.
    """
    import h5py

    try:
        with h5py.File(path, "r", locking=False) as f:
            if "features" not in f or "coords" not in f:
                raise ArtifactError(f"{path}: no 'features'/'coords' datasets; not a feature file")
            return FeatureFile(
                features=np.asarray(f["features"][()], dtype=np.float32),
                coords=np.asarray(f["coords"][()], dtype=np.int64),
                attrs={k: _from_h5(v) for k, v in f.attrs.items()},
                coords_attrs={k: _from_h5(v) for k, v in f["coords"].attrs.items()},
                features_attrs={k: _from_h5(v) for k, v in f["features"].attrs.items()},
            )
    except OSError as exc:
        raise ArtifactError(f"{path}: unreadable HDF5 ({exc}); delete it to recompute") from None


def _from_h5(value: Any) -> Any:
    if isinstance(value, bytes):
        value = value.decode()
    if isinstance(value, np.generic):
        return value.item()
    return value
