"""Grad-CAM (Selvaraju et al., ICCV 2017) for CheXCls's findings, on the shared encoder's deepest level, and the
pieces every explanation shares (the findings' logits with their graph, maps as distributions)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from bundle.networks import MultiCheXNet


def grad_cam(network: MultiCheXNet, image: torch.Tensor, classes: Sequence[int] | None = None) -> torch.Tensor:
    """(B, K, H, W) Grad-CAM maps of the findings ``classes`` (None: all), each a distribution over the pixels
    (:func:`grad_cam_pass`)."""
    return grad_cam_pass(network, image, classes)[1]


def grad_cam_pass(
    network: MultiCheXNet, image: torch.Tensor, classes: Sequence[int] | None = None
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The encoder features (detached, for the heads) and the (B, K, H, W) Grad-CAM maps of the findings
    ``classes`` (None: all), each map a distribution over the pixels.

    One encoder pass; for each finding the gradient of its logit with respect to the deepest encoder level,
    averaged over the level's positions, weights that level's channels; the ReLU of the weighted sum is upsampled
    bilinearly to the image size and normalised to sum 1 (a map with no positive evidence stays all zero). The
    network runs in eval mode (batch-norm statistics untouched) and is left in the mode it had.

    Raises:
        ValueError: the network has the saliency bridge (explain it with its input gradient instead,
            :func:`bundle.explain.input_gradient`).
    """
    if network.bridge is not None:
        raise ValueError("grad_cam: a network with the saliency bridge is explained by its input-gradient saliency")
    was_training = network.training
    network.eval()
    try:
        with torch.enable_grad():
            features, logits = finding_logits(network, image)
            deepest = features[-1]
            weighted = []
            for k in range(logits.shape[1]) if classes is None else classes:
                (grad,) = torch.autograd.grad(logits[:, k].sum(), deepest, retain_graph=True)
                weighted.append(F.relu((grad.mean(dim=(2, 3), keepdim=True) * deepest).sum(dim=1, keepdim=True)))
    finally:
        network.train(was_training)
    cams = F.interpolate(torch.cat(weighted, dim=1).detach(), size=image.shape[2:], mode="bilinear", align_corners=False)
    return [f.detach() for f in features], distributions(cams.clamp_min(0))


def finding_logits(network: MultiCheXNet, image: torch.Tensor) -> tuple[list[torch.Tensor], torch.Tensor]:
    """The encoder features of ``image`` and CheXCls's (or FusionCls's) finding logits on them, with the graph kept
    for gradients (call under ``torch.enable_grad``)."""
    features = network.encoder(image)
    sal = network.sal_head(image, features) if network.fused and network.sal_head is not None else None
    return features, network._cls(features, sal)


def distributions(maps: torch.Tensor) -> torch.Tensor:
    """Non-negative (B, K, H, W) maps, each normalised to sum 1 (an all-zero map stays zero)."""
    total = maps.sum(dim=(2, 3), keepdim=True)
    return torch.where(total > 0, maps / total.clamp_min(1e-12), torch.zeros_like(maps))


def mass_inside(values: np.ndarray, region: np.ndarray) -> float:
    """The fraction of a non-negative map's mass inside the boolean ``region`` of the same shape (NaN for an
    all-zero map): 1 when the explanation lies wholly in the region, the region's area fraction for a uniform
    map."""
    values, region = np.asarray(values, dtype=float), np.asarray(region, dtype=bool)
    if values.shape != region.shape:
        raise ValueError(f"map of shape {values.shape} and region of shape {region.shape} differ")
    total = values.sum()
    return float(values[region].sum() / total) if total > 0 else float("nan")
