"""scripts/lung_report.py: per-image lung scores of inference masks (Dice, HD95, empty, leak below the lungs)."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from .conftest import ROOT

spec = importlib.util.spec_from_file_location("lung_report", ROOT / "scripts" / "lung_report.py")
lung_report = importlib.util.module_from_spec(spec)
spec.loader.exec_module(lung_report)


def _lungs() -> np.ndarray:
    truth = np.zeros((100, 80), bool)
    truth[10:60, 10:35] = truth[10:60, 45:70] = True
    return truth


def test_score_image_counts_pixels_below_the_lungs_and_hd95() -> None:
    truth = _lungs()
    leak = truth.copy()
    leak[80:90, 50:60] = True  # a blob 20 rows below the lungs' lowest row (59)
    score = lung_report.score_image(leak, truth)
    assert score["pixels_below_lungs"] == 100 and not score["empty"]
    assert score["dice"] == pytest.approx(2 * truth.sum() / (leak.sum() + truth.sum()))
    assert score["hd95_px"] > 0 and lung_report.score_image(truth, truth)["hd95_px"] == 0


def test_score_image_flags_empty_prediction_and_refuses_other_size() -> None:
    truth = _lungs()
    empty = lung_report.score_image(np.zeros_like(truth), truth)
    assert empty["empty"] and empty["dice"] == 0 and np.isnan(empty["hd95_px"])
    with pytest.raises(ValueError, match=r"prediction is \(40, 50\) but the true mask is \(80, 100\)"):
        lung_report.score_image(np.zeros((50, 40), bool), truth)
