"""Metrics as plain functions and as Ignite metrics reading the evaluator's output dict."""

from __future__ import annotations

from ignite.metrics import Metric, MetricsLambda

from .classification import MultiLabelAUROC, macro_auroc
from .detection import DetectionMAP
from .segmentation import MeanDice, dice_per_image


def _mean_ignoring_nan(*values: float) -> float:
    present = [v for v in values if v == v]
    return sum(present) / len(present) if present else float("nan")


def mean_metric(*metrics: Metric) -> MetricsLambda:
    """Mean of several metrics (NaN ones, e.g. a head without labels in the split, left out)."""
    return MetricsLambda(_mean_ignoring_nan, *metrics)


__all__ = ["DetectionMAP", "MeanDice", "MultiLabelAUROC", "dice_per_image", "macro_auroc", "mean_metric"]
