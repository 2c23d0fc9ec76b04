"""Metrics as plain functions (NumPy in, floats out) and as Ignite metrics reading the evaluator's output dict."""

from __future__ import annotations

from ignite.metrics import Metric, MetricsLambda

from .bootstrap import Interval, bootstrap_ci, bootstrap_metrics
from .classification import MultiLabelAUROC, binary_auroc, macro_auroc, per_class_auroc, threshold_metrics
from .detection import CocoAP, DetectionMAP, coco_map
from .rsna import RSNAMap, choose_box_score, rsna_image_score, rsna_map
from .saliency import (
    SaliencyMetric, auc_judd, cc, kl_divergence, nss, saliency_intervals, saliency_scores, similarity,
)
from .segmentation import MeanDice, dice_per_image, mean_dice, positive_dice


def _mean_ignoring_nan(*values: float) -> float:
    present = [v for v in values if v == v]
    return sum(present) / len(present) if present else float("nan")


def mean_metric(*metrics: Metric) -> MetricsLambda:
    """Mean of several metrics (NaN ones, e.g. a head without labels in the split, left out)."""
    return MetricsLambda(_mean_ignoring_nan, *metrics)


__all__ = [
    "CocoAP",
    "DetectionMAP",
    "Interval",
    "MeanDice",
    "MultiLabelAUROC",
    "RSNAMap",
    "SaliencyMetric",
    "auc_judd",
    "binary_auroc",
    "bootstrap_ci",
    "bootstrap_metrics",
    "cc",
    "choose_box_score",
    "coco_map",
    "dice_per_image",
    "kl_divergence",
    "macro_auroc",
    "mean_dice",
    "mean_metric",
    "nss",
    "per_class_auroc",
    "positive_dice",
    "rsna_image_score",
    "rsna_map",
    "saliency_intervals",
    "saliency_scores",
    "similarity",
    "threshold_metrics",
]
