"""Segmentation consistency on unlabelled images: the strong view's mask follows the weak view's.

The weak prediction is the target (detached); both views must be pixel-aligned (:mod:`bundle.data.views`).

- ``kl``: the mean per-pixel KL divergence ``KL(p_weak || p_strong)`` of the two Bernoulli mask
  distributions (MultiMix's consistency term, Haque et al., arXiv:2010.14731);
- ``dice``: soft Dice of the strong prediction against the confident weak pseudo-mask, over confident pixels only
  (``p >= t`` is foreground, ``p <= 1 - t`` background, the rest left out; FixMatch's rule per pixel).
"""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .fixmatch import confident_targets

Mode = Literal["kl", "dice"]


def bernoulli_kl(target_logits: Tensor, logits: Tensor) -> Tensor:
    """Per-pixel ``KL(sigmoid(target_logits) || sigmoid(logits))``, computed from logits (stable)."""
    p = torch.sigmoid(target_logits)
    return (
        p * (F.logsigmoid(target_logits) - F.logsigmoid(logits))
        + (1 - p) * (F.logsigmoid(-target_logits) - F.logsigmoid(-logits))
    )


def masked_dice_loss(logits: Tensor, targets: Tensor, keep: Tensor, eps: float = 1e-5) -> Tensor:
    """1 - soft Dice over the batch of ``sigmoid(logits)`` against ``targets``, on the pixels in ``keep`` only."""
    prob = torch.sigmoid(logits) * keep
    targets = targets * keep
    return 1 - (2 * (prob * targets).sum() + eps) / (prob.sum() + targets.sum() + eps)


class SegConsistencyLoss(nn.Module):
    """Weak-to-strong consistency of mask logits.

    Args:
        mode: "kl" (MultiMix) or "dice" (confident pseudo-mask).
        threshold: pixel confidence of the "dice" pseudo-mask.

    ``forward(strong_logits, weak_logits)`` with (B, 1, H, W) logits returns ``(loss, confident pixel fraction)``
    (the fraction is 1 for "kl", which uses every pixel).
    """

    def __init__(self, mode: Mode = "kl", threshold: float = 0.7) -> None:
        super().__init__()
        if mode not in ("kl", "dice"):
            raise ValueError(f"mode must be 'kl' or 'dice', got {mode!r}")
        confident_targets(torch.zeros(1), threshold)
        self.mode = mode
        self.threshold = threshold

    def forward(self, strong_logits: Tensor, weak_logits: Tensor) -> tuple[Tensor, Tensor]:
        if strong_logits.shape != weak_logits.shape:
            raise ValueError(f"views' masks differ in shape: {strong_logits.shape} vs {weak_logits.shape}")
        weak, strong = weak_logits.detach().float(), strong_logits.float()
        if self.mode == "kl":
            return bernoulli_kl(weak, strong).mean(), torch.ones((), device=strong.device)
        targets, confident = confident_targets(torch.sigmoid(weak), self.threshold)
        return masked_dice_loss(strong, targets, confident.float()), confident.float().mean()
