"""CheXDetector: anchors, ATSS matching, hard-negative sampling, focal loss, box decoding and NMS.

It is MONAI's :class:`RetinaNetDetector` without a network of its own: MultiCheXNet runs the encoder once
for every head, so the detector works on CheXDet's flattened outputs (``det_cls``, ``det_box``) instead of
calling a backbone itself.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from monai.apps.detection.networks.retinanet_detector import RetinaNetDetector
from monai.apps.detection.utils.anchor_utils import AnchorGeneratorWithAnchorShape
from monai.losses import FocalLoss
from torch import Tensor

from .compat import ensure_detector_without_torchvision

ensure_detector_without_torchvision()


class CheXDetector(RetinaNetDetector):
    """Training targets, losses and box selection for CheXDet's outputs.

    Args:
        base_anchor_shapes: anchor (width, height) pairs at the finest pyramid level, in pixels.
        feature_map_scales: anchor scale of each pyramid level relative to the finest.
        strides: stride of each pyramid level in pixels (8, 16, 32 for encoder levels 2, 3, 4).
        num_classes: box classes.
        atss_candidates: anchors per level considered by the ATSS matcher.
        batch_size_per_image, positive_fraction, min_neg, pool_size: hard-negative sampler settings.
        focal_gamma, focal_alpha: focal loss settings (Lin et al., ICCV 2017).
        score_thresh, topk_candidates_per_level, nms_thresh, detections_per_img: box selection at inference.
    """

    def __init__(
        self,
        base_anchor_shapes: Sequence[Sequence[int]] = ((12, 12), (20, 20), (12, 20)),
        feature_map_scales: Sequence[int] = (1, 2, 4),
        strides: Sequence[int] = (8, 16, 32),
        num_classes: int = 1,
        atss_candidates: int = 4,
        batch_size_per_image: int = 64,
        positive_fraction: float = 0.3,
        min_neg: int = 16,
        pool_size: float = 20,
        focal_gamma: float = 2.0,
        focal_alpha: float | None = 0.25,
        score_thresh: float = 0.05,
        topk_candidates_per_level: int = 1000,
        nms_thresh: float = 0.3,
        detections_per_img: int = 20,
    ) -> None:
        if len(strides) != len(feature_map_scales):
            raise ValueError("strides and feature_map_scales need one entry per pyramid level")
        #: The constructor arguments, so that a model file can rebuild the detector (:mod:`bundle.packaging`).
        self.init_args: dict[str, object] = {
            "base_anchor_shapes": [list(s) for s in base_anchor_shapes], "feature_map_scales": list(feature_map_scales),
            "strides": list(strides), "num_classes": num_classes, "atss_candidates": atss_candidates,
            "batch_size_per_image": batch_size_per_image, "positive_fraction": positive_fraction, "min_neg": min_neg,
            "pool_size": pool_size, "focal_gamma": focal_gamma, "focal_alpha": focal_alpha,
            "score_thresh": score_thresh, "topk_candidates_per_level": topk_candidates_per_level,
            "nms_thresh": nms_thresh, "detections_per_img": detections_per_img,
        }
        anchor_generator = AnchorGeneratorWithAnchorShape(
            feature_map_scales=tuple(feature_map_scales), base_anchor_shapes=tuple(map(tuple, base_anchor_shapes))
        )
        super().__init__(network=None, anchor_generator=anchor_generator, spatial_dims=2, num_classes=num_classes)
        self.strides = tuple(strides)
        self.set_atss_matcher(num_candidates=atss_candidates, center_in_gt=False)
        self.set_hard_negative_sampler(batch_size_per_image, positive_fraction, min_neg, pool_size)
        self.set_cls_loss(FocalLoss(gamma=focal_gamma, alpha=focal_alpha, reduction="mean", use_softmax=False))
        self.set_box_selector_parameters(
            score_thresh=score_thresh,
            topk_candidates_per_level=topk_candidates_per_level,
            nms_thresh=nms_thresh,
            detections_per_img=detections_per_img,
        )

    @property
    def num_anchors(self) -> int:
        """Anchors per location, the ``num_anchors`` CheXDet must be built with."""
        return int(self.num_anchors_per_loc)

    def _anchors(self, image_size: Sequence[int], batch: int, device: torch.device) -> tuple[list[Tensor], list[int]]:
        """Anchors of each image and anchor locations per level, from the image size alone."""
        shapes = [[s // stride for s in image_size] for stride in self.strides]
        probe = torch.empty((batch, 0, *image_size), device=device)
        maps = [torch.empty((batch, 0, *shape), device=device) for shape in shapes]
        self.generate_anchors(probe, {self.cls_key: maps})
        return self.anchors, [int(s[0] * s[1]) for s in shapes]  # type: ignore[return-value]

    def loss(
        self, det_cls: Tensor, det_box: Tensor, targets: list[dict[str, Tensor]], image_size: Sequence[int]
    ) -> dict[str, Tensor]:
        """Focal classification and box regression losses; ``targets`` holds ``boxes`` (N, 4 xyxy) and
        ``labels`` (N,) per image, an image without boxes being a negative."""
        anchors, locs = self._anchors(image_size, det_cls.shape[0], det_cls.device)
        head = {self.cls_key: det_cls, self.box_reg_key: det_box}
        losses = self.compute_loss(head, targets, anchors, locs)
        return {"det_cls": losses[self.cls_key], "det_box": losses[self.box_reg_key].to(det_cls.device)}

    @torch.no_grad()
    def predict(self, det_cls: Tensor, det_box: Tensor, image_size: Sequence[int]) -> list[dict[str, Tensor]]:
        """Decoded, score-thresholded, NMS-filtered ``boxes``, ``scores`` and ``labels`` per image."""
        anchors, locs = self._anchors(image_size, det_cls.shape[0], det_cls.device)
        head = {self.cls_key: det_cls, self.box_reg_key: det_box}
        sizes = [list(image_size)] * det_cls.shape[0]
        found = self.postprocess_detections(head, anchors, sizes, locs)
        return [{"boxes": d["boxes"], "scores": d["labels_scores"], "labels": d["labels"]} for d in found]
