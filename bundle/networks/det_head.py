"""CheXDet: RetinaNet-style head (FPN, classification and box-regression subnets) on CheXEnc's features.

Only the network lives here; anchors, matching, losses and box selection are in :mod:`bundle.detection`,
as ``monai.apps.detection`` keeps network and detector apart.
"""

from __future__ import annotations

from collections import OrderedDict

import torch
from monai.apps.detection.networks.retinanet_network import RetinaNetClassificationHead, RetinaNetRegressionHead
from monai.networks.blocks.feature_pyramid_network import FeaturePyramidNetwork
from torch import nn


class CheXDet(nn.Module):
    """FPN over the encoder levels ``levels`` and RetinaNet subnets shared across pyramid levels.

    Returns anchor-major flattened maps, the layout MONAI's detector uses:
    ``cls_logits`` (B, sum(H*W*A), num_classes) and ``box_regression`` (B, sum(H*W*A), 4).

    Args:
        encoder_channels: channels of all encoder levels.
        num_anchors: anchors per location (from the detector's anchor generator).
        num_classes: box classes (1: pneumonia opacity).
        levels: encoder levels fed to the FPN (2, 3, 4 = strides 8, 16, 32).
        fpn_channels: channels of the pyramid and the subnets.
        subnet_depth: 3x3 conv blocks (conv, group norm, ReLU) in each subnet before its output conv, 1-4
            (RetinaNet's is 4; chest X-ray boxes are few and large, and each block is a third of the detector's
            cost, ``docs/results/speed.md``).
    """

    def __init__(
        self,
        encoder_channels: tuple[int, ...],
        num_anchors: int,
        num_classes: int = 1,
        levels: tuple[int, ...] = (2, 3, 4),
        fpn_channels: int = 64,
        subnet_depth: int = 4,
    ) -> None:
        super().__init__()
        if not 1 <= subnet_depth <= 4:
            raise ValueError(f"subnet_depth must be 1-4, got {subnet_depth}")
        self.levels = list(levels)
        self.num_anchors = num_anchors
        self.num_classes = num_classes
        self.fpn = FeaturePyramidNetwork(
            spatial_dims=2, in_channels_list=[encoder_channels[i] for i in levels], out_channels=fpn_channels
        )
        self.cls_subnet = RetinaNetClassificationHead(fpn_channels, num_anchors, num_classes, spatial_dims=2)
        self.box_subnet = RetinaNetRegressionHead(fpn_channels, num_anchors, spatial_dims=2)
        for subnet in (self.cls_subnet, self.box_subnet):  # MONAI's subnets have 4 blocks of 3 layers
            subnet.conv = subnet.conv[: 3 * subnet_depth]

    def _flatten(self, maps: list[torch.Tensor], channels: int) -> torch.Tensor:
        flat: list[torch.Tensor] = []
        for m in maps:
            b, _, h, w = m.shape
            anchors = m.view(b, self.num_anchors, channels, h, w).permute(0, 3, 4, 1, 2)
            flat.append(anchors.reshape(b, h * w * self.num_anchors, channels))  # no -1: b may be 0 (gated out)
        return torch.cat(flat, dim=1)

    def forward(self, features: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        inputs: dict[str, torch.Tensor] = OrderedDict()
        for i in self.levels:
            inputs[str(i)] = features[i]
        pyramid = list(self.fpn(inputs).values())
        cls_logits = self._flatten(self.cls_subnet(pyramid), self.num_classes)
        box_regression = self._flatten(self.box_subnet(pyramid), 4)
        return cls_logits, box_regression
