"""scripts/lung_report.py: per-image lung scores of inference masks (Dice, HD95, empty, leak below the lungs)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bundle.data.datalist import read_datalist
from bundle.data.sources import stem
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


def _fake_runs(calls: list[tuple[str, str]]):
    """A stand-in for training and ``run inference``: inference 'predicts' each test image's true mask."""

    def run(command: list[str], log: Path, **_: object) -> float:
        kind = command[command.index("run") + 1]
        fold_dir = Path(log).parent
        calls.append((kind, fold_dir.name))
        if kind == "inference":
            out = Path(command[command.index("--output_dir") + 1])
            out.mkdir(parents=True, exist_ok=True)
            for entry in read_datalist(fold_dir / "datalist.json")["testing"]:
                (out / f"{stem(entry['image'])}_mask.png").write_bytes(Path(entry["mask"]).read_bytes())
        return 1.0

    return run


def test_crossval_only_runs_its_folds_and_a_later_pass_pools_every_fold(tmp_path: Path, monkeypatch) -> None:
    entries = []
    for i in range(10):
        image, mask = tmp_path / f"cxr{i}.png", tmp_path / f"cxr{i}_lungs.png"
        Image.fromarray(np.full((100, 80), 40 + i, np.uint8)).save(image)
        Image.fromarray(_lungs().astype(np.uint8) * 255).save(mask)
        entries.append({"image": image.name, "mask": mask.name, "patient_id": f"p{i}"})
    datalist = tmp_path / "lungs.json"
    datalist.write_text(json.dumps({"training": entries, "validation": [], "testing": []}))
    calls: list[tuple[str, str]] = []
    monkeypatch.setattr(lung_crossval, "run_logged", _fake_runs(calls))
    out = tmp_path / "cv"
    lung_crossval.main(str(datalist), str(out), folds=5, only=[1, 3], overrides={"seed": 1})
    assert calls == [("training", "fold_1"), ("inference", "fold_1"), ("training", "fold_3"), ("inference", "fold_3")]
    partial = json.loads((out / "folds_1_3" / "crossval.json").read_text())
    assert [f["fold"] for f in partial["folds"]] == [1, 3] and partial["pooled"]["images"] == 4
    assert not (out / "crossval.json").exists()
    calls.clear()
    lung_crossval.main(str(datalist), str(out), folds=5, train=False)
    assert [kind for kind, _ in calls] == ["inference"] * 5  # scored again, none retrained
    summary = json.loads((out / "crossval.json").read_text())
    assert [f["training_s"] for f in summary["folds"]] == [None, 1.0, None, 1.0, None]  # as the trainings recorded
    assert [f["training_overrides"] for f in summary["folds"]] == [None, {"seed": 1}, None, {"seed": 1}, None]
    pooled = summary["pooled"]
    assert pooled["images"] == 10 and pooled["patients"] == 10 and pooled["dice"]["value"] == pytest.approx(1.0)
