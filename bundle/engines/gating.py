"""Positive-case gating: the seg/det heads run only on images their gate classifier calls positive."""

from __future__ import annotations

import torch
from torch import Tensor

from bundle.networks import MultiCheXNet

#: Logit given to the outputs of gated-out images: sigmoid(-30) ~ 1e-13, an empty mask and no boxes.
NEGATIVE_LOGIT: float = -30.0


def _scatter(part: Tensor | None, keep: Tensor, shape: tuple[int, ...], fill: float, like: Tensor) -> Tensor:
    """A (B, ...) tensor of ``fill`` with the rows of ``keep`` taken from ``part``."""
    full = torch.full(shape, fill, dtype=like.dtype, device=like.device)
    if part is not None:
        full[keep] = part.to(like.dtype)
    return full


def gated_forward(
    net: MultiCheXNet, image: Tensor, det_threshold: float = 0.5, seg_threshold: float = 0.5
) -> dict[str, Tensor]:
    """All outputs of ``net`` from one encoder pass, the detection and segmentation heads run only on the images
    whose gate probability reaches its threshold; the others get :data:`NEGATIVE_LOGIT` logits (an empty mask,
    no boxes) and zero box regressions. Also returns ``det_gated_in`` and ``seg_gated_in`` (B,) booleans.
    """
    features = net.encoder(image)
    out = net.forward_heads(image, features, ["cls", "det_gate", "seg_gate"])
    det_in = torch.sigmoid(out["det_gate"][:, 0]) >= det_threshold
    seg_in = torch.sigmoid(out["seg_gate"][:, 0]) >= seg_threshold
    batch = image.shape[0]
    seg_part = net.forward_heads(image[seg_in], [f[seg_in] for f in features], ["seg"]) if seg_in.any() else None
    det_part = net.forward_heads(image[det_in], [f[det_in] for f in features], ["det"]) if det_in.any() else None
    head = net.det_head
    num_anchors = sum(features[i].shape[-2] * features[i].shape[-1] for i in head.levels) * head.num_anchors
    out["seg"] = _scatter(seg_part and seg_part["seg"], seg_in, (batch, 1, *image.shape[2:]), NEGATIVE_LOGIT, image)
    out["det_cls"] = _scatter(
        det_part and det_part["det_cls"], det_in, (batch, num_anchors, head.num_classes), NEGATIVE_LOGIT, image
    )
    out["det_box"] = _scatter(det_part and det_part["det_box"], det_in, (batch, num_anchors, 4), 0.0, image)
    out["det_gated_in"], out["seg_gated_in"] = det_in, seg_in
    return out
