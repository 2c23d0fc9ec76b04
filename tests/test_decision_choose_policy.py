"""choose_policy: calibration, then thresholds on the calibrated probabilities, with fallbacks, on a synthetic
validation set."""

from __future__ import annotations

import numpy as np
import pytest

from bundle.decisions import DecisionPolicy, choose_operating_point, choose_policy, logit
from bundle.decisions.arrays import sigmoid

NAMES = ("Effusion", "Mass", "Hernia")


def validation(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    n = 400
    z = rng.normal(0.0, 1.5, (n, 3))
    labels = (rng.random((n, 3)) < sigmoid(z)).astype(float)
    labels[:, 2] = 0
    labels[:4, 2] = 1  # Hernia: 4 positives, below every rule's minimum
    known = np.ones((n, 3), bool)
    known[: n // 2, 1] = False  # Mass graded on half the images
    det_truth = np.zeros(n)
    det_truth[0] = 1  # a single validation box
    return {"logits": 3 * z, "labels": labels, "known": known, "det_gate": rng.random(n), "det_truth": det_truth}


def test_decision_choose_policy_calibrates_then_thresholds_with_fallbacks() -> None:
    v = validation()
    policy = choose_policy(
        NAMES, (128, 128), v["logits"], v["labels"], v["known"],
        gate_probs={"det_gate": v["det_gate"]}, gate_labels={"det_gate": v["det_truth"]},
        cls_rule={"Effusion": "youden", "Mass": "sensitivity", "Hernia": "max_f1"},
        tasks={"det": "lesion", "seg": "anatomy"}, dataset="synthetic#validation",
    )
    effusion = policy.calibration["Effusion"]
    assert effusion.method == "temperature" and effusion.temperature == pytest.approx(3.0, rel=0.2)
    expected = choose_operating_point(effusion.apply(v["logits"][:, 0]), v["labels"][:, 0], "youden")
    assert policy.findings["Effusion"].threshold == expected.threshold  # chosen on calibrated probabilities
    mass = policy.findings["Mass"]
    assert mass.rule == "sensitivity" and mass.sensitivity >= 0.95 and mass.n_pos + mass.n_neg == 200
    hernia = policy.findings["Hernia"]
    assert hernia.fallback and hernia.threshold == 0.5 and policy.calibration["Hernia"].fallback
    assert policy.gates["det_gate"].fallback and policy.gates["det_gate"].n_pos == 1
    assert "anatomy" in policy.gates["seg_gate"].reason and policy.forward_gate_thresholds()["seg_gate"] == 0.0
    assert DecisionPolicy.from_dict(policy.to_dict()) == policy


def test_decision_logit_inverts_sigmoid_and_survives_saturation() -> None:
    z = np.array([-8.0, -1.0, 0.0, 2.5])
    np.testing.assert_allclose(logit(sigmoid(z)), z, atol=1e-6)
    assert np.isfinite(logit(np.array([0.0, 1.0], np.float32))).all()
