"""Measurements only the research scripts use (not part of the edgepath package or its API).

``ridge_readout`` (``xmag_ceiling.py``, ``standin_predictability.py``) and
``code_knn_agreement`` (``frozen_head_code.py``); their tests are ``tests/test_research.py``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from edgepath.metrics import knn_agreement


def ridge_readout(
    x_train: np.ndarray, y_train: np.ndarray, x_eval: np.ndarray, *, alpha: float = 1e-2
) -> np.ndarray:
    """Predict ``y`` for ``x_eval`` with a ridge map fitted on (``x_train``, ``y_train``).

    Both sides are centred on the training means; the penalty is ``alpha`` times the mean
    eigenvalue of the centred ``x`` Gram matrix, so it scales with the features. Across
    dimensions: what a linear read-out of one embedding recovers of another.
    """
    x = np.asarray(x_train, dtype=np.float64)
    y = np.asarray(y_train, dtype=np.float64)
    mu_x, mu_y = x.mean(0), y.mean(0)
    a = x - mu_x
    gram = a.T @ a
    lam = alpha * np.trace(gram) / a.shape[1]
    w = np.linalg.solve(gram + lam * np.eye(a.shape[1]), a.T @ (y - mu_y))
    return (np.asarray(x_eval, dtype=np.float64) - mu_x) @ w + mu_y


def code_knn_agreement(feats: Any, head: Any, temp: float, *, k: int = 10) -> float:
    """kNN-``k`` agreement between teacher tokens and their targets ``softmax(head(x) / temp)``.

    How much of the teacher's neighbourhood structure the DINO/iBOT targets carry, and so the
    most a student trained on them can learn of it. Codes are compared in Hellinger geometry
    (Euclidean on ``sqrt(p)``); the teacher side is centred on the head's ``mu`` when it has one.

    Args:
        feats: (N, D) teacher tokens (a torch tensor).
        head: A teacher-side head (``edgepath.distill.heads.FrozenPrototypeHead`` …).
        temp: The target temperature.
        k: Neighbours compared.
    """
    import torch
    import torch.nn.functional as F

    with torch.no_grad():
        x = feats.float()
        p = F.softmax(head(x) / temp, dim=-1)
        ref = x - head.mu if hasattr(head, "mu") else x
    return knn_agreement(p.sqrt().cpu().numpy(), ref.cpu().numpy(), k=k)
