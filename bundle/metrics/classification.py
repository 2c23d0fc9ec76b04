"""Multi-label classification metrics over samples whose label of a class is known.

Arrays are ``probs`` (N, C) in [0, 1], ``labels`` (N, C) 0/1 and ``known`` (N, C) bool (``False`` where a
dataset does not grade that finding). A class without both a known positive and a known negative has an
undefined AUROC (NaN); a ratio with a zero denominator (e.g. sensitivity of a class with no positive) is NaN.
Means over classes ignore NaN classes.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from ignite.metrics import Metric
from scipy.stats import rankdata


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    num, den = np.asarray(num, dtype=float), np.asarray(den, dtype=float)
    return np.divide(num, den, out=np.full(np.broadcast(num, den).shape, np.nan), where=den > 0)


def _nanmean(values: np.ndarray) -> float:
    values = np.asarray(values, dtype=float)
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def binary_auroc(scores: np.ndarray, labels: np.ndarray) -> float:
    """Area under the ROC curve as the Mann-Whitney U statistic (ties count one half); NaN without both classes."""
    labels = np.asarray(labels).astype(bool)
    n_pos = int(labels.sum())
    n_neg = labels.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(scores)
    return float((ranks[labels].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def per_class_auroc(probs: np.ndarray, labels: np.ndarray, known: np.ndarray) -> np.ndarray:
    """AUROC of each class over the samples where that class is known, shape (C,)."""
    return np.array([binary_auroc(probs[known[:, c], c], labels[known[:, c], c]) for c in range(probs.shape[1])])


def macro_auroc(probs: np.ndarray, labels: np.ndarray, known: np.ndarray) -> float:
    """Mean of the per-class AUROC over classes where it is defined; NaN when it is defined for none."""
    return _nanmean(per_class_auroc(probs, labels, known))


def confusion_counts(
    probs: np.ndarray, labels: np.ndarray, known: np.ndarray, thresholds: np.ndarray | float = 0.5
) -> dict[str, np.ndarray]:
    """Per-class ``tp``, ``fp``, ``fn``, ``tn`` (each (C,)) of ``probs >= thresholds`` over known labels."""
    pred = probs >= np.asarray(thresholds, dtype=float)
    truth = labels.astype(bool)
    known = known.astype(bool)
    return {
        "tp": (pred & truth & known).sum(0),
        "fp": (pred & ~truth & known).sum(0),
        "fn": (~pred & truth & known).sum(0),
        "tn": (~pred & ~truth & known).sum(0),
    }


def threshold_metrics(
    probs: np.ndarray, labels: np.ndarray, known: np.ndarray, thresholds: np.ndarray | float = 0.5
) -> dict[str, np.ndarray | float]:
    """Decision metrics at per-class ``thresholds`` (a sample is positive when ``prob >= threshold``).

    Returns per-class arrays ``accuracy``, ``f1``, ``sensitivity`` (recall), ``specificity``; their means over
    classes ``*_macro``; ``f1_micro`` (F1 of the TP/FP/FN pooled over all known sample-class pairs, which is
    *not* the accuracy) and ``accuracy_micro`` (fraction of all known sample-class decisions that are right).
    """
    n = confusion_counts(probs, labels, known, thresholds)
    tp, fp, fn, tn = n["tp"], n["fp"], n["fn"], n["tn"]
    per_class = {
        "accuracy": _ratio(tp + tn, tp + fp + fn + tn),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn),
        "sensitivity": _ratio(tp, tp + fn),
        "specificity": _ratio(tn, tn + fp),
    }
    result: dict[str, np.ndarray | float] = dict(per_class)
    result.update({f"{name}_macro": _nanmean(values) for name, values in per_class.items()})
    result["f1_micro"] = float(_ratio(2 * tp.sum(), 2 * tp.sum() + fp.sum() + fn.sum()))
    result["accuracy_micro"] = float(_ratio(tp.sum() + tn.sum(), (tp + fp + fn + tn).sum()))
    return result


class MultiLabelAUROC(Metric):
    """Macro AUROC of ``cls_prob`` against ``cls`` over samples with ``has_cls`` and known labels."""

    required_output_keys = ("cls_prob", "cls", "cls_known", "has_cls")

    def __init__(self, output_transform: Callable = lambda x: x) -> None:
        super().__init__(output_transform=output_transform, skip_unrolling=True)

    def reset(self) -> None:
        self._probs: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._known: list[np.ndarray] = []

    def update(self, output: tuple[torch.Tensor, ...]) -> None:
        probs, labels, known, flag = (t.detach().cpu() for t in output)
        self._probs.append(probs[flag].numpy())
        self._labels.append(labels[flag].numpy())
        self._known.append(known[flag].numpy())

    def compute(self) -> float:
        if not self._probs:
            return float("nan")
        return macro_auroc(np.concatenate(self._probs), np.concatenate(self._labels), np.concatenate(self._known))
