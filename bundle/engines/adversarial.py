"""AdversarialMaskPart: APPAU-Net's adversarial term as a training part (Imran & Terzopoulos, arXiv:1908.03693).

A :class:`~bundle.networks.MaskDiscriminator` learns to tell (image, true mask) from (image, predicted mask);
the segmentor is pushed to make its masks pass for true ones (adversarial segmentation, Luc et al., "Semantic
Segmentation using Adversarial Networks", NIPS workshop 2016). The segmentor's term needs no label, so it also
trains on images without masks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .batch import plain
from .parts import TrainingPart


class AdversarialMaskPart(TrainingPart):
    """The segmentor's adversarial term, and the discriminator's own optimiser step after the network's.

    ``loss``: ``weight * BCE(D(image, sigmoid(seg)), real)`` over every image of the batch (the non-saturating
    GAN loss, Goodfellow et al. 2014), logged unweighted as ``segmentor``. ``after_step``: one Adam step of the
    discriminator on ``BCE(D(image, mask), real) + BCE(D(image, sigmoid(seg).detach()), fake)``, halved, over the
    images with a mask (``has_seg``); a batch without masks leaves it alone. The predicted masks are those of the
    iteration's forward pass (before the network's step).

    The paper's weight is not in the text available offline; 0.1 keeps the supervised mask loss in the lead
    (Luc et al. weigh their adversarial term with a lambda of this order). Adam with ``betas=(0.5, 0.999)`` is
    DCGAN's setting (Radford et al. 2016).

    Args:
        discriminator: ``(image (B, C, H, W), mask probabilities (B, 1, H, W)) -> (B, 1)`` real logits.
        weight: weight of the segmentor's term in the step's loss.
        lr: the discriminator's learning rate.
        betas: its Adam betas.
    """

    def __init__(
        self, discriminator: nn.Module, weight: float = 0.1, lr: float = 2e-4, betas: Sequence[float] = (0.5, 0.999)
    ) -> None:
        self.discriminator = discriminator
        self.weight = weight
        self.optimizer = torch.optim.Adam(discriminator.parameters(), lr=lr, betas=(betas[0], betas[1]))

    def _judge(self, image: Tensor, mask: Tensor) -> Tensor:
        self.discriminator.to(image.device).train()
        return self.discriminator(image, mask)

    def loss(self, engine: Any, batch: Mapping[str, Any], pred: Mapping[str, Tensor]) -> dict[str, Tensor]:
        if "seg" not in pred:
            return {}
        logits = self._judge(plain(batch["image"]), torch.sigmoid(pred["seg"]))
        term = F.binary_cross_entropy_with_logits(logits, torch.ones_like(logits))
        return {"loss": self.weight * term, "segmentor": term}

    def after_step(self, engine: Any, batch: Mapping[str, Any], pred: Mapping[str, Tensor]) -> None:
        flag = batch["has_seg"]
        if "seg" not in pred or not bool(flag.any()):
            return
        image = plain(batch["image"])[flag]
        self.optimizer.zero_grad(set_to_none=True)  # also drops what the segmentor's term left on its weights
        real = self._judge(image, plain(batch["mask"])[flag].float())
        fake = self._judge(image, torch.sigmoid(pred["seg"][flag]).detach())
        loss = 0.5 * (
            F.binary_cross_entropy_with_logits(real, torch.ones_like(real))
            + F.binary_cross_entropy_with_logits(fake, torch.zeros_like(fake))
        )
        loss.backward()
        self.optimizer.step()

    def state_dict(self) -> dict[str, Any]:
        return {"discriminator": self.discriminator.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.discriminator.load_state_dict(state["discriminator"])
        self.optimizer.load_state_dict(state["optimizer"])
