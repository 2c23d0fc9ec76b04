"""Operating points: the threshold of one binary output, chosen on validation by a named rule, with its provenance.

An output is called positive when its probability reaches the threshold (``p >= threshold``). Rules, each walking
the ROC curve over the distinct validation scores (the threshold is always one of them):

- ``youden``: maximum of Youden's J = sensitivity + specificity - 1 (Youden 1950);
- ``max_f1``: maximum of F1 = 2 TP / (2 TP + FP + FN);
- ``sensitivity``: the highest threshold whose sensitivity reaches ``target`` (e.g. 0.95 for screening), which is
  the one with the best specificity among them.

A rule needs enough positives and negatives to mean anything (:data:`MIN_COUNTS`; the sensitivity rule needs
at least ``1 / (1 - target)`` positives to resolve its target). Below them the default is kept, and the
:class:`OperatingPoint` says so (``fallback``, ``reason``) and a warning is logged.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import date
from typing import Any

import numpy as np

from .serial import from_fields

logger = logging.getLogger("bundle.decisions")

#: Rules that :func:`choose_operating_point` applies to scores and labels.
ROC_RULES: tuple[str, ...] = ("youden", "max_f1", "sensitivity")

#: Minimum (positives, negatives) of each rule on the validation data.
MIN_COUNTS: dict[str, tuple[int, int]] = {"youden": (10, 10), "max_f1": (10, 10), "sensitivity": (10, 0)}


@dataclass(frozen=True)
class OperatingPoint:
    """A decision threshold and how it was chosen.

    Attributes:
        threshold: positive when the probability reaches it.
        rule: ``youden``, ``max_f1``, ``sensitivity``, another chooser's name (e.g. ``max_mean_dice``),
            ``default`` or ``override``.
        target: the sensitivity rule's target, else None.
        n_pos, n_neg: validation positives and negatives the rule saw (None when unknown).
        chosen_on: ISO date of the choice; dataset: what it was chosen on (e.g. ``datalist.json#validation``).
        sensitivity, specificity: on that data at ``threshold`` (None when not computed).
        fallback: True when ``threshold`` is a default kept instead of a choice; reason: why.
    """

    threshold: float
    rule: str = "default"
    target: float | None = None
    n_pos: int | None = None
    n_neg: int | None = None
    chosen_on: str | None = None
    dataset: str | None = None
    sensitivity: float | None = None
    specificity: float | None = None
    fallback: bool = False
    reason: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.threshold) <= 1.0 or math.isnan(self.threshold):
            raise ValueError(f"operating point threshold must be a probability in [0, 1], got {self.threshold!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "operating point") -> OperatingPoint:
        """Read :meth:`to_dict` output; an unknown or missing field is an error naming ``where``."""
        if "threshold" not in data:
            raise ValueError(f"{where}: no 'threshold'")
        return from_fields(cls, {**data, "threshold": float(data["threshold"])}, where)


def default_point(threshold: float = 0.5, reason: str = "not chosen on validation data") -> OperatingPoint:
    """The operating point of an output nobody chose a threshold for."""
    return OperatingPoint(threshold=float(threshold), rule="default", fallback=True, reason=reason)


def _rates(scores: np.ndarray, labels: np.ndarray, threshold: float) -> tuple[float | None, float | None]:
    pred = scores >= threshold
    n_pos, n_neg = int(labels.sum()), int((~labels).sum())
    sens = float((pred & labels).sum() / n_pos) if n_pos else None
    spec = float((~pred & ~labels).sum() / n_neg) if n_neg else None
    return sens, spec


def roc_threshold(scores: np.ndarray, labels: np.ndarray, rule: str, target: float = 0.95) -> float:
    """The threshold ``rule`` picks among the distinct ``scores`` (ties: the highest such threshold).

    Needs at least one positive (and, for ``youden``, one negative).
    """
    if rule not in ROC_RULES:
        raise ValueError(f"rule must be one of {ROC_RULES}, got {rule!r}")
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order]
    last = np.r_[np.flatnonzero(np.diff(s)), s.size - 1]  # last index of each distinct score, high to low
    tp = np.cumsum(y)[last].astype(float)
    fp = np.cumsum(~y)[last].astype(float)
    n_pos, n_neg = float(y.sum()), float((~y).sum())
    if rule == "youden":
        gain = tp / n_pos - fp / max(n_neg, 1.0)
    elif rule == "max_f1":
        gain = 2 * tp / (tp + fp + n_pos)
    else:
        gain = (tp / n_pos >= target - 1e-12).astype(float)  # first (highest) threshold reaching the target
    return float(s[last][int(np.argmax(gain))])


def checked_operating_point(
    choose: Callable[[], float],
    rule: str,
    n_pos: int,
    n_neg: int,
    min_positives: int,
    min_negatives: int = 0,
    default: float = 0.5,
    name: str = "output",
    target: float | None = None,
    chosen_on: str | None = None,
    dataset: str | None = None,
) -> OperatingPoint:
    """``choose()``'s threshold when the validation data has enough positives and negatives, else ``default``
    with the reason (logged as a warning). For choosers outside :data:`ROC_RULES` (box score by the RSNA score,
    mask threshold by Dice), with positives counted as the chooser understands them (e.g. true boxes)."""
    chosen_on = chosen_on or date.today().isoformat()
    common = dict(rule=rule, target=target, n_pos=int(n_pos), n_neg=int(n_neg), chosen_on=chosen_on, dataset=dataset)
    if n_pos < min_positives or n_neg < min_negatives:
        reason = (
            f"{n_pos} positives and {n_neg} negatives on validation; rule {rule!r} needs at least "
            f"{min_positives} and {min_negatives}: kept the default {default}"
        )
        logger.warning("operating point of %s: %s", name, reason)
        return OperatingPoint(threshold=float(default), fallback=True, reason=reason, **common)
    return OperatingPoint(threshold=float(choose()), **common)


def choose_operating_point(
    scores: Sequence[float] | np.ndarray,
    labels: Sequence[float] | np.ndarray,
    rule: str = "youden",
    target: float = 0.95,
    min_positives: int | None = None,
    min_negatives: int | None = None,
    default: float = 0.5,
    name: str = "output",
    chosen_on: str | None = None,
    dataset: str | None = None,
) -> OperatingPoint:
    """The operating point of one output chosen on validation ``scores`` (probabilities) and 0/1 ``labels``.

    ``min_positives`` / ``min_negatives`` default to the rule's :data:`MIN_COUNTS` (for ``sensitivity`` at
    least ``ceil(1 / (1 - target))`` positives). The record carries the validation sensitivity and specificity.
    """
    if rule not in ROC_RULES:
        raise ValueError(f"{name}: rule must be one of {ROC_RULES}, got {rule!r}")
    if rule == "sensitivity" and not 0.0 < target < 1.0:
        raise ValueError(f"{name}: the sensitivity target must be in (0, 1), got {target}")
    s = np.asarray(scores, dtype=np.float64).ravel()
    raw = np.asarray(labels, dtype=np.float64).ravel()
    if s.shape != raw.shape:
        raise ValueError(f"{name}: {s.size} scores but {raw.size} labels")
    if not np.isfinite(s).all():
        raise ValueError(f"{name}: scores contain NaN or infinity")
    if not np.isin(raw, (0.0, 1.0)).all():
        raise ValueError(f"{name}: labels must be 0 or 1 (leave unknown labels out before choosing)")
    y = raw.astype(bool)
    floor_pos, floor_neg = MIN_COUNTS[rule]
    if rule == "sensitivity":
        floor_pos = max(floor_pos, math.ceil(1.0 / (1.0 - target) - 1e-9))
    point = checked_operating_point(
        lambda: roc_threshold(s, y, rule, target),
        rule=rule,
        n_pos=int(y.sum()),
        n_neg=int((~y).sum()),
        min_positives=floor_pos if min_positives is None else min_positives,
        min_negatives=floor_neg if min_negatives is None else min_negatives,
        default=default,
        name=name,
        target=target if rule == "sensitivity" else None,
        chosen_on=chosen_on,
        dataset=dataset,
    )
    sens, spec = _rates(s, y, point.threshold)
    return OperatingPoint(**{**point.to_dict(), "sensitivity": sens, "specificity": spec})


def choose_operating_points(
    probs: np.ndarray,
    labels: np.ndarray,
    names: Sequence[str],
    known: np.ndarray | None = None,
    rule: str | Mapping[str, str] = "youden",
    **kwargs: Any,
) -> dict[str, OperatingPoint]:
    """Per-output operating points of (N, C) ``probs`` / ``labels``, over the samples where ``known`` (N, C) is
    True; ``rule`` is one rule or one per name; ``kwargs`` go to :func:`choose_operating_point`."""
    probs, labels = np.asarray(probs, dtype=np.float64), np.asarray(labels, dtype=np.float64)
    if probs.ndim != 2 or probs.shape != labels.shape or probs.shape[1] != len(names):
        raise ValueError(f"probs {probs.shape} and labels {labels.shape} must both be (N, {len(names)})")
    known = np.ones(probs.shape, bool) if known is None else np.asarray(known, dtype=bool)
    rules = {n: rule for n in names} if isinstance(rule, str) else dict(rule)
    missing = [n for n in names if n not in rules]
    if missing:
        raise ValueError(f"no rule given for {missing}")
    return {
        n: choose_operating_point(probs[known[:, c], c], labels[known[:, c], c], rules[n], name=n, **kwargs)
        for c, n in enumerate(names)
    }
