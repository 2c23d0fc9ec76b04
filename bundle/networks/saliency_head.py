"""SaliencyHead: where a radiologist looks, predicted from the shared encoder's features (Qiu, Rivaz, Xiao,
arXiv:2403.16970)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .heads import CheXSeg


def log_distribution(logits: torch.Tensor) -> torch.Tensor:
    """(B, 1, H, W) logits to float32 log-probabilities over each map's pixels (log-softmax over H x W).

    Float32 whatever the autocast: on CPU ``log_softmax`` keeps a bfloat16 input's dtype, whose 8-bit mantissa
    rounds log-probabilities near log(1 / (H W)) in steps of 0.03-0.06 and so flattens a near-uniform map."""
    return F.log_softmax(logits.float().flatten(1), dim=1).view_as(logits)


class SaliencyHead(nn.Module):
    """A U-Net-style decoder (CheXSeg's, with its skips from every encoder level) to one map at the image's
    resolution, normalised to a probability distribution over the pixels and returned as its logarithm: the
    ``sal`` output of MultiCheXNet. ``exp`` of it sums to 1 per image; the KL divergence to a gaze map
    (:class:`bundle.losses.SaliencyLoss`) trains it.

    Args:
        encoder_channels: channels of the encoder levels, strides 2 ... 32.
        decoder_channels: one width per decoder block, coarse to fine.
        in_channels: image channels.
        output_stride: stride at which the decoder stops, the map upsampled bilinearly (gaze maps are smooth).
        skip_channels: the widest encoder level entering the decoder (wider ones projected).
    """

    def __init__(
        self,
        encoder_channels: tuple[int, ...],
        decoder_channels: tuple[int, ...] = (128, 64, 32, 16, 8),
        in_channels: int = 1,
        output_stride: int = 4,
        skip_channels: int | None = 128,
    ) -> None:
        super().__init__()
        self.decoder = CheXSeg(encoder_channels, decoder_channels, in_channels, 1, output_stride, skip_channels)

    def forward(self, image: torch.Tensor, features: list[torch.Tensor]) -> torch.Tensor:
        """``image`` (B, C, H, W) and the encoder features to (B, 1, H, W) log-probabilities."""
        return log_distribution(self.decoder(image, features))
