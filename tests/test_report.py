"""MetricsReport on a stand-in evaluator, thresholds stored with the model, and the report built from its files."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine
from monai.data import MetaTensor

from bundle.handlers.metrics_report import MetricsReport

from .conftest import ROOT

CLASSES = ["A", "B", "C"]


def _batch(seed: int, size: int = 32, n: int = 6) -> dict:
    """An evaluator output with every head: 3 findings, a square mask and box on half of the images."""
    rng = np.random.default_rng(seed)
    cls = torch.tensor(rng.random((n, 3)) < 0.5).float()
    mask = torch.zeros(n, 1, size, size)
    boxes, det = [], []
    for i in range(n):
        if i % 2 == 0:
            mask[i, 0, 4:16, 6:20] = 1
            boxes.append(torch.tensor([[4.0, 6.0, 16.0, 20.0]]))
            found = torch.tensor([[5.0, 6.0, 16.0, 19.0], [20.0, 20.0, 28.0, 28.0]])
        else:
            boxes.append(torch.zeros(0, 4))
            found = torch.tensor([[20.0, 20.0, 28.0, 28.0]])
        scores = torch.tensor([0.9, 0.3][: len(found)])
        det.append({"boxes": found, "scores": scores, "labels": torch.zeros(len(found))})
    seg_prob = (mask * 0.8 + torch.rand(n, 1, size, size) * 0.3).clamp(0, 1)
    image = MetaTensor(torch.rand(n, 1, size, size), meta={"filename_or_obj": [f"img{seed}_{i}.png" for i in range(n)]})
    has_truth = torch.tensor([i % 2 == 0 for i in range(n)])
    return {
        "image": image,
        "patient_id": [f"P{seed}_{i // 2}" for i in range(n)],
        "cls_prob": (0.4 * cls + torch.rand(n, 3) * 0.6),
        "cls": cls,
        "cls_known": torch.ones(n, 3, dtype=torch.bool),
        "has_cls": torch.ones(n, dtype=torch.bool),
        "seg_prob": seg_prob,
        "mask": mask,
        "has_seg": torch.ones(n, dtype=torch.bool),
        "det": det,
        "boxes": boxes,
        "box_labels": [torch.zeros(len(b), dtype=torch.long) for b in boxes],
        "has_det": torch.ones(n, dtype=torch.bool),
        "det_gate_prob": has_truth.float() * 0.6 + 0.2,
        "seg_gate_prob": has_truth.float() * 0.6 + 0.2,
    }


def _evaluate(out_dir: Path, ckpt_dir: Path, split: str, choose: bool) -> dict:
    engine = Engine(lambda engine, batch: batch)
    MetricsReport(
        out_dir, CLASSES, datalist=None, split=split, checkpoint=ckpt_dir / "model.pt",
        thresholds_file=ckpt_dir / "thresholds.json", choose_thresholds=choose, n_resamples=50, gallery_size=4,
        gallery_side=16,
    ).attach(engine)
    engine.run([_batch(s) for s in range(3)])
    return json.loads((out_dir / "metrics.json").read_text())


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("evaluation")
    ckpt = root / "models"
    ckpt.mkdir()
    (ckpt / "model.pt").write_bytes(b"weights")
    _evaluate(root / "val", ckpt, "validation", choose=True)
    _evaluate(root / "test", ckpt, "testing", choose=False)
    return {"root": root, "ckpt": ckpt, "val": root / "val", "test": root / "test"}


def test_metrics_json_has_every_metric_with_ci(evaluated: dict[str, Path]) -> None:
    report = json.loads((evaluated["test"] / "metrics.json").read_text())
    assert report["checkpoint"]["sha256"] == hashlib.sha256(b"weights").hexdigest()
    assert report["dataset"]["images"] == 18 and report["dataset"]["patients"] == 9
    assert report["bootstrap"]["resamples"] == 50
    for name in ("cls/auroc_macro", "cls/f1_micro", "cls/auroc/A", "seg/dice_mean", "seg/dice_positive_gated",
                 "det/rsna_map", "det/rsna_map_gated", "det/coco_map", "det/coco_ap50_gated"):
        entry = report["metrics"][name]
        assert entry["low"] <= entry["value"] <= entry["high"], name
    # gates open exactly on the images with truth: gating removes the false alarms on the others
    assert report["metrics"]["det/rsna_map_gated"]["value"] > report["metrics"]["det/rsna_map"]["value"]


def test_thresholds_chosen_on_validation_are_reused(evaluated: dict[str, Path]) -> None:
    stored = json.loads((evaluated["ckpt"] / "thresholds.json").read_text())
    assert stored["classification"]["names"] == CLASSES and stored["chosen_on"]["split"] == "validation"
    test = json.loads((evaluated["test"] / "metrics.json").read_text())
    assert test["thresholds"]["source"] == str(evaluated["ckpt"] / "thresholds.json")
    assert list(test["thresholds"]["classification"].values()) == stored["classification"]["thresholds"]
    assert test["thresholds"]["segmentation"]["min_area"] == stored["segmentation"]["min_area"]
    with pytest.raises(ValueError, match="validation"):
        MetricsReport(evaluated["root"], CLASSES, split="testing", thresholds_file="t.json", choose_thresholds=True)


def test_report_renders_tables_and_figures(evaluated: dict[str, Path], tmp_path: Path) -> None:
    val, test = evaluated["val"] / "metrics.json", evaluated["test"] / "metrics.json"
    result = subprocess.run(
        [sys.executable, "scripts/report.py", "build", str(test), str(val), "--out", str(tmp_path),
         "--table1", f"bigbang={val},multichexnet={test}", "--table4", f"multichexnet={test}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    md, page = (tmp_path / "report.md").read_text(), (tmp_path / "report.html").read_text()
    for png in ("test_roc.png", "test_pr.png", "test_calibration.png", "test_gallery.png", "val_gallery.png"):
        assert (tmp_path / png).stat().st_size > 1000
    assert md.count("data:image/png") == 0 and page.count("data:image/png;base64,") == 8
    metrics = json.loads(test.read_text())["metrics"]
    auroc = metrics["cls/auroc_macro"]
    cell = f"{auroc['value']:.3f} ({auroc['low']:.3f}, {auroc['high']:.3f})"
    assert cell in md and cell in page
    assert "Table 1." in md and "| Single-task classifier | — |" in md
    assert "Single-task classifier: not provided." in md
    assert "Table 3." in md and "| A |" in md  # Table 4 has a row per finding
