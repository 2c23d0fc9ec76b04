"""The saliency bridge of MultiMix (Haque et al., "Generalized Multi-Task Learning from Substantially Unlabeled
Multi-Source Medical Image Data", arXiv:2010.14731): the classifier's input-gradient saliency, joined with the
image, enters the segmentation decoder at its coarsest stage.

The saliency is ``|d s / d x|`` (Simonyan et al., arXiv:1312.6034) of each image's top class logit ``s`` with
respect to the image ``x``, its maximum over channels, scaled per image to [0, 1]: one backward pass through the
encoder already run for the heads, never a second encoder forward. In training it is computed with
``create_graph``, so the segmentation loss also trains the encoder and classifier through the saliency.

Export: the bridge needs ``torch.autograd.grad`` in ``forward``, which TorchScript and ONNX do not carry, so a
bridged network runs eagerly only and every export refuses it (:func:`refuse_export`); an unbridged network
exports as before. Eager inference and evaluation compute the bridge the same way as training.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from monai.networks.blocks import Convolution
from torch import nn


class BridgeExportError(ValueError):
    """A network with the saliency bridge cannot be exported (TorchScript, ONNX)."""


def input_saliency(logits: torch.Tensor, image: torch.Tensor, create_graph: bool) -> torch.Tensor:
    """(B, 1, W, H) saliency in [0, 1] of ``logits`` (B, C), computed from ``image`` (B, C_in, W, H, requiring grad)."""
    top = logits.max(dim=1).values.sum()
    (grad,) = torch.autograd.grad(top, image, create_graph=create_graph)
    saliency = grad.abs().amax(1, keepdim=True)
    return saliency / (saliency.flatten(1).amax(1)[:, None, None, None] + 1e-8)


class SaliencyBridge(nn.Module):
    """``[image, saliency]`` average-pooled to the deepest encoder level, a 3x3 convolution (+ ReLU) to its channels,
    added to the deepest features that the segmentation decoder starts from.

    ``forward(image, saliency, deepest)``: image (B, C_in, W, H), saliency (B, 1, W, H), deepest (B, C, W/32, H/32)
    -> (B, C, W/32, H/32).
    """

    def __init__(self, in_channels: int, deep_channels: int) -> None:
        super().__init__()
        self.conv = Convolution(2, in_channels + 1, deep_channels, kernel_size=3, act="relu", norm=None)

    def forward(self, image: torch.Tensor, saliency: torch.Tensor, deepest: torch.Tensor) -> torch.Tensor:
        joined = F.adaptive_avg_pool2d(torch.cat([image, saliency.to(image.dtype)], 1), deepest.shape[-2:])
        return deepest + self.conv(joined)


def refuse_export(network: Any, what: str) -> None:
    """Raise :class:`BridgeExportError` for a network built with the saliency bridge."""
    args = getattr(network, "init_args", {})
    if args.get("saliency_bridge"):
        raise BridgeExportError(
            f"{what}: this MultiCheXNet has the saliency bridge (init_args saliency_bridge=True), whose input "
            "gradient (torch.autograd.grad) TorchScript and ONNX cannot export; serve it with the eager backend, "
            "or train without the bridge to export (docs/semi_supervised.md)"
        )
