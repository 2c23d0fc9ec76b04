"""Contrastive loss on paired embeddings: SimCLR's NT-Xent, and supervised contrastive when labels exist.

One formula covers both (Khosla et al., "Supervised Contrastive Learning", NeurIPS 2020, equation 2, the
``L_out`` form): the two views of ``N`` images give ``2N`` embeddings, L2-normalised; for every anchor ``i`` the
cosine similarities to the other ``2N - 1`` embeddings, divided by ``temperature``, form a softmax, and the loss
is minus the mean log-probability of the anchor's positives. The positives of an image's view are its other
view and, with ``groups``, every view of an image of the same group. Without groups (or with every group -1)
that is exactly NT-Xent (Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations",
ICML 2020, equation 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class ContrastiveLoss(nn.Module):
    """NT-Xent / supervised-contrastive loss of two views' embeddings.

    Args:
        temperature: softmax temperature of the cosine similarities (SimCLR: 0.1 to 0.5).
    """

    def __init__(self, temperature: float = 0.2) -> None:
        super().__init__()
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        self.temperature = temperature

    def forward(self, first: Tensor, second: Tensor, groups: Tensor | None = None) -> Tensor:
        """Mean loss over the ``2N`` anchors.

        Args:
            first, second: (N, D) embeddings of the two views, row ``i`` of both from image ``i``.
            groups: (N,) int64 label group of each image; images of one group (>= 0) are positives of each other,
                -1 marks an image whose only positive is its own other view. None: all -1 (NT-Xent).
        """
        if first.shape != second.shape or first.dim() != 2:
            raise ValueError(f"views must be two (N, D) tensors of one shape, got {first.shape} and {second.shape}")
        n = first.shape[0]
        z = F.normalize(torch.cat([first, second]).float(), dim=1)
        logits = z @ z.T / self.temperature
        self_pair = torch.eye(2 * n, dtype=torch.bool, device=z.device)
        logits = logits.masked_fill(self_pair, float("-inf"))
        image = torch.arange(n, device=z.device).repeat(2)
        positive = image[:, None] == image[None, :]
        if groups is not None:
            group = groups.to(z.device).repeat(2)
            positive |= (group[:, None] == group[None, :]) & (group[:, None] >= 0)
        positive &= ~self_pair
        log_prob = torch.log_softmax(logits, dim=1).masked_fill(self_pair, 0.0)
        return -((log_prob * positive).sum(1) / positive.sum(1)).mean()


def label_groups(cls: Tensor, known: Tensor) -> Tensor:
    """(N,) groups for :class:`ContrastiveLoss` from multi-label targets: images whose findings are all known and
    equal share a group; an image with an unknown finding (or none graded) gets -1.

    Args:
        cls: (N, C) 0/1 findings. known: (N, C) bool, which findings are graded.
    """
    graded = known.all(1) & (known.shape[1] > 0)
    _, inverse = torch.unique(cls.round().long(), dim=0, return_inverse=True)
    return torch.where(graded, inverse, torch.full_like(inverse, -1))
