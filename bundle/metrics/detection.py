"""Detection metrics."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from ignite.metrics import Metric
from monai.apps.detection.metrics.coco import COCOMetric
from monai.apps.detection.metrics.matching import matching_batch
from monai.data.box_utils import box_iou


class DetectionMAP(Metric):
    """COCO-style mean average precision at one IoU threshold (101-point interpolation, MONAI's COCOMetric)
    of the ``det`` predictions against ``boxes``/``box_labels`` over samples with ``has_det``.

    Args:
        classes: box class names.
        iou: IoU threshold of a true positive.
    """

    def __init__(
        self, classes: Sequence[str] = ("opacity",), iou: float = 0.5, output_transform: Callable = lambda x: x
    ) -> None:
        self.coco = COCOMetric(classes=list(classes), iou_list=[iou], iou_range=(iou, iou, 0.05), max_detection=[100])
        self.key = f"mAP_IoU_{iou:.2f}_{iou:.2f}_0.05_MaxDet_100"
        super().__init__(output_transform=output_transform, skip_unrolling=True)

    def reset(self) -> None:
        self._pred: dict[str, list[np.ndarray]] = {"boxes": [], "labels": [], "scores": []}
        self._truth: dict[str, list[np.ndarray]] = {"boxes": [], "labels": []}

    required_output_keys = ("det", "boxes", "box_labels", "has_det")

    def update(self, output: tuple) -> None:
        found, boxes, labels, flags = output
        for i, carries in enumerate(flags.tolist()):
            if not carries:
                continue
            for key in self._pred:
                self._pred[key].append(found[i][key].detach().cpu().numpy())
            self._truth["boxes"].append(boxes[i].cpu().numpy().reshape(-1, 4))
            self._truth["labels"].append(labels[i].cpu().numpy())

    def compute(self) -> float:
        if not self._truth["boxes"] or not any(len(b) for b in self._truth["boxes"]):
            return float("nan")
        matches = matching_batch(
            iou_fn=box_iou,
            iou_thresholds=self.coco.iou_thresholds,
            pred_boxes=self._pred["boxes"],
            pred_classes=self._pred["labels"],
            pred_scores=self._pred["scores"],
            gt_boxes=self._truth["boxes"],
            gt_classes=self._truth["labels"],
        )
        return float(self.coco(matches)[0][self.key])
