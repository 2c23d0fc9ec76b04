"""Saliency metrics as in the MIT saliency benchmark: Bylinskii, Judd, Oliva, Torralba and Durand, "What do
different evaluation metrics tell us about saliency models?", IEEE TPAMI 41(3), 2019.

``pred`` is a predicted saliency map; the truth is a continuous gaze map ``truth`` (for the distribution metrics
CC, KL, SIM) or a boolean fixation map ``fixations`` (for the location metrics NSS, AUC-Judd), of the same shape.
With P = pred, Q = truth, F = the set of fixated pixels:

- **CC** = cov(P, Q) / (std(P) std(Q)): Pearson's correlation of the two maps' values, in [-1, 1].
- **KL** = sum_i Q_i log(eps + Q_i / (P_i + eps)), P and Q each normalised to sum 1, eps = 2.2204e-16 (MATLAB's
  ``eps``, as the benchmark's ``KLdiv.m``): KL(truth || pred), 0 for equal maps, lower is better.
- **SIM** = sum_i min(P_i, Q_i), P and Q each normalised to sum 1: 1 for equal maps, 0 for disjoint ones. The
  benchmark's ``similarity.m`` first rescales each map to [0, 1] by its minimum and maximum; here the maps must be
  non-negative and are used as given (so a uniform map is defined). The two agree on maps whose minimum is 0.
- **NSS** = mean over i in F of (P_i - mean(P)) / std(P), std with n - 1 as MATLAB's ``std``: 0 at chance.
- **AUC-Judd** (Judd, Ehinger, Durand, Torralba, ICCV 2009): every fixated pixel's saliency is a threshold t;
  TPR(t) = |{i in F: P_i >= t}| / |F|, FPR(t) = |{i not in F: P_i >= t}| / |not F|; the area under (0, 0), the
  points by decreasing t, and (1, 1) by the trapezoid rule: 1 when every fixated pixel outranks every other pixel,
  0.5 at chance. Ties are not broken by jitter (the benchmark adds noise of 1e-7): a tied pixel counts at its
  threshold whether fixated or not.

CC and NSS are NaN for a constant ``pred``; the dataset-level means leave NaN images out.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Literal

import numpy as np
import torch
from ignite.metrics import Metric

from .bootstrap import DEFAULT_RESAMPLES, Interval, bootstrap_metrics

#: MATLAB's ``eps`` (2^-52), the epsilon of the benchmark's KL divergence.
KL_EPS: float = float(np.finfo(np.float64).eps)
DistributionMetric = Literal["cc", "kl", "sim"]


def _pair(pred: np.ndarray, other: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray]:
    pred, other = np.asarray(pred, dtype=float), np.asarray(other)
    if pred.shape != other.shape:
        raise ValueError(f"pred has shape {pred.shape}, {name} has {other.shape}: resize one to the other")
    return pred, other


def _distribution(values: np.ndarray, name: str) -> np.ndarray:
    """``values`` normalised to sum 1; they must be non-negative with a positive sum."""
    if (values < 0).any() or not values.sum() > 0:
        raise ValueError(f"{name} must be non-negative with a positive sum to be a distribution")
    return values / values.sum()


def cc(pred: np.ndarray, truth: np.ndarray) -> float:
    """Pearson's linear correlation coefficient of the two maps' values; NaN when either map is constant."""
    pred, truth = _pair(pred, truth, "truth")
    p, q = pred.ravel() - pred.mean(), truth.astype(float).ravel() - truth.mean()
    denominator = np.sqrt((p @ p) * (q @ q))
    return float(p @ q / denominator) if denominator > 0 else float("nan")


def kl_divergence(pred: np.ndarray, truth: np.ndarray, eps: float = KL_EPS) -> float:
    """KL(truth || pred) of the maps normalised to sum 1, with the benchmark's ``eps``."""
    pred, truth = _pair(pred, truth, "truth")
    p, q = _distribution(pred, "pred"), _distribution(truth.astype(float), "truth")
    return float(np.sum(q * np.log(eps + q / (p + eps))))


def similarity(pred: np.ndarray, truth: np.ndarray) -> float:
    """SIM: the sum of the element-wise minimum of the two maps normalised to sum 1."""
    pred, truth = _pair(pred, truth, "truth")
    return float(np.minimum(_distribution(pred, "pred"), _distribution(truth.astype(float), "truth")).sum())


def _fixated(pred: np.ndarray, fixations: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred, fixations = _pair(pred, fixations, "fixations")
    fixated = fixations.astype(bool)
    if not fixated.any():
        raise ValueError("the fixation map has no fixated pixel")
    return pred, fixated


def nss(pred: np.ndarray, fixations: np.ndarray) -> float:
    """Normalised scanpath saliency: the mean of the standardised ``pred`` at the fixated pixels; NaN when ``pred``
    is constant."""
    pred, fixated = _fixated(pred, fixations)
    std = pred.std(ddof=1)
    return float(((pred[fixated] - pred.mean()) / std).mean()) if std > 0 else float("nan")


def auc_judd(pred: np.ndarray, fixations: np.ndarray) -> float:
    """AUC-Judd: the ROC area with the fixated pixels' saliency values as thresholds (see the module)."""
    pred, fixated = _fixated(pred, fixations)
    if fixated.all():
        raise ValueError("every pixel is fixated: AUC-Judd needs non-fixated pixels")
    positives, negatives = np.sort(pred[fixated]), np.sort(pred[~fixated])
    thresholds = np.unique(positives)[::-1]
    tpr = (positives.size - np.searchsorted(positives, thresholds, side="left")) / positives.size
    fpr = (negatives.size - np.searchsorted(negatives, thresholds, side="left")) / negatives.size
    tpr, fpr = np.concatenate([[0.0], tpr, [1.0]]), np.concatenate([[0.0], fpr, [1.0]])
    return float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))


