"""Cosine schedules with linear warmup (lr, weight decay, EMA momentum), as in DINOv2."""

from __future__ import annotations

import math


def cosine(
    step: int, total: int, start: float, end: float, *, warmup: int = 0, warmup_from: float = 0.0
) -> float:
    """Linear warmup ``warmup_from -> start`` over ``warmup`` steps, then cosine ``start -> end``."""
    if step < warmup:
        return warmup_from + (start - warmup_from) * step / max(warmup, 1)
    span = max(total - warmup, 1)
    t = min(max(step - warmup, 0), span) / span
    return end + 0.5 * (start - end) * (1 + math.cos(math.pi * t))
