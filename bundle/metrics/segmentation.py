"""Segmentation metrics: per-image Dice as in the SIIM-ACR Pneumothorax Segmentation challenge (the masks scored
are post-processed by :mod:`bundle.decisions`, as every runtime does).

SIIM-ACR (https://www.kaggle.com/c/siim-acr-pneumothorax-segmentation/overview/evaluation): the score is the
mean over test images of the per-image Dice coefficient ``2 |X ∩ Y| / (|X| + |Y|)``, where an image whose
predicted mask and true mask are both empty scores 1.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from ignite.metrics import Metric


def dice_per_image(pred: torch.Tensor | np.ndarray, truth: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Dice of binary masks (B, ...) per image; an image with empty prediction and empty truth scores 1
    (the SIIM-ACR definition)."""
    pred, truth = torch.as_tensor(pred).flatten(1).bool(), torch.as_tensor(truth).flatten(1).bool()
    inter = (pred & truth).sum(1).double()
    total = (pred.sum(1) + truth.sum(1)).double()
    return torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total))


def mean_dice(scores: np.ndarray) -> float:
    """Mean of per-image Dice scores over all images (empty/empty images included, scoring 1); NaN if none."""
    return float(np.mean(scores)) if len(scores) else float("nan")


def positive_dice(scores: np.ndarray, truth_positive: np.ndarray) -> float:
    """Mean per-image Dice over the images whose true mask is not empty; NaN if there is none."""
    return mean_dice(np.asarray(scores)[np.asarray(truth_positive, dtype=bool)])


class MeanDice(Metric):
    """Mean per-image Dice of ``seg_prob > threshold`` against ``mask`` over samples with ``has_seg``
    (``positives_only``: over those whose truth mask is not empty)."""

    required_output_keys = ("seg_prob", "mask", "has_seg")

    def __init__(
        self, threshold: float = 0.5, positives_only: bool = False, output_transform: Callable = lambda x: x
    ) -> None:
        self.threshold = threshold
        self.positives_only = positives_only
        super().__init__(output_transform=output_transform, skip_unrolling=True)

    def reset(self) -> None:
        self._scores: list[np.ndarray] = []

    def update(self, output: tuple[torch.Tensor, ...]) -> None:
        probs, mask, flag = (t.detach().cpu() for t in output)
        if self.positives_only:
            flag = flag & (mask.flatten(1).amax(1) > 0)
        self._scores.append(dice_per_image(probs[flag] > self.threshold, mask[flag] > 0).numpy())

    def compute(self) -> float:
        return mean_dice(np.concatenate(self._scores) if self._scores else np.zeros(0))