DISTRIBUTION_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "cc": cc, "kl": kl_divergence, "sim": similarity,
}
LOCATION_METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {"nss": nss, "auc_judd": auc_judd}


def saliency_scores(
    preds: Sequence[np.ndarray],
    truths: Sequence[np.ndarray] | None = None,
    fixations: Sequence[np.ndarray] | None = None,
) -> dict[str, np.ndarray]:
    """Per-image scores, one array per metric: CC, KL, SIM against ``truths`` and NSS, AUC-Judd against
    ``fixations``, for whichever of the two is given."""
    scores: dict[str, np.ndarray] = {}
    for metrics, references in ((DISTRIBUTION_METRICS, truths), (LOCATION_METRICS, fixations)):
        if references is None:
            continue
        if len(references) != len(preds):
            raise ValueError(f"{len(preds)} predicted maps but {len(references)} reference maps")
        for name, metric in metrics.items():
            scores[name] = np.array([metric(p, r) for p, r in zip(preds, references)], dtype=float)
    if not scores:
        raise ValueError("give truths (gaze maps), fixations (fixation maps) or both")
    return scores


def _nanmean(values: np.ndarray) -> float:
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def saliency_intervals(
    scores: dict[str, np.ndarray],
    patient_ids: Sequence[str],
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
) -> dict[str, Interval]:
    """Mean of each per-image score (NaN images left out) with its patient-bootstrap 95% CI
    (:func:`bundle.metrics.bootstrap.bootstrap_metrics`)."""
    for name, values in scores.items():
        if len(values) != len(patient_ids):
            raise ValueError(f"{len(values)} {name} scores but {len(patient_ids)} patient ids")
    return bootstrap_metrics(saliency_statistic(scores, ""), patient_ids, n_resamples, seed)


#: The baseline maps scored beside a model in evaluation (metric names ``sal/<metric>/<baseline>``).
BASELINES: tuple[str, ...] = ("centre_bias", "mean_gaze")
SALIENCY_METRICS: tuple[str, ...] = (*DISTRIBUTION_METRICS, *LOCATION_METRICS)


def image_scores(
    maps: dict[str, np.ndarray], truth: np.ndarray, fixations: np.ndarray | None
) -> dict[str, float]:
    """One image's scores of each map in ``maps`` (name ``""`` for the model, else a baseline's): CC, KL, SIM
    against the gaze map ``truth`` and, with a fixation map, NSS and AUC-Judd; keyed ``<metric>`` or
    ``<metric>/<name>``. Without fixations (or with every pixel fixated) the location metrics are NaN."""
    out: dict[str, float] = {}
    usable = fixations is not None and fixations.any() and not fixations.all()
    for name, values in maps.items():
        suffix = f"/{name}" if name else ""
        for metric, score in DISTRIBUTION_METRICS.items():
            out[metric + suffix] = score(values, truth)
        for metric, score in LOCATION_METRICS.items():
            out[metric + suffix] = score(values, fixations) if usable else float("nan")
    return out


def saliency_statistic(scores: dict[str, np.ndarray], prefix: str = "sal/") -> Callable[[np.ndarray], dict[str, float]]:
    """A function from sample indices (with repeats) to the mean of each per-sample score (NaN samples left out),
    named ``prefix + key``, for :func:`bundle.metrics.bootstrap.bootstrap_metrics`."""
    return lambda idx: {prefix + name: _nanmean(values[idx]) for name, values in scores.items()}


class SaliencyMetric(Metric):
    """Mean per-image CC, KL or SIM of ``sal_prob`` (B, 1, W, H), the saliency head's distribution, against the
    gaze map ``saliency`` over the samples with ``has_sal`` (the evaluator's output keys)."""

    required_output_keys = ("sal_prob", "saliency", "has_sal")

    def __init__(self, metric: DistributionMetric = "cc", output_transform: Callable = lambda x: x) -> None:
        if metric not in DISTRIBUTION_METRICS:
            raise ValueError(f"metric must be one of {sorted(DISTRIBUTION_METRICS)}, got {metric!r}")
        self.metric = DISTRIBUTION_METRICS[metric]
        super().__init__(output_transform=output_transform, skip_unrolling=True)

    def reset(self) -> None:
        self._scores: list[float] = []

    def update(self, output: tuple[torch.Tensor, ...]) -> None:
        pred, truth, flag = (t.detach().cpu() for t in output)
        pairs = zip(pred[flag].double().numpy(), truth[flag].double().numpy())
        self._scores.extend(self.metric(p, t) for p, t in pairs)

    def compute(self) -> float:
        return _nanmean(np.array(self._scores, dtype=float))
