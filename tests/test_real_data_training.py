"""One short training run on real chest X-rays: NIH thumbnails with RSNA boxes, prepared and trained by the CLIs."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bundle.packaging import ModelPackage

from .conftest import ROOT, SHARED

NIH = SHARED / "data" / "nih1000"
pytestmark = pytest.mark.skipif(not NIH.is_dir(), reason=f"real samples not found at {NIH}")


def _run(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    result = subprocess.run([sys.executable, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


def test_training_on_prepared_nih_rsna_datalist(tmp_path: Path) -> None:
    with open(NIH / "rsna" / "patient_to_nih.csv", newline="") as handle:
        in_rsna = {row["Image Index"] for row in csv.DictReader(handle)}
    with open(NIH / "Data_Entry_2017.csv", newline="") as handle:
        rows = list(csv.reader(handle))
    subset = tmp_path / "Data_Entry_2017.csv"  # 80 images that carry RSNA labels, in the official format
    with open(subset, "w", newline="") as handle:
        csv.writer(handle).writerows([rows[0], *[r for r in rows[1:] if r[0] in in_rsna][:80]])
    datalist = tmp_path / "nih_rsna.json"
    _run(
        "scripts/prepare.py", "nih", "--data_entry", str(subset), "--images_dir", str(NIH / "images"),
        "--rsna_labels", str(NIH / "rsna" / "stage_2_train_labels.csv"), "--rsna_map",
        str(NIH / "rsna" / "patient_to_nih.csv"), "--fractions", "0.75,0.25,0", "--output", str(datalist),
    )
    content = json.loads(datalist.read_text())
    assert content["box_classes"] == ["opacity"] and any(e["boxes"] for e in content["training"])
    ckpt = tmp_path / "models"
    _run(
        "-m", "monai.bundle", "run", "training", "--config_file", "configs/train.json", "--datalist_file",
        str(datalist), "--epochs", "1", "--val_interval", "1", "--image_size", "[64,64]", "--batch_size", "16",
        "--network_def#backbone", "resnet18", "--ckpt_dir", str(ckpt), "--output_dir", str(tmp_path / "eval"),
    )
    saved = torch.load(ckpt / "model.pt", map_location="cpu", weights_only=True)
    state, package = saved["model"], ModelPackage.from_state(saved["bundle"])
    assert package.network_args["backbone"] == "resnet18"
    package.network().load_state_dict(state)  # strict: the whole trained model, rebuilt from what the file says
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
