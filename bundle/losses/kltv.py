"""KLTV: absolute KL divergence plus Tversky loss for binary masks (Imran & Terzopoulos, arXiv:1908.03693)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from monai.losses import TverskyLoss
from monai.utils import LossReduction
from torch import Tensor, nn


def bernoulli_kl(pred: Tensor, target: Tensor, sigmoid: bool = False, eps: float = 1e-6) -> Tensor:
    """Per-pixel KL(target || pred) of the Bernoulli distributions {fg, bg} a mask assigns to each pixel.

    ``t log(t/p) + (1-t) log((1-t)/(1-p))``, elementwise, same shape as ``pred``. Logits (``sigmoid=True``) go
    through ``logsigmoid`` (finite for any logit); probabilities are clamped to ``[eps, 1-eps]``. For hard
    targets this equals binary cross-entropy, since the targets' entropy is 0.
    """
    if sigmoid:
        log_p, log_q = F.logsigmoid(pred), F.logsigmoid(-pred)
    else:
        p = pred.clamp(eps, 1.0 - eps)
        log_p, log_q = torch.log(p), torch.log1p(-p)
    t = target.to(pred.dtype)
    return torch.xlogy(t, t) - t * log_p + torch.xlogy(1.0 - t, 1.0 - t) - (1.0 - t) * log_q


class KLTVLoss(nn.Module):
    """``kl_weight * |KL(target || pred)| + tversky_weight * Tversky`` on (B, C, H, W) masks.

    Imran & Terzopoulos (arXiv:1908.03693) combine the absolute KL divergence between the target and predicted
    distributions with the Tversky loss ``1 - TP / (TP + alpha FP + beta FN)`` (Salehi et al., MLMI 2017). Here
    the KL term is the mean over pixels of the per-pixel Bernoulli KL (:func:`bernoulli_kl`): it gives every
    pixel a gradient, an empty target included (its Tversky term still sees the false positives). That KL is
    never negative, so the paper's absolute value only removes rounding below zero. The Tversky term is
    MONAI's :class:`~monai.losses.TverskyLoss`.

    Defaults: the paper's alpha and beta were not available offline when this was written, so ``alpha=0.3``
    (false positives) and ``beta=0.7`` (false negatives) are Salehi et al.'s best setting, which favours recall;
    ``alpha=beta=0.5`` makes the Tversky term the Dice loss. Both terms weigh 1, as in the paper's sum.

    Args:
        sigmoid: ``pred`` holds logits (else probabilities in [0, 1]).
        alpha: Tversky weight of false positives.
        beta: Tversky weight of false negatives.
        kl_weight: weight of the KL term.
        tversky_weight: weight of the Tversky term.
        batch: pool the batch before the ratio and the KL mean (one value per channel), as MONAI's ``batch``.
        smooth_nr: Tversky numerator smoothing.
        smooth_dr: Tversky denominator smoothing.
        reduction: ``"mean"``, ``"sum"`` or ``"none"`` (shape (B, C), or (C,) with ``batch``), as MONAI losses.
    """

    def __init__(
        self,
        sigmoid: bool = False,
        alpha: float = 0.3,
        beta: float = 0.7,
        kl_weight: float = 1.0,
        tversky_weight: float = 1.0,
        batch: bool = False,
        smooth_nr: float = 1e-5,
        smooth_dr: float = 1e-5,
        reduction: LossReduction | str = LossReduction.MEAN,
    ) -> None:
        super().__init__()
        self.sigmoid = sigmoid
        self.kl_weight = kl_weight
        self.tversky_weight = tversky_weight
        self.batch = batch
        self.reduction = LossReduction(reduction)
        self.tversky = TverskyLoss(
            sigmoid=sigmoid, alpha=alpha, beta=beta, batch=batch, smooth_nr=smooth_nr, smooth_dr=smooth_dr,
            reduction=LossReduction.NONE,
        )

    def kl(self, pred: Tensor, target: Tensor) -> Tensor:
        """The absolute mean Bernoulli KL, (B, C) (or (C,) with ``batch``)."""
        kl = bernoulli_kl(pred, target, self.sigmoid)
        dims = [0, *range(2, kl.dim())] if self.batch else list(range(2, kl.dim()))
        return kl.mean(dim=dims).abs()

    def forward(self, pred: Tensor, target: Tensor) -> Tensor:
        """``pred`` logits or probabilities and ``target`` masks, both (B, C, H, W)."""
        if pred.shape != target.shape:
            raise ValueError(f"prediction {tuple(pred.shape)} and target {tuple(target.shape)} differ in shape")
        target = target.to(pred.dtype)
        loss = self.kl_weight * self.kl(pred, target) + self.tversky_weight * self.tversky(pred, target)
        if self.reduction == LossReduction.MEAN:
            return loss.mean()
        if self.reduction == LossReduction.SUM:
            return loss.sum()
        return loss
