"""scripts/lung_report.py: per-image lung scores of inference masks (Dice, HD95, empty, leak below the lungs)."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from bundle.data.datalist import read_datalist
from bundle.data.splits import SPLITS

from .conftest import ROOT, SHARED

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


cv_spec = importlib.util.spec_from_file_location("lung_crossval", ROOT / "scripts" / "lung_crossval.py")
lung_crossval = importlib.util.module_from_spec(cv_spec)
cv_spec.loader.exec_module(lung_crossval)
COVID = SHARED / "data" / "covid"


@pytest.mark.skipif(not (COVID / "metadata.csv").is_file(), reason="shared COVID-19 data not present")
def test_crossval_folds_test_every_masked_patient_once_and_never_train_on_it(tmp_path: Path) -> None:
    datalist = tmp_path / "covid.json"
    prepare = ROOT / "scripts" / "prepare.py"
    subprocess.run([sys.executable, str(prepare), "covid", str(COVID / "metadata.csv"), str(datalist),
                    "--images_dir", str(COVID / "images"), "--masks_dir", str(COVID / "lung_masks")],
                   check=True, capture_output=True, cwd=ROOT)
    folds = lung_crossval.fold_datalists(str(datalist), folds=4, seed=3)
    masked = {(e["patient_id"]) for split in SPLITS for e in read_datalist(datalist)[split] if "mask" in e}
    tested = [e["patient_id"] for f in folds for e in f["testing"]]
    assert set(tested) == masked and all("mask" in e or e["patient_id"] in masked for f in folds for e in f["testing"])
    for fold in folds:
        patients = {name: {e["patient_id"] for e in fold[name]} for name in SPLITS}
        assert not (patients["testing"] & patients["training"]) and not (patients["testing"] & patients["validation"])
        assert not (patients["validation"] & patients["training"]) and patients["validation"]
        assert all(Path(e["image"]).is_absolute() and Path(e["image"]).is_file() for e in fold["training"])
    per_fold = [{e["patient_id"] for e in f["testing"]} for f in folds]
    assert sum(len(p) for p in per_fold) == len(masked)  # each masked patient in one fold's test split only
