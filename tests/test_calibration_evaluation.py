"""Calibration in evaluation: temperature scaling fitted on an overconfident validation set lowers the expected
calibration error on a fresh test set, and the report draws the reliability diagrams from metrics.json."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from bundle.metrics import binary_auroc
from bundle.packaging import read_package
from bundle.reporting import build_report
from bundle.reporting.figures import reliability_figure

from .evaluator_outputs import CLASSES, default_policy, evaluate, evaluator_batch, write_model_file

OVERCONFIDENCE = 3.0  # the classifier reports sigmoid(3 z) for labels drawn with probability sigmoid(z)


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("calibration")
    model = write_model_file(root / "models" / "model.pt", default_policy())
    validation = [evaluator_batch(seed, n=30, overconfidence=OVERCONFIDENCE) for seed in range(10)]
    evaluate(validation, root / "val", model, "validation", choose=True)
    test = [evaluator_batch(seed, n=30, overconfidence=OVERCONFIDENCE) for seed in range(100, 110)]
    return {"root": root, "model": model, "test": test, "report": evaluate(test, root / "test", model)}


def test_calibration_lowers_ece_on_a_fresh_test_set(calibrated: dict) -> None:
    report, metrics = calibrated["report"], calibrated["report"]["metrics"]
    for name in CLASSES:
        fit = read_package(calibrated["model"]).policy.calibration[name]
        assert fit.method == "temperature" and 2.0 < fit.temperature < 4.5  # about the overconfidence
        assert report["calibration"]["findings"][name]["temperature"] == fit.temperature
        before, after = metrics[f"cls/ece_uncalibrated/{name}"], metrics[f"cls/ece_calibrated/{name}"]
        assert after["value"] < before["value"] and before["low"] <= before["value"] <= before["high"]
    macro_before, macro_after = metrics["cls/ece_uncalibrated_macro"], metrics["cls/ece_calibrated_macro"]
    assert macro_after["value"] < 0.6 * macro_before["value"]
    # temperature scaling keeps the ranking: AUROC is that of the raw probabilities
    probs = np.concatenate([b["cls_prob"].numpy() for b in calibrated["test"]])
    labels = np.concatenate([b["cls"].numpy() for b in calibrated["test"]])
    assert metrics["cls/auroc/A"]["value"] == pytest.approx(binary_auroc(probs[:, 0], labels[:, 0]), abs=1e-6)


def test_calibration_reliability_bins_in_metrics_json(calibrated: dict) -> None:
    found = calibrated["report"]["calibration"]["findings"]["B"]
    assert calibrated["report"]["calibration"]["bins"] == 15
    for version in ("uncalibrated", "calibrated"):
        bins = found[f"reliability_{version}"]
        assert sum(bins["count"]) == found["n_pos"] + found["n_neg"] == 300
        assert len(bins["lower"]) == len(bins["confidence"]) == 15
    # overconfident: the outer bins hold more of the uncalibrated probabilities than of the calibrated ones
    before, after = found["reliability_uncalibrated"]["count"], found["reliability_calibrated"]["count"]
    assert before[0] + before[-1] > after[0] + after[-1]


def test_calibration_reliability_figure_written(calibrated: dict, tmp_path: Path) -> None:
    report = calibrated["report"]
    png = reliability_figure(report["calibration"], report["metrics"], tmp_path, "test")
    assert png == tmp_path / "test_reliability.png" and png.stat().st_size > 5000
    paths = build_report([calibrated["root"] / "test" / "metrics.json"], tmp_path / "report")
    md = paths["markdown"].read_text()
    assert "test_reliability.png" in md and "ECE calibrated" in md
    assert (tmp_path / "report" / "test_reliability.png").is_file()
