"""The patient-level bootstrap: intervals, grouping by patient, reproducibility."""

from __future__ import annotations

import numpy as np
import pytest

from bundle.metrics.bootstrap import bootstrap_ci, bootstrap_metrics, patient_groups, resample_indices


def _accuracy_data(n_patients: int, seed: int = 0) -> tuple[np.ndarray, list[str]]:
    rng = np.random.default_rng(seed)
    correct = (rng.random(2 * n_patients) < 0.7).astype(float)
    patients = [f"P{i // 2}" for i in range(2 * n_patients)]  # two images per patient
    return correct, patients


def test_interval_contains_value_and_narrows_with_more_patients() -> None:
    widths = []
    for n in (20, 500):
        correct, patients = _accuracy_data(n)
        value, low, high = bootstrap_ci(lambda idx: correct[idx].mean(), patients, n_resamples=300, seed=1)
        assert value == pytest.approx(correct.mean())
        assert low <= value <= high
        widths.append(high - low)
    assert widths[1] < widths[0] / 2


def test_patients_are_resampled_whole() -> None:
    patients = ["A", "B", "A", "C", "B", "A"]
    groups = patient_groups(patients)
    assert [g.tolist() for g in groups] == [[0, 2, 5], [1, 4], [3]]
    for idx in resample_indices(groups, 50, seed=0):
        drawn = [patients[i] for i in idx]
        for p in set(drawn):  # every draw of a patient brings all of its images
            assert drawn.count(p) % patients.count(p) == 0
        assert len({patients[i] for i in idx}) <= 3


def test_grouping_changes_the_interval() -> None:
    # every patient has one image scoring 0 and one scoring 1: resampling whole patients keeps the mean at
    # exactly 0.5, resampling images one by one does not
    values = np.tile([0.0, 1.0], 20)
    patients = [f"P{i // 2}" for i in range(40)]
    assert bootstrap_ci(lambda idx: values[idx].mean(), patients, n_resamples=50) == (0.5, 0.5, 0.5)
    by_image = bootstrap_ci(lambda idx: values[idx].mean(), [str(i) for i in range(40)], n_resamples=50)
    assert by_image.low < 0.5 < by_image.high


def test_seeded_and_nan_aware() -> None:
    correct, patients = _accuracy_data(30)
    metric = lambda idx: correct[idx].mean()  # noqa: E731
    assert bootstrap_ci(metric, patients, 100, seed=3) == bootstrap_ci(metric, patients, 100, seed=3)
    assert bootstrap_ci(metric, patients, 100, seed=3) != bootstrap_ci(metric, patients, 100, seed=4)
    # a metric undefined on some resamples (NaN there) keeps an interval from the others
    rare = np.zeros(60)
    rare[0] = 1
    got = bootstrap_metrics(lambda idx: {"m": rare[idx].mean() if rare[idx].any() else np.nan}, patients, 200)
    assert np.isfinite(got["m"].low) and got["m"].low <= got["m"].value <= got["m"].high
    never = bootstrap_ci(lambda idx: float("nan"), patients, 20)
    assert all(np.isnan(v) for v in never)
