"""FixMatch for multi-label findings (Sohn et al., "FixMatch: Simplifying Semi-Supervised Learning with Consistency
and Confidence", NeurIPS 2020), as MultiMix uses it (Haque et al., arXiv:2010.14731: confidence 0.7).

Each finding is a sigmoid output, so the pseudo-label is per finding: a weak-view probability ``p >= t`` is a
confident positive, ``p <= 1 - t`` a confident negative, anything between is left out. The strong view's logits
are trained on the confident findings by BCE, averaged over all findings of the batch (FixMatch's ``1 / (mu B)``
normalisation, so a batch with few confident findings weighs less).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def confident_targets(probs: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
    """Hard 0/1 targets of ``probs`` and the mask of the confident ones (``p >= t`` or ``p <= 1 - t``).

    Works on any shape: per finding for (B, C) probabilities, per pixel for (B, 1, H, W) masks.
    """
    if not 0.5 <= threshold <= 1.0:
        raise ValueError(f"confidence threshold must be in [0.5, 1], got {threshold}")
    targets = (probs >= 0.5).to(probs.dtype)
    confident = (probs >= threshold) | (probs <= 1.0 - threshold)
    return targets, confident


class FixMatchLoss(nn.Module):
    """Confident weak-view pseudo-labels as BCE targets of the strong view.

    Args:
        threshold: confidence ``t`` of a pseudo-label (MultiMix: 0.7; FixMatch's softmax: 0.95).

    ``forward(strong_logits, weak_logits)`` with (B, C) logits returns ``(loss, confident fraction)``; the weak
    logits are detached (they are targets).
    """

    def __init__(self, threshold: float = 0.7) -> None:
        super().__init__()
        confident_targets(torch.zeros(1), threshold)  # validates the threshold
        self.threshold = threshold

    def forward(self, strong_logits: Tensor, weak_logits: Tensor) -> tuple[Tensor, Tensor]:
        targets, confident = confident_targets(torch.sigmoid(weak_logits.detach().float()), self.threshold)
        bce = F.binary_cross_entropy_with_logits(strong_logits.float(), targets, reduction="none")
        return (bce * confident).sum() / bce.numel(), confident.float().mean()
