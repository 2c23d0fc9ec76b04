"""MaskDiscriminator: tells true masks from predicted ones, given the image (APPAU-Net's adversarial critic)."""

from __future__ import annotations

import torch
from monai.networks.blocks import Convolution
from torch import nn


class MaskDiscriminator(nn.Module):
    """Image-conditioned mask critic: image (B, C, H, W) and mask probabilities (B, 1, H, W), concatenated, through
    stride-2 convolutions (LeakyReLU 0.2, instance norm after the first, as DCGAN/pix2pix critics) and global
    average pooling to one "real" logit per image, (B, 1). Any H, W that the strides divide.

    Args:
        in_channels: image channels.
        channels: widths of the stride-2 convolutions.
    """

    def __init__(self, in_channels: int = 1, channels: tuple[int, ...] = (16, 32, 64, 128)) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_channels + 1
        for i, out in enumerate(channels):
            layers.append(
                Convolution(
                    2, width, out, strides=2, kernel_size=4, act=("leakyrelu", {"negative_slope": 0.2}),
                    norm=None if i == 0 else "instance", padding=1,
                )
            )
            width = out
        self.features = nn.Sequential(*layers)
        self.logit = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 1))

    def forward(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return self.logit(self.features(torch.cat([image, mask.to(image.dtype)], dim=1)))
