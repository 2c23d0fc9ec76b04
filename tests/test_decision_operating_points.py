"""Operating points chosen on validation: each rule on a hand-made ROC, and the fallback below the minimum counts."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from sklearn.metrics import f1_score, roc_curve

from bundle.decisions import (
    MIN_COUNTS,
    OperatingPoint,
    checked_operating_point,
    choose_operating_point,
    choose_operating_points,
)

# Hand-made ROC, scores high to low (positive when score >= threshold), 5 positives and 4 negatives:
#   threshold  0.9  0.8  0.7  0.6  0.5  0.4  0.3  0.2  0.1
#   label       P    P    N    P    P    N    P    N    N
#   TPR        .2   .4   .4   .6   .8   .8   1    1    1
#   FPR        0    0    .25  .25  .25  .5   .5   .75  1
#   Youden J   .2   .4   .15  .35  .55  .3   .5   .25  0     -> 0.5
#   F1        .333 .571  .5  .667  .8  .727 .833 .769 .714   -> 0.3
SCORES = np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2, 0.1])
LABELS = np.array([1, 1, 0, 1, 1, 0, 1, 0, 0])
FEW = {"min_positives": 1, "min_negatives": 1}


def test_decision_youden_on_hand_made_roc() -> None:
    point = choose_operating_point(SCORES, LABELS, "youden", **FEW)
    assert point.threshold == 0.5 and point.rule == "youden" and not point.fallback
    assert (point.n_pos, point.n_neg) == (5, 4)
    assert point.sensitivity == pytest.approx(0.8) and point.specificity == pytest.approx(0.75)


def test_decision_max_f1_on_hand_made_roc() -> None:
    point = choose_operating_point(SCORES, LABELS, "max_f1", **FEW)
    assert point.threshold == 0.3 and point.sensitivity == 1.0 and point.specificity == pytest.approx(0.5)


@pytest.mark.parametrize(("target", "expected"), [(0.8, 0.5), (0.95, 0.3), (0.4, 0.8)])
def test_decision_sensitivity_rule_on_hand_made_roc(target: float, expected: float) -> None:
    point = choose_operating_point(SCORES, LABELS, "sensitivity", target=target, **FEW)
    assert point.threshold == expected and point.target == target and point.sensitivity >= target


def test_decision_sensitivity_095_reaches_its_target_with_the_best_specificity() -> None:
    rng = np.random.default_rng(3)
    labels = np.r_[np.ones(60), np.zeros(140)]
    scores = np.clip(rng.normal(0.35 + 0.3 * labels, 0.15), 0, 1)
    point = choose_operating_point(scores, labels, "sensitivity", target=0.95)
    assert not point.fallback
    sensitivity = (scores[labels == 1] >= point.threshold).mean()
    assert sensitivity >= 0.95 and point.sensitivity == pytest.approx(sensitivity)
    higher = np.unique(scores[scores > point.threshold]).min()  # the next distinct threshold misses the target
    assert (scores[labels == 1] >= higher).mean() < 0.95


def test_decision_rules_agree_with_a_brute_force_walk() -> None:
    rng = np.random.default_rng(0)
    labels = rng.random(300) < 0.3
    scores = np.round(np.clip(rng.normal(0.4 + 0.25 * labels, 0.2), 0, 1), 2)  # rounded: many ties
    fpr, tpr, thresholds = roc_curve(labels, scores, drop_intermediate=False)
    youden = thresholds[1:][np.argmax((tpr - fpr)[1:])]
    candidates = np.unique(scores)[::-1]
    f1 = [f1_score(labels, scores >= t) for t in candidates]
    assert choose_operating_point(scores, labels, "youden").threshold == pytest.approx(youden)
    assert choose_operating_point(scores, labels, "max_f1").threshold == pytest.approx(candidates[np.argmax(f1)])


def test_decision_too_few_positives_falls_back_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    # the detection gate case: one validation image with a box among 50
    labels = np.r_[1, np.zeros(49)]
    scores = np.r_[0.015, np.linspace(0.001, 0.6, 49)]
    with caplog.at_level(logging.WARNING, logger="bundle.decisions"):
        point = choose_operating_point(scores, labels, "youden", default=0.5, name="det_gate")
    assert point.threshold == 0.5 and point.fallback and point.rule == "youden"
    assert (point.n_pos, point.n_neg) == (1, 49)
    assert "1 positives" in point.reason and f"at least {MIN_COUNTS['youden'][0]}" in point.reason
    assert any("det_gate" in r.getMessage() and r.levelno == logging.WARNING for r in caplog.records)
    assert point.to_dict()["fallback"] is True  # and so in the record
    chosen = choose_operating_point(scores, labels, "youden", min_positives=1, name="det_gate")
    assert chosen.threshold == 0.015 and not chosen.fallback  # what the old rule picked


def test_decision_sensitivity_rule_needs_enough_positives_for_its_target() -> None:
    rng = np.random.default_rng(1)
    labels = np.r_[np.ones(15), np.zeros(30)]
    scores = rng.random(45)
    point = choose_operating_point(scores, labels, "sensitivity", target=0.95)
    assert point.fallback and "needs at least 20" in point.reason  # 1 / (1 - 0.95) positives
    assert not choose_operating_point(scores, labels, "sensitivity", target=0.9).fallback


def test_decision_operating_points_per_finding_skip_unknown_labels() -> None:
    rng = np.random.default_rng(2)
    probs = rng.random((80, 2))
    labels = (rng.random((80, 2)) < 0.5).astype(float)
    known = np.ones((80, 2), bool)
    known[:30, 1] = False
    points = choose_operating_points(probs, labels, ["a", "b"], known, rule={"a": "youden", "b": "max_f1"})
    assert points["a"].rule == "youden" and points["b"].rule == "max_f1"
    assert points["a"].n_pos + points["a"].n_neg == 80 and points["b"].n_pos + points["b"].n_neg == 50
    alone = choose_operating_point(probs[30:, 1], labels[30:, 1], "max_f1")
    assert points["b"].threshold == alone.threshold


def test_decision_checked_operating_point_calls_the_chooser_only_with_enough_data() -> None:
    calls = []

    def chooser() -> float:
        calls.append(1)
        return 0.35

    enough = checked_operating_point(chooser, "max_rsna_score", n_pos=12, n_neg=3, min_positives=10)
    assert enough.threshold == 0.35 and not enough.fallback and calls == [1]
    few = checked_operating_point(chooser, "max_rsna_score", n_pos=1, n_neg=3, min_positives=10, default=0.5)
    assert few.threshold == 0.5 and few.fallback and calls == [1]


@pytest.mark.parametrize(
    ("scores", "labels", "rule", "message"),
    [
        ([0.1, np.nan], [0, 1], "youden", "NaN"),
        ([0.1, 0.2], [0, 2], "youden", "labels must be 0 or 1"),
        ([0.1, 0.2], [0, 1], "accuracy", "rule must be one of"),
        ([0.1, 0.2, 0.3], [0, 1], "youden", "3 scores but 2 labels"),
    ],
)
def test_decision_bad_validation_data_is_an_error(scores, labels, rule, message) -> None:
    with pytest.raises(ValueError, match=message):
        choose_operating_point(scores, labels, rule, name="Atelectasis")


def test_decision_operating_point_round_trip_and_checks() -> None:
    point = choose_operating_point(SCORES, LABELS, "youden", chosen_on="2025-01-31", dataset="d.json#validation", **FEW)
    assert OperatingPoint.from_dict(point.to_dict()) == point
    with pytest.raises(ValueError, match="unknown fields"):
        OperatingPoint.from_dict({"threshold": 0.5, "criterion": "f1"}, "findings.Mass")
    with pytest.raises(ValueError, match="in \\[0, 1\\]"):
        OperatingPoint(threshold=1.5)
