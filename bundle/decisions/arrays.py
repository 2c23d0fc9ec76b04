"""Array helpers of the decision step: any runtime's outputs (NumPy arrays, torch tensors, lists) as NumPy."""

from __future__ import annotations

from typing import Any

import numpy as np


def as_numpy(value: Any, dtype: type = np.float64) -> np.ndarray:
    """``value`` as a NumPy array of ``dtype``; a torch tensor is detached and moved to the CPU first."""
    if hasattr(value, "detach"):  # a torch tensor, without importing torch
        value = value.detach().cpu().numpy()
    return np.asarray(value, dtype=dtype)


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Logistic function in float64, exact at both tails (no overflow for large negative logits)."""
    z = np.asarray(logits, dtype=np.float64)
    e = np.exp(-np.abs(z))
    return np.where(z >= 0, 1.0 / (1.0 + e), e / (1.0 + e))


def logit(probs: np.ndarray, eps: float = 1e-7) -> np.ndarray:
    """Log-odds of probabilities clipped to ``[eps, 1 - eps]`` (for runtimes that kept only ``sigmoid(z)``)."""
    p = np.clip(as_numpy(probs), eps, 1.0 - eps)
    return np.log(p) - np.log1p(-p)
