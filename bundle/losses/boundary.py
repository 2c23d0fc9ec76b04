"""Dice + BCE whose false positives cost more the farther they lie from the true mask."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from scipy.ndimage import distance_transform_edt
from torch import Tensor, nn


def distance_outside(mask: Tensor) -> Tensor:
    """Euclidean distance in pixels from each pixel of (B, C, H, W) binary ``mask`` to the nearest mask pixel.

    0 on the mask; 0 everywhere for an empty mask (no mask pixel to measure from). Computed on the CPU with SciPy,
    without gradient, returned on ``mask``'s device as float32.
    """
    planes = (mask.detach() > 0.5).cpu().numpy().reshape(-1, *mask.shape[-2:])
    out = np.zeros(planes.shape, dtype=np.float32)
    for i, plane in enumerate(planes):
        if plane.any():
            out[i] = distance_transform_edt(~plane)
    return torch.from_numpy(out).reshape(mask.shape).to(mask.device)


class DistanceWeightedDiceBCELoss(nn.Module):
    """Dice over the batch + BCE weighted by ``1 + d / (scale * min(H, W))``, ``d`` from :func:`distance_outside`.

    Inside the true mask and on its border the BCE weight is 1, as in :class:`bundle.losses.DiceBCELoss`; a false
    positive ``scale`` of the shorter side away costs twice as much, twice that distance three times, and so on. A
    mask leaking into the gastric air bubble under the left hemidiaphragm, or below a costophrenic angle, is such a
    far false positive, which plain Dice + BCE prices like a pixel on the border. The idea is the boundary loss of
    Kervadec et al. (MIDL 2019), which weighs predicted probabilities by the distance map; weighing the BCE instead
    keeps the gradient of a confident false positive from vanishing with ``p (1 - p)``.

    Args:
        scale: the distance, as a fraction of the shorter image side, at which a false positive's BCE weight
            doubles.
    """

    def __init__(self, scale: float = 0.03) -> None:
        super().__init__()
        if scale <= 0:
            raise ValueError(f"scale must be positive, got {scale}")
        self.scale = scale
        self.dice = DiceLoss(sigmoid=True, batch=True)

    def forward(self, logits: Tensor, mask: Tensor) -> Tensor:
        weight = 1.0 + distance_outside(mask) / (self.scale * min(mask.shape[-2:]))
        bce = F.binary_cross_entropy_with_logits(logits.float(), mask.float(), weight=weight)
        return self.dice(logits, mask) + bce
