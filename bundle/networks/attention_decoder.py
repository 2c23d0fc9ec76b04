"""Attention pyramid decoder: CheXSeg's APPAU-Net option (Imran & Terzopoulos, arXiv:1908.03693).

The decoder of the paper's Adversarial Pyramid Progressive Attention U-Net, on CheXEnc's features: attention
gates on the skip connections (Oktay et al., "Attention U-Net", MIDL 2018), an input image pyramid (the image
average-pooled to each decoder scale and concatenated there; CheXEnc's trunks are MONAI's and take the image
at their input only, so the pyramid joins the decoder, not the encoder) and deep supervision (one mask output
per decoder scale in training, summed with weights by :class:`bundle.losses.MultiTaskLoss`). The adversarial
part is :class:`bundle.engines.AdversarialMaskPart`.
"""

from __future__ import annotations

from typing import List

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.nets.attentionunet import AttentionBlock
from torch import nn

def deep_supervision_key(scale: int) -> str:
    """Output key of the deep-supervision mask ``scale`` levels coarser than the full-resolution ``seg``:
    ``seg_ds1`` (stride 2) to ``seg_ds4`` (stride 16), given in training only."""
    return f"seg_ds{scale}"


class AttentionGate(AttentionBlock):
    """Additive attention gate (Oktay et al. 2018): the skip ``x`` (B, f_l, H, W) scaled per pixel by
    ``sigmoid(psi(relu(W_g g + W_x x)))`` from the gating signal ``g`` (B, f_g, H, W); MONAI's AttentionBlock."""

    def coefficients(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The attention coefficients, (B, 1, H, W) in [0, 1]."""
        return self.psi(self.relu(self.W_g(g) + self.W_x(x)))

    def forward(self, g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x * self.coefficients(g, x)


def _convs(in_channels: int, out_channels: int) -> nn.Sequential:
    """Two 3x3 convolution - batch norm - ReLU blocks."""
    norm = ("batch", {"eps": 1e-3, "momentum": 0.1})
    return nn.Sequential(
        Convolution(2, in_channels, out_channels, kernel_size=3, act="relu", norm=norm, bias=False),
        Convolution(2, out_channels, out_channels, kernel_size=3, act="relu", norm=norm, bias=False),
    )


class _PyramidStage(nn.Module):
    """One decoder scale: upsample x2, gate the encoder skip with the upsampled signal, concatenate the signal,
    the gated skip and the image at this scale, two convolutions; ``side`` gives this scale's mask logits."""

    def __init__(self, in_channels: int, skip_channels: int, image_channels: int, out_channels: int) -> None:
        super().__init__()
        self.gate = AttentionGate(2, f_int=max(skip_channels // 2, 1), f_g=in_channels, f_l=skip_channels)
        self.convs = _convs(in_channels + skip_channels + image_channels, out_channels)
        self.side = nn.Conv2d(out_channels, 1, kernel_size=1)

    def forward(self, x: torch.Tensor, skip: torch.Tensor, image: torch.Tensor) -> torch.Tensor:
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return self.convs(torch.cat([x, self.gate(x, skip), image], dim=1))


class AttentionPyramidDecoder(nn.Module):
    """Attention-gated, image-pyramid, deep-supervised U-Net decoder on CheXEnc's five feature maps.

    ``forward(image, features)``: image (B, C, H, W) and the feature maps at strides 2..32 to full-resolution
    mask logits (B, 1, H, W). ``forward_deep``: a list of that and the deep-supervision logits of the decoder
    scales at strides 2, 4, 8, 16, each upsampled (bilinear) to (B, 1, H, W); ``forward_deep(...)[k]`` is the
    output :func:`deep_supervision_key` ``(k)`` names.

    Args:
        encoder_channels: channels of the feature maps, fine to coarse.
        decoder_channels: channels of the decoder scales, coarse to fine (strides 16, 8, 4, 2, 1).
        in_channels: image channels.
    """

    def __init__(
        self,
        encoder_channels: tuple[int, ...],
        decoder_channels: tuple[int, ...] = (128, 64, 32, 16, 8),
        in_channels: int = 1,
    ) -> None:
        super().__init__()
        if len(decoder_channels) != len(encoder_channels):
            raise ValueError("decoder_channels needs one entry per encoder level")
        skips = encoder_channels[-2::-1]  # strides 16, 8, 4, 2
        inputs = (encoder_channels[-1], *decoder_channels[:-2])
        self.stages = nn.ModuleList(
            [_PyramidStage(i, s, in_channels, o) for i, s, o in zip(inputs, skips, decoder_channels[:-1])]
        )
        self.final = _convs(decoder_channels[-2] + in_channels, decoder_channels[-1])
        self.head = nn.Conv2d(decoder_channels[-1], 1, kernel_size=3, padding=1)

    def forward(self, image: torch.Tensor, features: List[torch.Tensor]) -> torch.Tensor:
        return self._decode(image, features, False)[0]

    @torch.jit.export
    def forward_deep(self, image: torch.Tensor, features: List[torch.Tensor]) -> List[torch.Tensor]:
        """Full-resolution logits, then the deep-supervision logits from the finest scale (stride 2) up."""
        return self._decode(image, features, True)

    def _decode(self, image: torch.Tensor, features: List[torch.Tensor], deep: bool) -> List[torch.Tensor]:
        pyramid: List[torch.Tensor] = [image]
        for _ in range(len(self.stages)):
            pyramid.append(F.avg_pool2d(pyramid[-1], 2))
        x = features[-1]
        sides: List[torch.Tensor] = []
        for i, stage in enumerate(self.stages):
            level = len(self.stages) - i  # the stride of this scale is 2 ** level
            x = stage(x, features[level - 1], pyramid[level])
            if deep:
                side = F.interpolate(stage.side(x), size=image.shape[-2:], mode="bilinear", align_corners=False)
                sides.insert(0, side)
        x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        return [self.head(self.final(torch.cat([x, image], dim=1)))] + sides
