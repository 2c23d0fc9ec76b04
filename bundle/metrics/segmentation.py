"""Segmentation metrics."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from ignite.metrics import Metric


def dice_per_image(pred: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Dice of binary masks (B, ...) per image; an image with empty prediction and empty truth scores 1
    (the SIIM-ACR challenge definition)."""
    pred, truth = pred.flatten(1).bool(), truth.flatten(1).bool()
    inter = (pred & truth).sum(1).double()
    total = (pred.sum(1) + truth.sum(1)).double()
    return torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total))


class MeanDice(Metric):
    """Mean per-image Dice of ``seg_prob > threshold`` against ``mask`` over samples with ``has_seg``."""

    required_output_keys = ("seg_prob", "mask", "has_seg")

    def __init__(self, threshold: float = 0.5, output_transform: Callable = lambda x: x) -> None:
        self.threshold = threshold
        super().__init__(output_transform=output_transform, skip_unrolling=True)

    def reset(self) -> None:
        self._scores: list[np.ndarray] = []

    def update(self, output: tuple[torch.Tensor, ...]) -> None:
        probs, mask, flag = (t.detach().cpu() for t in output)
        self._scores.append(dice_per_image(probs[flag] > self.threshold, mask[flag] > 0).numpy())

    def compute(self) -> float:
        scores = np.concatenate(self._scores) if self._scores else np.zeros(0)
        return float(scores.mean()) if scores.size else float("nan")
