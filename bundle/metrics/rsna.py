"""The RSNA Pneumonia Detection Challenge metric.

Definition (https://www.kaggle.com/c/rsna-pneumonia-detection-challenge/overview/evaluation): for each image
and each IoU threshold t in 0.40, 0.45, ..., 0.75, the predicted boxes, in decreasing order of confidence, are
matched greedily to the true boxes; a prediction is a hit (TP) when its IoU with a still unmatched true box is
greater than t. Unmatched predictions are FP, unmatched true boxes FN, and the image scores
TP / (TP + FP + FN) at t. The image's score is the mean over thresholds and the dataset's score the mean over
images. An image with no true box and no prediction is left out; one with no true box but predictions scores 0.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from ignite.metrics import Metric

#: The challenge's IoU thresholds 0.40 to 0.75, step 0.05.
RSNA_IOU_THRESHOLDS: tuple[float, ...] = tuple(round(0.40 + 0.05 * i, 2) for i in range(8))


def box_iou_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU (len(a), len(b)) of boxes ``[x1, y1, x2, y2]`` in continuous coordinates (area = width * height)."""
    a, b = np.asarray(a, dtype=float).reshape(-1, 4), np.asarray(b, dtype=float).reshape(-1, 4)
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(hi - lo, 0, None).prod(-1)
    area_a = (a[:, 2:] - a[:, :2]).prod(-1)
    area_b = (b[:, 2:] - b[:, :2]).prod(-1)
    union = area_a[:, None] + area_b[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def rsna_image_score(
    pred_boxes: np.ndarray,
    pred_scores: np.ndarray,
    true_boxes: np.ndarray,
    thresholds: Sequence[float] = RSNA_IOU_THRESHOLDS,
) -> float:
    """One image's RSNA score; NaN (left out of the mean) when it has neither true nor predicted boxes."""
    pred_boxes = np.asarray(pred_boxes, dtype=float).reshape(-1, 4)
    true_boxes = np.asarray(true_boxes, dtype=float).reshape(-1, 4)
    if len(pred_boxes) == 0 and len(true_boxes) == 0:
        return float("nan")
    order = np.argsort(-np.asarray(pred_scores, dtype=float), kind="stable")
    iou = box_iou_matrix(pred_boxes[order], true_boxes)
    per_threshold = []
    for t in thresholds:
        unmatched = np.ones(len(true_boxes), dtype=bool)
        tp = 0
        for row in iou:
            candidates = np.where(unmatched, row, -1.0)
            best = int(np.argmax(candidates)) if len(candidates) else -1
            if best >= 0 and candidates[best] > t:
                unmatched[best] = False
                tp += 1
        fp, fn = len(pred_boxes) - tp, len(true_boxes) - tp
        per_threshold.append(tp / (tp + fp + fn))
    return float(np.mean(per_threshold))


def rsna_map(
    pred_boxes: Sequence[np.ndarray],
    pred_scores: Sequence[np.ndarray],
    true_boxes: Sequence[np.ndarray],
    thresholds: Sequence[float] = RSNA_IOU_THRESHOLDS,
) -> float:
    """The RSNA challenge score of a dataset (lists with one entry per image); NaN when every image is left out."""
    return mean_over_scored_images(
        [rsna_image_score(p, s, t, thresholds) for p, s, t in zip(pred_boxes, pred_scores, true_boxes)]
    )


#: Box-score thresholds tried by :func:`choose_box_score`: keep every box, then 0.05 to 0.95.
BOX_SCORE_CANDIDATES: tuple[float, ...] = (0.0, *(round(0.05 * i, 2) for i in range(1, 20)))


def above_score(boxes: np.ndarray, scores: np.ndarray, min_score: float) -> tuple[np.ndarray, np.ndarray]:
    """The boxes (and their scores) whose score reaches ``min_score``."""
    boxes, scores = np.asarray(boxes, dtype=float).reshape(-1, 4), np.asarray(scores, dtype=float)
    keep = scores >= min_score
    return boxes[keep], scores[keep]


def choose_box_score(
    pred_boxes: Sequence[np.ndarray],
    pred_scores: Sequence[np.ndarray],
    true_boxes: Sequence[np.ndarray],
    candidates: Sequence[float] = BOX_SCORE_CANDIDATES,
) -> float:
    """The box-score threshold with the highest RSNA score on these (validation) images; the RSNA metric counts
    every submitted box, so a detector's low-score boxes must be cut before scoring (ties: the lowest)."""
    best, best_score = float(candidates[0]), -1.0
    for candidate in candidates:
        kept = [above_score(b, s, candidate) for b, s in zip(pred_boxes, pred_scores)]
        score = rsna_map([k[0] for k in kept], [k[1] for k in kept], true_boxes)
        if np.isfinite(score) and score > best_score:
            best, best_score = float(candidate), score
    return best


def mean_over_scored_images(scores: Sequence[float] | np.ndarray) -> float:
    """Mean of per-image RSNA scores without the left-out (NaN) images; NaN when all are left out."""
    scores = np.asarray(scores, dtype=float)
    return float(np.nanmean(scores)) if np.isfinite(scores).any() else float("nan")


class RSNAMap(Metric):
    """RSNA challenge score of the ``det`` predictions against ``boxes`` over samples with ``has_det``
    (all box classes together, as in the one-class challenge)."""

    required_output_keys = ("det", "boxes", "has_det")

    def __init__(self, output_transform: Callable = lambda x: x) -> None:
        super().__init__(output_transform=output_transform, skip_unrolling=True)

    def reset(self) -> None:
        self._scores: list[float] = []

    def update(self, output: tuple) -> None:
        found, boxes, flags = output
        for i, carries in enumerate(flags.tolist()):
            if carries:
                det = found[i]
                self._scores.append(
                    rsna_image_score(det["boxes"].detach().cpu().numpy(), det["scores"].detach().cpu().numpy(),
                                     boxes[i].cpu().numpy())
                )

    def compute(self) -> float:
        return mean_over_scored_images(self._scores)
