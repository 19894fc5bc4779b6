"""The fidelity gate: quantized vs float embeddings on held-out tiles, against preset thresholds."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgepath.metrics import fidelity
from edgepath.quantize.presets import GateSpec


@dataclass
class GateResult:
    """What the gate measured and whether it passed.

    Attributes:
        figures: ``cosine``, ``cosine_p1``, ``centered_cosine``, ``knn10_agreement``, ``cka``,
            ``n_tiles`` and, when measured, ``robustness_float``, ``robustness_quantized``,
            ``robustness_drop``.
        thresholds: The preset's thresholds (None = reported, not gated).
        failures: One line per failed check (empty when it passed).
    """

    figures: dict[str, Any]
    thresholds: dict[str, Any]
    failures: list[str] = field(default_factory=list)

    @property
    def passed(self) -> bool:
        """True when every gated figure met its threshold."""
        return not self.failures

    def to_dict(self) -> dict[str, Any]:
        """Manifest / JSON form."""
        return {
            "passed": self.passed,
            "figures": self.figures,
            "thresholds": self.thresholds,
            "failures": list(self.failures),
        }


def _finite(v: Any) -> bool:
    return v is not None and isinstance(v, int | float) and math.isfinite(v)


def check(
    quantized: np.ndarray,
    reference: np.ndarray,
    spec: GateSpec,
    *,
    robustness: tuple[float, float] | None = None,
) -> GateResult:
    """Gate quantized embeddings against the float model's on the same held-out tiles.

    Args:
        quantized: (N, D) embeddings of the quantized model.
        reference: (N, D) embeddings of the float model.
        spec: Thresholds from the preset.
        robustness: ``(float score, quantized score)`` of the robustness suite, if measured.

    Returns:
        The figures and the verdict. Non-finite embeddings (NaN / inf, as a broken quantizer
        can produce) fail every check rather than slipping through as NaN comparisons.
    """
    q = np.asarray(quantized, dtype=np.float64)
    r = np.asarray(reference, dtype=np.float64)
    failures: list[str] = []
    if not np.isfinite(q).all():
        bad = int((~np.isfinite(q)).any(axis=1).sum())
        failures.append(f"{bad} of {len(q)} quantized embeddings are NaN or infinite")
        q = np.nan_to_num(q, nan=0.0, posinf=0.0, neginf=0.0)
    zero = int((np.linalg.norm(q, axis=1) < 1e-12).sum())
    if zero:
        failures.append(f"{zero} of {len(q)} quantized embeddings collapsed to zero")
    figs = fidelity(q, r)
    thresholds = {
        "min_cosine": spec.min_cosine,
        "min_cosine_p1": spec.min_cosine_p1,
        "min_knn10": spec.min_knn10,
        "max_robustness_drop": spec.max_robustness_drop,
    }
    for key, name in (
        ("cosine", "min_cosine"),
        ("cosine_p1", "min_cosine_p1"),
        ("knn10_agreement", "min_knn10"),
    ):
        limit = thresholds[name]
        v = figs.get(key)
        if limit is not None and not (_finite(v) and v >= limit):
            failures.append(f"{key} {_fmt(v)} < {limit}")
    if robustness is not None:
        f_score, q_score = robustness
        drop = f_score - q_score
        figs.update(robustness_float=f_score, robustness_quantized=q_score, robustness_drop=drop)
        limit = spec.max_robustness_drop
        if limit is not None and not (_finite(drop) and drop <= limit):
            failures.append(f"robustness drop {_fmt(drop)} > {limit}")
    return GateResult(figures=figs, thresholds=thresholds, failures=failures)


def _fmt(v: Any) -> str:
    return f"{v:.4f}" if _finite(v) else str(v)
