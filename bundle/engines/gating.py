"""Positive-case gating for the engines: the seg/det heads run only on images their gate calls positive."""

from __future__ import annotations

from torch import Tensor, nn

from bundle.networks import MultiCheXNet

from .distributed import unwrap


def gated_forward(net: nn.Module, image: Tensor, det_threshold: float = 0.5, seg_threshold: float = 0.5) -> dict[str, Tensor]:
    """:meth:`MultiCheXNet.forward_gated` of ``net``, unwrapped from a data-parallel wrapper when there is one."""
    model: MultiCheXNet = unwrap(net)
    return model.forward_gated(image, det_threshold, seg_threshold)
