"""DCGANGenerator: latent vectors to synthetic chest X-rays, for the generative semi-supervised part
(:class:`bundle.engines.GenerativeSemiSupervisedPart`; DCGAN, Radford et al., ICLR 2016)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.networks.blocks import Convolution
from torch import nn


class DCGANGenerator(nn.Module):
    """DCGAN's generator: a linear projection of ``z`` to a (channels[0], H / 2^n, W / 2^n) map (batch norm, ReLU),
    then ``n = len(channels)`` transposed 4x4 convolutions of stride 2 (batch norm and ReLU between them, no norm on
    the last) and a sigmoid: images in [0, 1], as the readers give them (DCGAN's tanh would give [-1, 1]).

    ``forward(z)``: (B, latent_channels) -> (B, out_channels, H, W) with (H, W) = ``image_size`` (axis 0 is x, as
    every image array of the bundle).

    Args:
        image_size: (H, W) of the images, each divisible by ``2 ** len(channels)``.
        latent_channels: length of ``z`` (DCGAN: 100).
        channels: widths of the projected map and of each upsampling but the last (which gives ``out_channels``).
        out_channels: image channels.

    Raises:
        ValueError: an image side is not divisible by ``2 ** len(channels)``.
    """

    def __init__(
        self, image_size: Sequence[int] = (128, 128), latent_channels: int = 100,
        channels: Sequence[int] = (256, 128, 64, 32), out_channels: int = 1,
    ) -> None:
        super().__init__()
        factor = 2 ** len(channels)
        if len(image_size) != 2 or any(int(s) % factor for s in image_size):
            raise ValueError(
                f"generator image_size {list(image_size)}: each side must be divisible by 2 ** len(channels) = {factor}"
                " (set image_size or fewer generator channels)"
            )
        self.image_size = (int(image_size[0]), int(image_size[1]))
        self.latent_channels = int(latent_channels)
        self.start = (int(channels[0]), self.image_size[0] // factor, self.image_size[1] // factor)
        self.project = nn.Sequential(
            nn.Linear(self.latent_channels, self.start[0] * self.start[1] * self.start[2], bias=False),
            nn.Unflatten(1, self.start), nn.BatchNorm2d(self.start[0]), nn.ReLU(inplace=True),
        )
        widths = [*channels, out_channels]
        self.upsample = nn.Sequential(*[
            Convolution(
                2, widths[i], widths[i + 1], strides=2, kernel_size=4, padding=1, output_padding=0, is_transposed=True,
                act="relu", norm="batch", bias=i == len(channels) - 1, conv_only=i == len(channels) - 1,
            )
            for i in range(len(channels))
        ])

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.upsample(self.project(z)))
