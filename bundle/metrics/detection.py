"""COCO-style detection mAP on MONAI's ``monai.apps.detection.metrics`` (matching and precision/recall curves).

COCO (https://cocodataset.org/#detection-eval): for each class and IoU threshold, average precision is the mean
of the interpolated precision at 101 recall points; mAP is the mean over IoU thresholds (0.50:0.95 step 0.05 by
default) and over classes. As in pycocotools, classes without any true box are left out of the mean (MONAI's
``COCOMetric`` would average their ``-1`` placeholder in).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from ignite.metrics import Metric
from monai.apps.detection.metrics.coco import COCOMetric
from monai.apps.detection.metrics.matching import matching_batch
from monai.data.box_utils import box_iou

#: COCO's primary IoU range (start, stop, step).
COCO_IOU_RANGE: tuple[float, float, float] = (0.50, 0.95, 0.05)

Matches = list[dict[int, dict[str, np.ndarray]]]


class CocoAP:
    """Per-image box matching and mAP over present classes, split so that a bootstrap matches images once.

    Args:
        classes: box class names (index = label).
        iou_range: (start, stop, step) of the IoU thresholds; ``(0.5, 0.5, 0.05)`` gives AP at IoU 0.5.
        max_detections: boxes per image considered, highest scores first.
    """

    def __init__(
        self, classes: Sequence[str], iou_range: Sequence[float] = COCO_IOU_RANGE, max_detections: int = 100
    ) -> None:
        start, stop, step = iou_range
        self.classes = list(classes)
        self._settings = {"iou_list": [start], "iou_range": (start, stop, step), "max_detection": [max_detections]}
        self.iou_thresholds = self._metric(self.classes).iou_thresholds
        self.key = f"mAP_IoU_{start:.2f}_{stop:.2f}_{step:.2f}_MaxDet_{max_detections}"
        self.first_key = f"AP_IoU_{start:.2f}_MaxDet_{max_detections}"

    def _metric(self, classes: Sequence[str]) -> COCOMetric:
        return COCOMetric(classes=list(classes), per_class=False, verbose=False, **self._settings)

    def match(
        self,
        pred_boxes: Sequence[np.ndarray],
        pred_labels: Sequence[np.ndarray],
        pred_scores: Sequence[np.ndarray],
        true_boxes: Sequence[np.ndarray],
        true_labels: Sequence[np.ndarray],
    ) -> Matches:
        """Per-image matches of predictions (boxes ``[x1, y1, x2, y2]``) to truth at every IoU threshold."""
        as_boxes = [np.asarray(b, dtype=float).reshape(-1, 4) for b in pred_boxes]
        as_truth = [np.asarray(b, dtype=float).reshape(-1, 4) for b in true_boxes]
        return matching_batch(
            iou_fn=box_iou,
            iou_thresholds=self.iou_thresholds,
            pred_boxes=as_boxes,
            pred_classes=[np.asarray(x, dtype=int).reshape(-1) for x in pred_labels],
            pred_scores=[np.asarray(x, dtype=float).reshape(-1) for x in pred_scores],
            gt_boxes=as_truth,
            gt_classes=[np.asarray(x, dtype=int).reshape(-1) for x in true_labels],
        )

    def score(self, matches: Matches) -> tuple[float, float]:
        """(mAP over the IoU range, AP at its first IoU), both over the classes with at least one true box in
        ``matches``; NaN when no class has one."""
        present = [
            c for c in range(len(self.classes)) if any(c in m and np.any(m[c]["gtIgnore"] == 0) for m in matches)
        ]
        if not present:
            return float("nan"), float("nan")
        index = {c: i for i, c in enumerate(present)}  # only present classes reach COCOMetric, renumbered
        kept = [{index[c]: r for c, r in m.items() if c in index} for m in matches]
        values = self._metric([self.classes[c] for c in present])(kept)[0]
        return float(values[self.key]), float(values[self.first_key])


def coco_map(
    pred_boxes: Sequence[np.ndarray],
    pred_labels: Sequence[np.ndarray],
    pred_scores: Sequence[np.ndarray],
    true_boxes: Sequence[np.ndarray],
    true_labels: Sequence[np.ndarray],
    classes: Sequence[str],
    iou_range: Sequence[float] = COCO_IOU_RANGE,
) -> float:
    """COCO mAP of a dataset given per-image lists; classes with no true box are left out of the mean."""
    ap = CocoAP(classes, iou_range)
    return ap.score(ap.match(pred_boxes, pred_labels, pred_scores, true_boxes, true_labels))[0]


class DetectionMAP(Metric):
    """COCO-style average precision at one IoU threshold (101-point interpolation) of the ``det`` predictions
    against ``boxes``/``box_labels`` over samples with ``has_det``; classes without truth are left out.

    Args:
        classes: box class names.
        iou: IoU threshold of a true positive.
    """

    required_output_keys = ("det", "boxes", "box_labels", "has_det")

    def __init__(
        self, classes: Sequence[str] = ("opacity",), iou: float = 0.5, output_transform: Callable = lambda x: x
    ) -> None:
        self.ap = CocoAP(classes, (iou, iou, 0.05))
        super().__init__(output_transform=output_transform, skip_unrolling=True)

    def reset(self) -> None:
        self._matches: Matches = []

    def update(self, output: tuple) -> None:
        found, boxes, labels, flags = output
        keep = [i for i, carries in enumerate(flags.tolist()) if carries]
        if keep:
            self._matches += self.ap.match(
                [found[i]["boxes"].detach().cpu().numpy() for i in keep],
                [found[i]["labels"].detach().cpu().numpy() for i in keep],
                [found[i]["scores"].detach().cpu().numpy() for i in keep],
                [boxes[i].cpu().numpy() for i in keep],
                [labels[i].cpu().numpy() for i in keep],
            )

    def compute(self) -> float:
        return self.ap.score(self._matches)[0]
