"""CheXCls and CheXSeg: the image-level and pixel-level heads on CheXEnc's features."""

from __future__ import annotations

import torch
from monai.networks.nets.flexible_unet import SegmentationHead, UNetDecoder
from torch import nn


class CheXCls(nn.Module):
    """Multi-label classifier: global average pooling, ``feats`` (transferable) then ``dec`` (one logit a class).

    ``dec`` is the only layer that knows the label set, so transfer learning to a new disease replaces ``dec``
    and keeps ``feats``. Also used, with ``num_classes=1``, as the positive-case (gating) classifier.
    """

    def __init__(self, in_channels: int, num_classes: int = 14, hidden_channels: int = 256, dropout: float = 0.2):
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feats = nn.Sequential(
            nn.Flatten(), nn.Linear(in_channels, hidden_channels), nn.ReLU(inplace=True), nn.Dropout(dropout)
        )
        self.dec = nn.Linear(hidden_channels, num_classes)

    def forward(self, deepest: torch.Tensor) -> torch.Tensor:
        return self.dec(self.feats(self.pool(deepest)))


class CheXSeg(nn.Module):
    """U-Net decoder with skips from all encoder levels, ending in full-resolution 1-channel logits."""

    def __init__(
        self,
        encoder_channels: tuple[int, ...],
        decoder_channels: tuple[int, ...] = (128, 64, 32, 16, 8),
        in_channels: int = 1,
        out_channels: int = 1,
    ) -> None:
        super().__init__()
        if len(decoder_channels) != len(encoder_channels):
            raise ValueError("decoder_channels needs one entry per encoder level")
        self.skip_connect = len(encoder_channels) - 1
        self.decoder = UNetDecoder(
            spatial_dims=2,
            encoder_channels=(in_channels, *encoder_channels),
            decoder_channels=decoder_channels,
            act=("relu", {"inplace": True}),
            norm=("batch", {"eps": 1e-3, "momentum": 0.1}),
            dropout=0.0,
            bias=False,
            upsample="nontrainable",
            pre_conv="default",
            interp_mode="nearest",
            align_corners=None,
            is_pad=True,
        )
        self.head = SegmentationHead(spatial_dims=2, in_channels=decoder_channels[-1], out_channels=out_channels)

    def forward(self, image: torch.Tensor, features: list[torch.Tensor]) -> torch.Tensor:
        return self.head(self.decoder([image] + features, self.skip_connect))
