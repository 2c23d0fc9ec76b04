"""SaliencyLoss: a predicted gaze distribution against the radiologists' gaze map."""

from __future__ import annotations

import torch
from torch import Tensor, nn

#: Added to the target before its logarithm (the MIT saliency benchmark's KL uses the same guard).
EPS: float = 1e-12


def _pearson(pred: Tensor, target: Tensor) -> Tensor:
    """Per-image Pearson correlation of two (B, N) maps."""
    pred = pred - pred.mean(1, keepdim=True)
    target = target - target.mean(1, keepdim=True)
    return (pred * target).sum(1) / (pred.norm(dim=1) * target.norm(dim=1)).clamp_min(EPS)


class SaliencyLoss(nn.Module):
    """``kl * KL(target || pred) - cc * CC(pred, target)``, averaged over the batch.

    KL divergence is the seed's loss (Qiu et al., arXiv:2403.16970); the correlation coefficient term, off by
    default, is the usual companion in saliency prediction (Bylinskii et al., "What do different evaluation
    metrics tell us about saliency models?", TPAMI 2019).

    Args:
        kl: weight of the KL divergence.
        cc: weight of the negated correlation coefficient.
    """

    def __init__(self, kl: float = 1.0, cc: float = 0.0) -> None:
        super().__init__()
        self.kl, self.cc = kl, cc

    def forward(self, log_pred: Tensor, target: Tensor) -> Tensor:
        """``log_pred`` (B, 1, H, W) log-probabilities (:class:`bundle.networks.SaliencyHead`), ``target`` (B, 1,
        H, W) non-negative maps (normalised here)."""
        log_pred, target = log_pred.flatten(1), target.flatten(1).to(log_pred.dtype)
        target = target / target.sum(1, keepdim=True).clamp_min(EPS)
        loss = log_pred.new_zeros(())
        if self.kl:
            loss = loss + self.kl * (target * (torch.log(target + EPS) - log_pred)).sum(1).mean()
        if self.cc:
            loss = loss - self.cc * _pearson(log_pred.exp(), target).mean()
        return loss
