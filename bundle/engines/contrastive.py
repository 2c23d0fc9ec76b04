"""Contrastive encoder pretraining as a training part (SimCLR, Chen et al., ICML 2020; supervised contrastive,
Khosla et al., NeurIPS 2020, where the batch carries findings).

The phase's batches hold two views of each image (``image`` and ``image_view``, :func:`bundle.data.two_views`)
and run no head (``tasks: []``, see :func:`bundle.engines.phases.ssl_pretrain`). :class:`ContrastivePretraining`
encodes both views in one CheXEnc pass, projects the pooled deepest features with a small MLP head
(:class:`ProjectionHead`) and adds :class:`~bundle.losses.ContrastiveLoss`. The projection head is the part's
own: its optimiser steps after the network's, and both are in the part's state.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from bundle.data.views import SECOND_VIEW_KEY, WEAK_KEY
from bundle.losses.contrastive import ContrastiveLoss, label_groups

from .batch import plain
from .distributed import unwrap
from .parts import TrainingPart


class ProjectionHead(nn.Module):
    """SimCLR's projection: global average pooling, Linear, ReLU, Linear.

    ``forward(deepest)``: (B, C, h, w) deepest encoder features -> (B, out_channels) embeddings.
    """

    def __init__(self, in_channels: int, hidden_channels: int = 512, out_channels: int = 128) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(in_channels, hidden_channels), nn.ReLU(inplace=True),
            nn.Linear(hidden_channels, out_channels),
        )

    def forward(self, deepest: Tensor) -> Tensor:
        return self.net(deepest)


class ContrastivePretraining(TrainingPart):
    """NT-Xent (or supervised-contrastive) loss of the encoder on two views per image.

    Logged: ``<name>_contrastive`` (unweighted).

    Args:
        encoder_channels: channels of CheXEnc's deepest level (``network_def.encoder.out_channels[-1]``).
        temperature: of :class:`~bundle.losses.ContrastiveLoss`.
        weight: of the loss in the iteration's total.
        supervised: images whose findings are all graded and equal are positives of each other.
        lr: learning rate of the projection head's AdamW.
        hidden_channels, out_channels: projection head widths.
    """

    def __init__(
        self, encoder_channels: int, temperature: float = 0.2, weight: float = 1.0, supervised: bool = True,
        lr: float = 1e-3, hidden_channels: int = 512, out_channels: int = 128,
    ) -> None:
        self.head = ProjectionHead(encoder_channels, hidden_channels, out_channels)
        self.optimizer = torch.optim.AdamW(self.head.parameters(), lr=lr, weight_decay=1e-4)
        self.criterion = ContrastiveLoss(temperature)
        self.weight, self.supervised = weight, supervised

    def loss(self, engine: Any, batch: Mapping[str, Any], pred: Mapping[str, Tensor]) -> dict[str, Tensor]:
        if SECOND_VIEW_KEY not in batch:
            raise ValueError(
                f"contrastive pretraining needs two views per image ('{WEAK_KEY}', '{SECOND_VIEW_KEY}'): give the "
                "phase a loader whose transform ends in bundle.data.two_views()"
            )
        first = plain(batch[WEAK_KEY])
        images = torch.cat([first, plain(batch[SECOND_VIEW_KEY])])
        self.head.to(first.device).train()
        with torch.autocast(engine.state.device.type, enabled=engine.amp, **engine.amp_kwargs):
            deepest = unwrap(engine.network).encoder(images)[-1]
        z1, z2 = self.head(deepest.float()).chunk(2)
        groups = None
        if self.supervised and "cls" in batch:
            groups = label_groups(batch["cls"], batch["cls_known"] & batch["has_cls"][:, None])
        value = self.criterion(z1, z2, groups)
        return {"loss": self.weight * value, "contrastive": value}

    def after_step(self, engine: Any, batch: Mapping[str, Any], pred: Mapping[str, Tensor]) -> None:
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)

    def state_dict(self) -> dict[str, Any]:
        return {"head": self.head.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.head.load_state_dict(state["head"])
        self.optimizer.load_state_dict(state["optimizer"])
