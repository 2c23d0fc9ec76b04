"""Probability calibration of one binary output, fitted on validation, and how to measure it.

- Temperature scaling (Guo et al., "On Calibration of Modern Neural Networks", ICML 2017): ``p = sigmoid(z / T)``
  with the one ``T > 0`` minimising the validation negative log-likelihood. Monotonic, so it keeps the ranking
  (AUROC) and only moves the probabilities.
- Isotonic regression (Zadrozny & Elkan, KDD 2002): the non-decreasing step map from ``sigmoid(z)`` to the
  observed frequency (pool-adjacent-violators), applied by linear interpolation between its knots.

Calibration is measured on the positive class: bins of equal width over the predicted probability, each bin's
mean probability (``confidence``) against its fraction of positives (``accuracy``), and the expected
calibration error ``ECE = sum_b (n_b / N) |accuracy_b - confidence_b|`` (Naeini et al., AAAI 2015; Guo et al.).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

import numpy as np
from scipy.optimize import minimize_scalar

from .arrays import as_numpy, sigmoid
from .serial import from_fields

logger = logging.getLogger("bundle.decisions")

METHODS: tuple[str, ...] = ("none", "temperature", "isotonic")

#: Minimum validation positives and negatives to fit a calibration (below: identity, said so).
MIN_POSITIVES: int = 10
MIN_NEGATIVES: int = 10


@dataclass(frozen=True)
class Calibration:
    """The map from a logit to a calibrated probability, and how it was fitted.

    Attributes:
        method: ``none`` (``sigmoid(z)``), ``temperature`` (``sigmoid(z / temperature)``) or ``isotonic``
            (``interp(sigmoid(z), knots, values)``).
        temperature: the temperature (1 unless ``temperature``).
        knots, values: the isotonic map's points (increasing knots, non-decreasing values).
        n_pos, n_neg: validation counts it was fitted on; chosen_on: ISO date.
        ece_before, ece_after: ECE on that data before and after (in-sample).
        fallback: True when a fit was asked for but not made; reason: why.
    """

    method: str = "none"
    temperature: float = 1.0
    knots: tuple[float, ...] = ()
    values: tuple[float, ...] = ()
    n_pos: int | None = None
    n_neg: int | None = None
    chosen_on: str | None = None
    ece_before: float | None = None
    ece_after: float | None = None
    fallback: bool = False
    reason: str | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"calibration method must be one of {METHODS}, got {self.method!r}")
        if not self.temperature > 0:
            raise ValueError(f"calibration temperature must be > 0, got {self.temperature}")
        if self.method == "isotonic" and (len(self.knots) < 2 or len(self.knots) != len(self.values)):
            raise ValueError("isotonic calibration needs at least two knots and one value per knot")
        object.__setattr__(self, "knots", tuple(float(k) for k in self.knots))
        object.__setattr__(self, "values", tuple(float(v) for v in self.values))

    def apply(self, logits: Any) -> np.ndarray:
        """Calibrated probabilities (float64) of ``logits`` (any shape)."""
        z = as_numpy(logits)
        if self.method == "isotonic":
            return np.interp(sigmoid(z), self.knots, self.values)
        return sigmoid(z / self.temperature)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["knots"], data["values"] = list(self.knots), list(self.values)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "calibration") -> Calibration:
        return from_fields(cls, data, where)


@dataclass(frozen=True)
class ReliabilityBins:
    """Reliability diagram data: per bin ``(lower, upper]`` (0 falls in the first), mean probability, fraction
    positive and count (NaN confidence and accuracy for an empty bin)."""

    lower: np.ndarray
    upper: np.ndarray
    confidence: np.ndarray
    accuracy: np.ndarray
    count: np.ndarray

    def to_dict(self) -> dict[str, list]:
        """JSON-ready lists (an empty bin's NaN as None)."""

        def clean(values: np.ndarray) -> list:
            return [None if not np.isfinite(v) else round(float(v), 6) for v in values]

        return {
            "lower": clean(self.lower), "upper": clean(self.upper), "confidence": clean(self.confidence),
            "accuracy": clean(self.accuracy), "count": [int(c) for c in self.count],
        }


def _checked(probs: Any, labels: Any) -> tuple[np.ndarray, np.ndarray]:
    p, y = as_numpy(probs).ravel(), as_numpy(labels).ravel()
    if p.shape != y.shape:
        raise ValueError(f"{p.size} probabilities but {y.size} labels")
    if not np.isin(y, (0.0, 1.0)).all():
        raise ValueError("labels must be 0 or 1 (leave unknown labels out)")
    if ((p < 0) | (p > 1) | ~np.isfinite(p)).any():
        raise ValueError("probabilities must be finite and in [0, 1]")
    return p, y


def reliability_bins(probs: Any, labels: Any, n_bins: int = 15) -> ReliabilityBins:
    """Equal-width bins over [0, 1]; probability ``p`` falls in bin ``ceil(p * n_bins) - 1`` (bin 0 for 0)."""
    p, y = _checked(probs, labels)
    index = np.clip(np.ceil(p * n_bins).astype(int) - 1, 0, n_bins - 1)
    count = np.bincount(index, minlength=n_bins)
    with np.errstate(invalid="ignore", divide="ignore"):
        confidence = np.bincount(index, weights=p, minlength=n_bins) / count
        accuracy = np.bincount(index, weights=y, minlength=n_bins) / count
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    return ReliabilityBins(edges[:-1], edges[1:], confidence, accuracy, count)


def expected_calibration_error(probs: Any, labels: Any, n_bins: int = 15) -> float:
    """ECE of positive-class probabilities against 0/1 labels; NaN for no samples."""
    bins = reliability_bins(probs, labels, n_bins)
    total = bins.count.sum()
    if total == 0:
        return float("nan")
    filled = bins.count > 0
    gaps = np.abs(bins.accuracy[filled] - bins.confidence[filled])
    return float((bins.count[filled] * gaps).sum() / total)


def fit_temperature(logits: Any, labels: Any) -> float:
    """The temperature minimising the mean binary cross-entropy of ``sigmoid(logits / T)`` (convex in 1/T)."""
    z, y = as_numpy(logits).ravel(), as_numpy(labels).ravel()

    def nll(log_inverse: float) -> float:
        scaled = z * np.exp(log_inverse)
        return float(np.mean(np.logaddexp(0.0, scaled) - y * scaled))

    found = minimize_scalar(nll, bounds=(-6.0, 6.0), method="bounded", options={"xatol": 1e-8})
    return float(np.exp(-found.x))


def fit_isotonic(probs: Any, labels: Any) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Knots and values of the isotonic (non-decreasing) least-squares fit of ``labels`` on ``probs``, by
    pool-adjacent-violators; each constant run is kept by its first and last knot."""
    p, y = _checked(probs, labels)
    x, inverse = np.unique(p, return_inverse=True)
    weight = np.bincount(inverse).astype(float)
    mean = np.bincount(inverse, weights=y) / weight
    blocks: list[list[float]] = []  # [value, weight, first index, last index]
    for i, (m, w) in enumerate(zip(mean, weight)):
        blocks.append([m, w, i, i])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            v2, w2, _, last = blocks.pop()
            v1, w1, first, _ = blocks.pop()
            blocks.append([(v1 * w1 + v2 * w2) / (w1 + w2), w1 + w2, first, last])
    knots: list[float] = []
    values: list[float] = []
    for value, _, first, last in blocks:
        for i in sorted({int(first), int(last)}):
            knots.append(float(x[i]))
            values.append(float(value))
    if len(knots) == 1:  # one distinct probability: a constant map
        knots, values = [0.0, 1.0], [values[0]] * 2
    return tuple(knots), tuple(values)


def fit_calibration(
    logits: Any,
    labels: Any,
    method: str = "temperature",
    min_positives: int = MIN_POSITIVES,
    min_negatives: int = MIN_NEGATIVES,
    n_bins: int = 15,
    name: str = "output",
    chosen_on: str | None = None,
) -> Calibration:
    """Fit ``method`` on validation ``logits`` and 0/1 ``labels``; with too few positives or negatives, the
    identity (``none``) marked as a fallback, with a logged warning."""
    if method not in METHODS:
        raise ValueError(f"{name}: calibration method must be one of {METHODS}, got {method!r}")
    z = as_numpy(logits).ravel()
    if not np.isfinite(z).all():
        raise ValueError(f"{name}: logits contain NaN or infinity")
    raw, y = _checked(sigmoid(z), labels)
    n_pos, n_neg = int(y.sum()), int(y.size - y.sum())
    counts = dict(n_pos=n_pos, n_neg=n_neg, chosen_on=chosen_on or date.today().isoformat())
    before = expected_calibration_error(raw, y, n_bins)
    if method == "none":
        return Calibration(ece_before=before, ece_after=before, **counts)
    if n_pos < min_positives or n_neg < min_negatives:
        reason = (
            f"{n_pos} positives and {n_neg} negatives on validation; {method} calibration needs at least "
            f"{min_positives} and {min_negatives}: left uncalibrated"
        )
        logger.warning("calibration of %s: %s", name, reason)
        return Calibration(ece_before=before, ece_after=before, fallback=True, reason=reason, **counts)
    if method == "temperature":
        fitted = Calibration(method="temperature", temperature=fit_temperature(z, y), **counts)
    else:
        knots, values = fit_isotonic(raw, y)
        fitted = Calibration(method="isotonic", knots=knots, values=values, **counts)
    after = expected_calibration_error(fitted.apply(z), y, n_bins)
    return Calibration(**{**fitted.to_dict(), "ece_before": before, "ece_after": after})


def fit_calibrations(
    logits: np.ndarray,
    labels: np.ndarray,
    names: Sequence[str],
    known: np.ndarray | None = None,
    method: str = "temperature",
    **kwargs: Any,
) -> dict[str, Calibration]:
    """Per-output calibrations of (N, C) ``logits`` / ``labels`` over the samples where ``known`` is True."""
    logits, labels = as_numpy(logits), as_numpy(labels)
    if logits.ndim != 2 or logits.shape != labels.shape or logits.shape[1] != len(names):
        raise ValueError(f"logits {logits.shape} and labels {labels.shape} must both be (N, {len(names)})")
    known = np.ones(logits.shape, bool) if known is None else np.asarray(known, dtype=bool)
    return {
        n: fit_calibration(logits[known[:, c], c], labels[known[:, c], c], method, name=n, **kwargs)
        for c, n in enumerate(names)
    }
