"""Saliency metrics (CC, KL, SIM, NSS, AUC-Judd) against hand-computed values on tiny maps, their patient-bootstrap
intervals and Ignite wrapper, and the centre-bias and mean-gaze baselines."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from bundle.data.gaze import center_bias_map, fixation_map, gaze_map, mean_gaze_map, save_saliency_map
from bundle.metrics.saliency import (
    SaliencyMetric, auc_judd, cc, kl_divergence, nss, saliency_intervals, saliency_scores, similarity,
)


def test_saliency_cc_hand_value_identity_and_negation() -> None:
    pred, truth = np.array([[1.0, 2.0], [3.0, 4.0]]), np.array([[1.0, 3.0], [2.0, 4.0]])
    # deviations (-1.5, -0.5, 0.5, 1.5) and (-1.5, 0.5, -0.5, 1.5): products sum to 4, squares to 5 and 5
    assert cc(pred, truth) == pytest.approx(4 / 5)
    assert cc(pred, pred) == pytest.approx(1.0)
    assert cc(pred, -pred) == pytest.approx(-1.0)
    assert math.isnan(cc(np.ones((2, 2)), truth))


def test_saliency_kl_hand_value_zero_for_identical_and_benchmark_epsilon() -> None:
    pred, truth = np.array([2.0, 2.0]), np.array([1.0, 3.0])  # P = (1/2, 1/2), Q = (1/4, 3/4)
    assert kl_divergence(pred, truth) == pytest.approx(0.25 * math.log(0.5) + 0.75 * math.log(1.5))
    assert kl_divergence(truth, truth) == pytest.approx(0.0, abs=1e-12)
    # all truth mass where pred has none: log(eps + 1 / eps) with MATLAB's eps = 2^-52
    assert kl_divergence(np.array([0.0, 1.0]), np.array([1.0, 0.0])) == pytest.approx(52 * math.log(2))
    with pytest.raises(ValueError, match="non-negative"):
        kl_divergence(np.array([-1.0, 2.0]), truth)


def test_saliency_sim_hand_value_identical_and_disjoint() -> None:
    pred, truth = np.array([1.0, 1.0, 0.0, 0.0]), np.array([0.0, 1.0, 1.0, 0.0])
    assert similarity(pred, truth) == pytest.approx(0.5)  # min of (.5, .5, 0, 0) and (0, .5, .5, 0)
    assert similarity(7 * truth, truth) == pytest.approx(1.0)
    assert similarity(pred, np.array([0.0, 0.0, 1.0, 3.0])) == pytest.approx(0.0)


def test_nss_of_perfect_map_and_hand_value() -> None:
    fixations = np.zeros((10, 10), dtype=bool)
    fixations[3, 7] = True
    # the fixation map itself: mean 0.01, std (n - 1) sqrt((0.99^2 + 99 * 0.01^2) / 99) = 0.1, NSS = 0.99 / 0.1
    assert nss(fixations.astype(float), fixations) == pytest.approx(9.9)
    pred = np.array([[0.0, 0.0], [0.0, 4.0]])  # mean 1, std sqrt(12 / 3) = 2
    assert nss(pred, np.array([[False, False], [False, True]])) == pytest.approx(1.5)
    assert nss(pred, np.array([[True, False], [False, False]])) == pytest.approx(-0.5)
    with pytest.raises(ValueError, match="no fixated pixel"):
        nss(pred, np.zeros((2, 2), dtype=bool))


def test_saliency_auc_judd_perfect_random_and_hand_value() -> None:
    rng = np.random.default_rng(0)
    fixations = np.zeros((100, 100), dtype=bool)
    fixations[rng.integers(0, 100, 500), rng.integers(0, 100, 500)] = True
    ranked = rng.random((100, 100)) + 2 * fixations  # every fixated pixel above every other
    assert auc_judd(ranked, fixations) == pytest.approx(1.0)
    assert abs(auc_judd(rng.random((100, 100)), fixations) - 0.5) < 0.05
    # fixated 0.4 and 0.35, not fixated 0.1 and 0.8: thresholds 0.4 -> (FPR 1/2, TPR 1/2), 0.35 -> (1/2, 1);
    # trapezoids (0,0)-(.5,.5): 0.125, (.5,1)-(1,1): 0.5
    pred = np.array([0.1, 0.4, 0.35, 0.8])
    assert auc_judd(pred, np.array([False, True, True, False])) == pytest.approx(0.625)


def test_saliency_metrics_refuse_maps_of_different_shapes() -> None:
    with pytest.raises(ValueError, match=r"pred has shape \(2, 2\), truth has \(3, 3\)"):
        cc(np.ones((2, 2)), np.ones((3, 3)))


def test_saliency_intervals_bootstrap_by_patient_and_skip_nan() -> None:
    scores = {"cc": np.array([1.0, 1.0, 0.0, 0.0]), "nss": np.array([np.nan, 2.0, 4.0, 4.0])}
    intervals = saliency_intervals(scores, ["a", "a", "b", "b"], n_resamples=200)
    assert intervals["cc"].value == pytest.approx(0.5) and intervals["nss"].value == pytest.approx(10 / 3)
    # resampling whole patients: a resample holds 0, 2 or 4 images of patient a, so CC is 0, 0.5 or 1 only
    assert intervals["cc"].low == pytest.approx(0.0) and intervals["cc"].high == pytest.approx(1.0)
    one = saliency_intervals({"cc": np.array([0.2, 0.4])}, ["p", "p"], n_resamples=50)["cc"]
    assert one.low == pytest.approx(0.3) and one.high == pytest.approx(0.3)
    with pytest.raises(ValueError, match="2 cc scores but 3 patient ids"):
        saliency_intervals({"cc": np.zeros(2)}, ["a", "b", "c"])


def test_saliency_scores_give_distribution_and_location_metrics() -> None:
    truth = np.array([[0.0, 1.0], [1.0, 2.0]])
    fixations = truth > 1
    scores = saliency_scores([truth, truth.T], truths=[truth, truth], fixations=[fixations, fixations])
    assert sorted(scores) == ["auc_judd", "cc", "kl", "nss", "sim"]
    assert scores["cc"][0] == pytest.approx(1.0) and scores["sim"][1] == pytest.approx(1.0)
    assert sorted(saliency_scores([truth], fixations=[fixations])) == ["auc_judd", "nss"]
    with pytest.raises(ValueError, match="give truths"):
        saliency_scores([truth])


def test_saliency_ignite_metric_scores_flagged_samples() -> None:
    rng = np.random.default_rng(1)
    pred, truth = rng.random((3, 1, 8, 6)), rng.random((3, 1, 8, 6))
    metric = SaliencyMetric("cc")
    metric.reset()
    metric.update((torch.as_tensor(pred), torch.as_tensor(truth), torch.tensor([True, False, True])))
    expected = np.mean([np.corrcoef(pred[i].ravel(), truth[i].ravel())[0, 1] for i in (0, 2)])
    assert metric.compute() == pytest.approx(expected)
    with pytest.raises(ValueError, match="metric must be one of"):
        SaliencyMetric("nss")  # type: ignore[arg-type]


def test_saliency_center_baseline_scores_below_the_fixations_own_map() -> None:
    size = (64, 48)
    rng = np.random.default_rng(2)
    x, y = rng.normal(14, 3, 40).clip(0, 63), rng.normal(12, 3, 40).clip(0, 47)  # an upper-left cluster
    fixated = fixation_map(x, y, size)
    own = gaze_map(x, y, 1.0, 3.0, 3.0, size)
    center = center_bias_map(size)
    assert center.sum() == pytest.approx(1.0)
    np.testing.assert_allclose(center[31:33, 23:25], center.max())  # the four pixels around the centre (32, 24)
    assert nss(own, fixated) > 2 and nss(center, fixated) < nss(own, fixated)
    assert auc_judd(center, fixated) < auc_judd(own, fixated)


def test_saliency_mean_gaze_baseline_averages_resized_maps(tmp_path: Path) -> None:
    left, right = np.zeros((4, 2)), np.zeros((4, 2))
    left[0, :], right[3, :] = 1.0, 3.0  # (W, H) = (4, 2): mass in the first / last column
    paths = [save_saliency_map(left, tmp_path / "a.npy"), save_saliency_map(right, tmp_path / "b.npy")]
    mean = mean_gaze_map(paths, (4, 2))
    np.testing.assert_allclose(mean[:, 0], [0.25, 0, 0, 0.25])
    resized = mean_gaze_map(paths, (8, 4))
    assert resized.shape == (8, 4) and resized.sum() == pytest.approx(1.0)
    assert resized[:2].sum() == pytest.approx(resized[-2:].sum())
    with pytest.raises(ValueError, match="at least one"):
        mean_gaze_map([], (4, 2))
