"""Slide resolution: mpp from OpenSlide, vendor keys or TIFF tags, plausibility, user overrides."""

from __future__ import annotations

import csv
import logging
import math
import os
from collections.abc import Mapping
from pathlib import Path

from edgepath.errors import ConfigError, SlideReadError

log = logging.getLogger(__name__)

#: Real slides lie between 0.1 µm/px (beyond 100x oil) and 10 µm/px (a low-power overview); a
#: 72- or 96-dpi default TIFF tag gives 352.8 or 264.6 µm/px and is rejected.
PLAUSIBLE_MPP = (0.1, 10.0)

#: How the mpp was found, as reported in ``Slide.mpp_source`` and ``--json``.
SOURCES = ("property", "tiff-resolution", "override")

# TIFF ResolutionUnit -> micrometres per unit (TIFF 6.0: 1 none, 2 inch, 3 centimetre).
_UNIT_UM = {"inch": 25_400.0, "centimeter": 10_000.0, "cm": 10_000.0, "2": 25_400.0, "3": 10_000.0}

HOW_TO_OVERRIDE = (
    "set it with --slide-mpp VALUE (or a 'slide,mpp' row in --mpp-csv; open_slide(mpp=) in Python)"
)


def plausible(mpp: float) -> bool:
    """True when ``mpp`` (µm/px) is a resolution real slide scanners produce."""
    return math.isfinite(mpp) and PLAUSIBLE_MPP[0] <= mpp <= PLAUSIBLE_MPP[1]


def _float(value: object) -> float | None:
    try:
        v = float(str(value).strip().strip('"'))
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) and v > 0 else None


def _mean_xy(x: float | None, y: float | None, what: str) -> float | None:
    if x is None:
        return y
    if y is None or x == y:
        return x
    if abs(x - y) / max(x, y) > 0.02:
        log.warning("%s: non-square pixels (x %.4f, y %.4f µm/px); using their mean", what, x, y)
    return (x + y) / 2


def candidates(props: Mapping[str, str]) -> list[tuple[float, str, str]]:
    """Every mpp the properties give, best first, as (mpp, source, key).

    Order: OpenSlide's normalised ``openslide.mpp-x/y``; vendor keys (``aperio.MPP``, the MIRAX
    level-0 ``MICROMETER_PER_PIXEL_X/Y``, ``philips.DICOM_PIXEL_SPACING`` in mm); then the TIFF
    resolution tag with its unit (``tiff.XResolution`` + ``tiff.ResolutionUnit``).
    """
    out: list[tuple[float, str, str]] = []
    mx, my = _float(props.get("openslide.mpp-x")), _float(props.get("openslide.mpp-y"))
    v = _mean_xy(mx, my, "openslide.mpp")
    if v is not None:
        out.append((v, "property", "openslide.mpp-x"))
    v = _float(props.get("aperio.MPP"))
    if v is not None:
        out.append((v, "property", "aperio.MPP"))
    mx = _float(props.get("mirax.LAYER_0_LEVEL_0_SECTION.MICROMETER_PER_PIXEL_X"))
    my = _float(props.get("mirax.LAYER_0_LEVEL_0_SECTION.MICROMETER_PER_PIXEL_Y"))
    v = _mean_xy(mx, my, "mirax micrometer per pixel")
    if v is not None:
        out.append((v, "property", "mirax.LAYER_0_LEVEL_0_SECTION.MICROMETER_PER_PIXEL_X"))
    spacing = props.get("philips.DICOM_PIXEL_SPACING")
    if spacing:  # '"0.000243" "0.000243"' in millimetres (row, column)
        parts = [_float(p) for p in str(spacing).replace('"', " ").split()]
        parts = [p for p in parts if p is not None]
        if parts:
            out.append(
                (1000.0 * sum(parts) / len(parts), "property", "philips.DICOM_PIXEL_SPACING")
            )
    rx, ry = _float(props.get("tiff.XResolution")), _float(props.get("tiff.YResolution"))
    unit = str(props.get("tiff.ResolutionUnit", "")).strip().lower()
    if (rx or ry) and unit in _UNIT_UM:
        per_unit = _mean_xy(rx, ry, "tiff resolution")
        out.append((_UNIT_UM[unit] / per_unit, "tiff-resolution", "tiff.XResolution"))
    return out


def resolve_mpp(
    props: Mapping[str, str], *, path: str | os.PathLike[str], override: float | None = None
) -> tuple[float, str]:
    """The level-0 mpp of a slide and where it came from.

    Args:
        props: The slide's properties (OpenSlide-style keys).
        path: The slide, named in error messages.
        override: A user-given mpp; wins over the properties, accepted even outside the
            plausible range (with a warning), never rounded.

    Returns:
        ``(mpp, source)`` with ``source`` one of ``SOURCES``.

    Raises:
        SlideReadError: No plausible mpp in the properties and no override.
    """
    if override is not None:
        if not (math.isfinite(override) and override > 0):
            raise ConfigError(f"{path}: mpp override {override} must be a positive number (µm/px)")
        if not plausible(override):
            log.warning("%s: override mpp %s is outside %s µm/px", path, override, PLAUSIBLE_MPP)
        return float(override), "override"
    found = candidates(props)
    for mpp, source, _key in found:
        if plausible(mpp):
            return mpp, source
    if found:
        mpp, _, key = found[0]
        raise SlideReadError(
            f"{path}: implausible mpp {mpp:.4g} µm/px from {key} (real slides are "
            f"{PLAUSIBLE_MPP[0]}-{PLAUSIBLE_MPP[1]}); {HOW_TO_OVERRIDE}"
        )
    raise SlideReadError(f"{path}: no mpp in the slide's metadata; {HOW_TO_OVERRIDE}")


def read_mpp_csv(path: str | os.PathLike[str]) -> dict[str, float]:
    """Per-slide mpp overrides from a CSV with columns ``slide,mpp``.

    ``slide`` may be a path, a file name or a file stem; see ``lookup_override``.

    Raises:
        ConfigError: Missing file, missing columns or a value that is not a positive number.
    """
    p = Path(path)
    try:
        with open(p, newline="") as f:
            rows = list(csv.DictReader(f))
    except FileNotFoundError:
        raise ConfigError(f"{p}: mpp CSV not found; pass a CSV with columns slide,mpp") from None
    out: dict[str, float] = {}
    for i, row in enumerate(rows, start=2):
        if "slide" not in row or "mpp" not in row:
            raise ConfigError(f"{p}: needs a header line 'slide,mpp'")
        v = _float(row["mpp"])
        if v is None:
            raise ConfigError(f"{p}:{i}: mpp '{row['mpp']}' is not a positive number (µm/px)")
        out[str(row["slide"]).strip()] = v
    return out


def lookup_override(overrides: Mapping[str, float], path: str | os.PathLike[str]) -> float | None:
    """The override for ``path`` matched by full path, file name or stem (in that order)."""
    p = Path(path)
    for key in (str(p), str(p.resolve()), p.name, p.stem):
        if key in overrides:
            return overrides[key]
    return None
