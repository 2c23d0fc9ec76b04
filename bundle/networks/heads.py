"""CheXCls (and its multi-scale fusion option) and CheXSeg: the image-level and pixel-level heads on CheXEnc's
features."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from monai.networks.nets.flexible_unet import SegmentationHead, UNetDecoder
from torch import nn


def init_prior(layer: nn.Linear | nn.Conv2d, prior: float | None) -> None:
    """Start ``layer``'s outputs at probability ``prior`` after a sigmoid: its bias set to logit(``prior``), as
    RetinaNet initialises its classification subnet (Lin et al., arXiv:1708.02002, section 4.1), so that the first
    steps of training learn the findings (or the mask pixels) rather than their rarity. None leaves PyTorch's
    initialisation."""
    if prior is None:
        return
    if not 0.0 < prior < 1.0:
        raise ValueError(f"a prior probability must be in (0, 1), got {prior}")
    nn.init.constant_(layer.bias, math.log(prior / (1.0 - prior)))


class CheXCls(nn.Module):
    """Multi-label classifier: global average pooling, ``feats`` (transferable) then ``dec`` (one logit a class).

    ``dec`` is the only layer that knows the label set, so transfer learning to a new disease replaces ``dec``
    and keeps ``feats``. Also used, with ``num_classes=1``, as the positive-case (gating) classifier.
    ``prior``: the probability every output starts at (:func:`init_prior`); None: PyTorch's initialisation.
    """

    def __init__(
        self, in_channels: int, num_classes: int = 14, hidden_channels: int = 256, dropout: float = 0.2,
        prior: float | None = None,
    ) -> None:
        super().__init__()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.feats = nn.Sequential(
            nn.Flatten(), nn.Linear(in_channels, hidden_channels), nn.ReLU(inplace=True), nn.Dropout(dropout)
        )
        self.dec = nn.Linear(hidden_channels, num_classes)
        init_prior(self.dec, prior)

    def forward(self, deepest: torch.Tensor) -> torch.Tensor:
        return self.dec(self.feats(self.pool(deepest)))


class FusionCls(nn.Module):
    """Multi-scale feature-fusion classifier (the gaze model's, Qiu et al., arXiv:2403.16970): every chosen encoder
    level global-average pooled and, given a saliency map, the deepest level pooled under it (a saliency-weighted
    mean), all concatenated before ``feats`` and ``dec``, which keep CheXCls's roles (``dec`` alone knows the
    label set).

    Args:
        level_channels: channels of the fused encoder levels, coarsest last.
        num_classes: outputs of ``dec``.
        hidden_channels: width of ``feats``.
        dropout: dropout after ``feats``.
        saliency: whether a saliency map joins (the network has a saliency head).
        prior: the probability every output starts at (:func:`init_prior`); None: PyTorch's initialisation.
    """

    def __init__(
        self, level_channels: tuple[int, ...], num_classes: int = 14, hidden_channels: int = 256,
        dropout: float = 0.2, saliency: bool = False, prior: float | None = None,
    ) -> None:
        super().__init__()
        fused = sum(level_channels) + (level_channels[-1] if saliency else 0)
        self.feats = nn.Sequential(nn.Linear(fused, hidden_channels), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.dec = nn.Linear(hidden_channels, num_classes)
        init_prior(self.dec, prior)

    def forward(self, levels: list[torch.Tensor], log_saliency: torch.Tensor | None = None) -> torch.Tensor:
        """``levels`` (B, C_i, H_i, W_i) and optionally the (B, 1, H, W) saliency log-probabilities to logits."""
        pooled = [level.mean(dim=(2, 3)) for level in levels]
        if log_saliency is not None:
            deepest = levels[-1]
            weights = F.adaptive_avg_pool2d(log_saliency.exp(), deepest.shape[2:])
            weights = weights / weights.sum(dim=(2, 3), keepdim=True).clamp_min(1e-12)
            pooled.append((deepest * weights).sum(dim=(2, 3)))
        return self.dec(self.feats(torch.cat(pooled, dim=1)))


class CheXSeg(nn.Module):
    """U-Net decoder with skips from the encoder levels, ending in 1-channel logits at the image's resolution.

    With ``output_stride`` s > 1 the decoder stops at stride s (its blocks and skips finer than s are left out)
    and its logits are upsampled bilinearly by s: the finest blocks, thin but on the largest maps, cost most of
    the decoder's time (``docs/results/speed.md``). With ``skip_channels`` c, every encoder level wider than c
    enters the decoder through a 1x1 convolution (batch norm, ReLU) to c channels, so that the coarse blocks do
    not convolve DenseNet's 1024-channel maps.

    Args:
        encoder_channels: channels of the encoder's feature maps, strides 2 ... 32.
        decoder_channels: one width per decoder block, coarse to fine; the first ``len(encoder_channels) -
            log2(output_stride)`` are used.
        in_channels: image channels.
        out_channels: mask channels.
        output_stride: 1, 2 or 4.
        skip_channels: the widest encoder level entering the decoder (None: all at the encoder's width).
        prior: the probability every mask pixel starts at (:func:`init_prior` on the output convolution); None:
            PyTorch's initialisation.
    """

    def __init__(
        self,
        encoder_channels: tuple[int, ...],
        decoder_channels: tuple[int, ...] = (128, 64, 32, 16, 8),
        in_channels: int = 1,
        out_channels: int = 1,
        output_stride: int = 1,
        skip_channels: int | None = None,
        prior: float | None = None,
    ) -> None:
        super().__init__()
        if len(decoder_channels) != len(encoder_channels):
            raise ValueError("decoder_channels needs one entry per encoder level")
        if output_stride not in (1, 2, 4):
            raise ValueError(f"output_stride must be 1, 2 or 4, got {output_stride}")
        self.output_stride = output_stride
        self.dropped = {1: 0, 2: 1, 4: 2}[output_stride]  # finest levels left out (the image counts as one)
        # with output_stride > 1 the finest level kept only stands for the decoder's output scale: never read
        used = tuple(encoder_channels)[max(self.dropped - 1, 0) :]
        projected = [skip_channels is not None and c > skip_channels and (i > 0 or self.dropped == 0)
                     for i, c in enumerate(used)]
        self.lateral = nn.ModuleList(
            Convolution(2, c, skip_channels, kernel_size=1, act=("relu", {"inplace": True}), norm="batch", bias=False)
            if project else nn.Identity()
            for c, project in zip(used, projected)
        )
        used = tuple(skip_channels if project else c for c, project in zip(used, projected))
        levels = ((in_channels,) if self.dropped == 0 else ()) + used
        decoder_channels = tuple(decoder_channels)[: len(levels) - 1]
        self.skip_connect = len(levels) - 2
        self.decoder = UNetDecoder(
            spatial_dims=2,
            encoder_channels=levels,
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
        init_prior(self.head[0], prior)

    def forward(self, image: torch.Tensor, features: list[torch.Tensor]) -> torch.Tensor:
        """``image`` (B, C, H, W) and the encoder's features to mask logits (B, out_channels, H, W)."""
        levels: list[torch.Tensor] = [image] if self.dropped == 0 else []
        first = max(self.dropped - 1, 0)
        for i, lateral in enumerate(self.lateral):
            levels.append(lateral(features[first + i]))
        logits = self.head(self.decoder(levels, self.skip_connect))
        if self.output_stride == 1:
            return logits
        return F.interpolate(logits, size=image.shape[2:], mode="bilinear", align_corners=False)
