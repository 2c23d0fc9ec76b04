"""Calibration: ECE and reliability bins by hand, temperature scaling and isotonic regression on a
miscalibrated synthetic validation set, and the fallback with too few positives."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from sklearn.isotonic import IsotonicRegression

from bundle.decisions import (
    Calibration,
    expected_calibration_error,
    fit_calibration,
    fit_calibrations,
    fit_isotonic,
    reliability_bins,
)
from bundle.decisions.arrays import sigmoid


def overconfident(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Labels drawn from sigmoid(z) and the logits of a model that reports 3 z (three times too sure)."""
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, n)
    labels = (rng.random(n) < sigmoid(z)).astype(float)
    return 3.0 * z, labels


def test_calibration_ece_by_hand() -> None:
    # 5 bins: (0, .2] holds .1 and .2 (mean .15, 1 of 2 positive), (.6, .8] holds .8, (.8, 1] holds .9
    # ECE = 2/4 |.5 - .15| + 1/4 |1 - .8| + 1/4 |1 - .9| = .175 + .05 + .025
    assert expected_calibration_error([0.1, 0.2, 0.8, 0.9], [0, 1, 1, 1], n_bins=5) == pytest.approx(0.25)
    assert expected_calibration_error([0.0, 1.0], [0, 1], n_bins=15) == 0.0
    assert np.isnan(expected_calibration_error([], []))


def test_calibration_reliability_bins_by_hand() -> None:
    bins = reliability_bins([0.1, 0.2, 0.8, 0.9], [0, 1, 1, 1], n_bins=5)
    np.testing.assert_array_equal(bins.count, [2, 0, 0, 1, 1])
    np.testing.assert_allclose(bins.confidence[[0, 3, 4]], [0.15, 0.8, 0.9])
    np.testing.assert_allclose(bins.accuracy[[0, 3, 4]], [0.5, 1.0, 1.0])
    np.testing.assert_allclose(bins.lower, [0, 0.2, 0.4, 0.6, 0.8])
    data = bins.to_dict()
    assert data["confidence"][1] is None and data["count"] == [2, 0, 0, 1, 1]


def test_calibration_temperature_lowers_ece_of_an_overconfident_model() -> None:
    logits, labels = overconfident(4000, seed=0)
    test_logits, test_labels = overconfident(4000, seed=1)
    fitted = fit_calibration(logits, labels, "temperature", name="Effusion")
    assert fitted.method == "temperature" and not fitted.fallback
    assert fitted.temperature == pytest.approx(3.0, rel=0.1)
    before = expected_calibration_error(sigmoid(test_logits), test_labels)
    after = expected_calibration_error(fitted.apply(test_logits), test_labels)
    assert before > 0.08 and after < before / 3
    assert fitted.ece_after < fitted.ece_before  # in-sample figures stored with it
    order = np.argsort(test_logits)
    assert np.all(np.diff(fitted.apply(test_logits)[order]) >= 0)  # monotonic: the ranking is kept


def test_calibration_isotonic_lowers_ece_and_matches_scikit_learn() -> None:
    logits, labels = overconfident(3000, seed=2)
    test_logits, test_labels = overconfident(3000, seed=3)
    fitted = fit_calibration(logits, labels, "isotonic")
    assert fitted.method == "isotonic" and np.all(np.diff(fitted.values) >= 0)
    before = expected_calibration_error(sigmoid(test_logits), test_labels)
    assert expected_calibration_error(fitted.apply(test_logits), test_labels) < before / 2
    reference = IsotonicRegression(out_of_bounds="clip").fit(sigmoid(logits), labels)
    probe = sigmoid(test_logits)
    np.testing.assert_allclose(fitted.apply(test_logits), reference.predict(probe), atol=1e-9)


def test_calibration_pool_adjacent_violators_by_hand() -> None:
    # labels 0 1 0 1 at increasing probabilities: the violating middle pair pools to 0.5
    knots, values = fit_isotonic([0.1, 0.2, 0.3, 0.4], [0, 1, 0, 1])
    assert knots == (0.1, 0.2, 0.3, 0.4) and values == (0.0, 0.5, 0.5, 1.0)


def test_calibration_with_too_few_positives_falls_back(caplog: pytest.LogCaptureFixture) -> None:
    logits = np.r_[np.full(4, 2.0), np.full(50, -1.0)]
    labels = np.r_[np.ones(4), np.zeros(50)]
    with caplog.at_level(logging.WARNING, logger="bundle.decisions"):
        fitted = fit_calibration(logits, labels, "temperature", name="Hernia")
    assert fitted.method == "none" and fitted.fallback and fitted.temperature == 1.0
    assert "4 positives" in fitted.reason
    assert any("Hernia" in r.getMessage() for r in caplog.records)
    np.testing.assert_allclose(fitted.apply(logits), sigmoid(logits))


def test_calibration_per_finding_and_round_trip() -> None:
    a, ya = overconfident(800, seed=4)
    b, yb = overconfident(800, seed=5)
    fitted = fit_calibrations(np.c_[a, b / 3], np.c_[ya, yb], ["a", "b"])
    assert fitted["a"].temperature == pytest.approx(3.0, rel=0.25)
    assert fitted["b"].temperature == pytest.approx(1.0, rel=0.25)  # already calibrated
    for cal in (*fitted.values(), fit_calibration(a, ya, "isotonic")):
        assert Calibration.from_dict(cal.to_dict()) == cal
    with pytest.raises(ValueError, match="temperature must be > 0"):
        Calibration(method="temperature", temperature=0.0)
    with pytest.raises(ValueError, match="method must be one of"):
        fit_calibration(a, ya, "platt")
