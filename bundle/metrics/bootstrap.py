"""95% confidence intervals by a bootstrap over patients.

A patient's images are correlated, so the resampling unit is the patient (a cluster bootstrap): each resample
draws as many patients as the set has, with replacement, takes all images of every drawn patient (a patient
drawn twice contributes its images twice) and recomputes the metric from those per-image data. The interval is
the 2.5th-97.5th percentile of the resampled values (percentile bootstrap; Efron & Tibshirani, *An
Introduction to the Bootstrap*, 1993, ch. 13), over the resamples where the metric is defined (not NaN).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import NamedTuple

import numpy as np

#: Default number of bootstrap resamples.
DEFAULT_RESAMPLES: int = 1000


class Interval(NamedTuple):
    """A metric's value on the whole set and its bootstrap confidence interval."""

    value: float
    low: float
    high: float


def patient_groups(patient_ids: Sequence[str]) -> list[np.ndarray]:
    """Indices of each patient's samples, one array per distinct patient id (in order of first appearance)."""
    ids = np.asarray([str(p) for p in patient_ids])
    _, first, inverse = np.unique(ids, return_index=True, return_inverse=True)
    order = np.argsort(first)
    return [np.flatnonzero(inverse == g) for g in order]


def resample_indices(groups: Sequence[np.ndarray], n_resamples: int, seed: int) -> list[np.ndarray]:
    """``n_resamples`` sample-index arrays, each the concatenated samples of patients drawn with replacement."""
    rng = np.random.default_rng(seed)
    return [np.concatenate([groups[g] for g in rng.integers(0, len(groups), len(groups))]) for _ in range(n_resamples)]


def bootstrap_metrics(
    statistic: Callable[[np.ndarray], Mapping[str, float]],
    patient_ids: Sequence[str],
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = 0.95,
) -> dict[str, Interval]:
    """Value and percentile CI of every metric ``statistic`` returns.

    Args:
        statistic: maps an array of sample indices (with repeats) to named metric values, computed from the
            per-sample data of those samples.
        patient_ids: patient of each sample; samples of one patient are resampled together.
        n_resamples: bootstrap resamples (the same resamples for every metric).
        seed: seed of the NumPy ``Generator``; equal seeds give equal intervals.
        confidence: coverage of the interval.
    """
    if len(patient_ids) == 0:
        return {name: Interval(float("nan"), float("nan"), float("nan")) for name in statistic(np.zeros(0, int))}
    point = dict(statistic(np.arange(len(patient_ids))))
    draws = [statistic(idx) for idx in resample_indices(patient_groups(patient_ids), n_resamples, seed)]
    tail = 50 * (1 - confidence)
    result = {}
    for name, value in point.items():
        values = np.array([d[name] for d in draws], dtype=float)
        values = values[np.isfinite(values)]
        low, high = np.percentile(values, [tail, 100 - tail]) if values.size else (float("nan"),) * 2
        result[name] = Interval(float(value), float(low), float(high))
    return result


def bootstrap_ci(
    metric: Callable[[np.ndarray], float],
    patient_ids: Sequence[str],
    n_resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = 0.95,
) -> Interval:
    """Value and percentile CI of one metric of the samples at the given indices (see :func:`bootstrap_metrics`)."""
    return bootstrap_metrics(lambda idx: {"metric": metric(idx)}, patient_ids, n_resamples, seed, confidence)["metric"]
