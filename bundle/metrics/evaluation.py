"""Every reported metric of one evaluation, computed from per-sample records so that a patient bootstrap can
recompute them on any resample of the samples.

The records hold outputs after the decision step (probabilities as the model ships them, each image's Dice of
its post-processed mask, the boxes the decision step kept, whether each gate opened); this module only scores
them. Metric names are ``<head>/<metric>`` or ``<head>/<metric>/<class>``; ``*_gated`` variants treat an image
whose gate is shut as having an empty predicted mask / no predicted boxes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from .classification import binary_auroc, per_class_auroc, threshold_metrics
from .detection import COCO_IOU_RANGE, CocoAP
from .rsna import mean_over_scored_images, rsna_image_score
from .segmentation import mean_dice, positive_dice

CLS_PER_CLASS: tuple[str, ...] = ("accuracy", "f1", "sensitivity", "specificity")


@dataclass
class Records:
    """Per-sample outputs after the decision step, and labels, of one evaluation (N samples, C classes).

    ``cls_prob`` holds the probabilities the classifier's thresholds apply to (calibrated). ``seg_dice`` is each
    image's Dice of its post-processed mask, ungated (NaN without ``has_seg``); ``seg_positive`` whether its true
    mask is non-empty. ``seg_open`` / ``det_open``: whether the image's mask / boxes are used (gate open, or a
    head that is never gated). ``pred_*``: the detector's boxes, all of them (COCO AP ranks them); ``kept_*``:
    the boxes the decision step keeps (score threshold, NMS, cap), which the RSNA metric scores. Box lists have
    one (k, 4) / (k,) array per sample.
    """

    patient_id: list[str]
    image: list[str]
    cls_prob: np.ndarray
    cls: np.ndarray
    cls_known: np.ndarray
    has_cls: np.ndarray
    has_seg: np.ndarray
    seg_dice: np.ndarray
    seg_positive: np.ndarray
    seg_gate_prob: np.ndarray
    seg_open: np.ndarray
    has_det: np.ndarray
    det_gate_prob: np.ndarray
    det_open: np.ndarray
    pred_boxes: list[np.ndarray] = field(repr=False)
    pred_scores: list[np.ndarray] = field(repr=False)
    pred_labels: list[np.ndarray] = field(repr=False)
    kept_boxes: list[np.ndarray] = field(repr=False)
    kept_scores: list[np.ndarray] = field(repr=False)
    true_boxes: list[np.ndarray] = field(repr=False)
    true_labels: list[np.ndarray] = field(repr=False)

    def __len__(self) -> int:
        return len(self.patient_id)


def evaluation_statistic(
    records: Records,
    cls_thresholds: Sequence[float],
    class_names: Sequence[str],
    det_class_names: Sequence[str] = ("opacity",),
) -> Callable[[np.ndarray], dict[str, float]]:
    """A function from sample indices (with repeats) to every metric of those samples.

    ``cls_thresholds``: per class, the probability from which the classifier calls a finding positive. Per-image
    quantities (Dice, RSNA scores, COCO box matches, with and without gating) are computed once here; the
    returned function only aggregates them, which keeps a 1,000-resample bootstrap cheap.
    """
    r = records
    cls_thr = np.asarray(cls_thresholds, dtype=float)
    seg_open, det_open = r.seg_open.astype(bool), r.det_open.astype(bool)
    # an image gated shut has an empty predicted mask: Dice 1 when its true mask is empty too, else 0
    seg_gated = np.where(seg_open, r.seg_dice, np.where(r.seg_positive, 0.0, 1.0))
    det_idx = np.flatnonzero(r.has_det)
    rsna = np.full(len(r), np.nan)
    rsna[det_idx] = [rsna_image_score(r.kept_boxes[i], r.kept_scores[i], r.true_boxes[i]) for i in det_idx]
    det_truth_pos = np.array([len(b) > 0 for b in r.true_boxes], dtype=bool)
    # an image gated shut has no predictions: RSNA scores it 0 with truth and leaves it out without
    rsna_gated = np.where(det_open, rsna, np.where(det_truth_pos, 0.0, np.nan))
    coco = CocoAP(det_class_names, COCO_IOU_RANGE)
    matches: dict[bool, list] = {}
    for gated in (False, True):
        keep = [(not gated) or bool(det_open[i]) for i in det_idx]
        found = coco.match(
            [r.pred_boxes[i] if k else np.zeros((0, 4)) for i, k in zip(det_idx, keep)],
            [r.pred_labels[i] if k else np.zeros(0) for i, k in zip(det_idx, keep)],
            [r.pred_scores[i] if k else np.zeros(0) for i, k in zip(det_idx, keep)],
            [r.true_boxes[i] for i in det_idx],
            [r.true_labels[i] for i in det_idx],
        )
        matches[gated] = [None] * len(r)
        for i, m in zip(det_idx, found):
            matches[gated][i] = m
    seg_truth_pos = r.seg_positive.astype(bool)

    def statistic(idx: np.ndarray) -> dict[str, float]:
        out: dict[str, float] = {}
        c = idx[r.has_cls[idx].astype(bool)]
        probs, labels, known = r.cls_prob[c], r.cls[c], r.cls_known[c].astype(bool)
        auroc = per_class_auroc(probs, labels, known) if len(c) else np.full(len(class_names), np.nan)
        out["cls/auroc_macro"] = float(np.nanmean(auroc)) if np.isfinite(auroc).any() else float("nan")
        decided = threshold_metrics(probs, labels, known, cls_thr)
        for name in CLS_PER_CLASS:
            out[f"cls/{name}_macro"] = decided[f"{name}_macro"]
        out["cls/f1_micro"] = decided["f1_micro"]
        out["cls/accuracy_micro"] = decided["accuracy_micro"]
        for k, cname in enumerate(class_names):
            out[f"cls/auroc/{cname}"] = float(auroc[k])
            for name in CLS_PER_CLASS:
                out[f"cls/{name}/{cname}"] = float(decided[name][k])
        s = idx[r.has_seg[idx].astype(bool)]
        for suffix, dice in (("", r.seg_dice), ("_gated", seg_gated)):
            out[f"seg/dice_mean{suffix}"] = mean_dice(dice[s])
            out[f"seg/dice_positive{suffix}"] = positive_dice(dice[s], seg_truth_pos[s])
        out["seg/gate_auroc"] = binary_auroc(r.seg_gate_prob[s], seg_truth_pos[s])
        d = idx[r.has_det[idx].astype(bool)]
        for suffix, gated in (("", False), ("_gated", True)):
            out[f"det/rsna_map{suffix}"] = mean_over_scored_images((rsna_gated if gated else rsna)[d])
            out[f"det/coco_map{suffix}"], out[f"det/coco_ap50{suffix}"] = coco.score([matches[gated][i] for i in d])
        out["det/gate_auroc"] = binary_auroc(r.det_gate_prob[d], det_truth_pos[d])
        return out

    return statistic
