"""MetricsReport on a stand-in evaluator, the decision policy stored in the model file, and the report built from
its files."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from bundle.packaging import read_package

from .conftest import ROOT
from .evaluator_outputs import default_policy, evaluate, evaluator_batch, write_model_file


@pytest.fixture(scope="module")
def evaluated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("evaluation")
    model = write_model_file(root / "models" / "model.pt", default_policy())
    evaluate([evaluator_batch(s) for s in range(3)], root / "val", model, "validation", choose=True)
    evaluate([evaluator_batch(s) for s in range(3, 6)], root / "test", model)
    return {"root": root, "model": model, "val": root / "val", "test": root / "test"}


def test_metrics_json_has_every_metric_with_ci(evaluated: dict[str, Path]) -> None:
    report = json.loads((evaluated["test"] / "metrics.json").read_text())
    assert report["checkpoint"]["sha256"] == hashlib.sha256(evaluated["model"].read_bytes()).hexdigest()
    assert report["dataset"]["images"] == 18 and report["dataset"]["patients"] == 9
    assert report["bootstrap"]["resamples"] == 50
    for name in ("cls/auroc_macro", "cls/f1_micro", "cls/auroc/A", "cls/ece_calibrated/A", "cls/ece_uncalibrated_macro",
                 "seg/dice_mean", "seg/dice_positive_gated", "det/rsna_map", "det/rsna_map_gated", "det/coco_map",
                 "det/coco_ap50_gated"):
        entry = report["metrics"][name]
        assert entry["low"] <= entry["value"] <= entry["high"], name
    # gates open exactly on the images with truth: gating removes the false alarms on the others
    assert report["metrics"]["det/rsna_map_gated"]["value"] > report["metrics"]["det/rsna_map"]["value"]


def test_decision_policy_chosen_on_validation_is_reused(evaluated: dict[str, Path]) -> None:
    stored = read_package(evaluated["model"]).policy
    assert all(p.dataset == "datalist#validation" for p in stored.findings.values())
    val = json.loads((evaluated["val"] / "metrics.json").read_text())
    test = json.loads((evaluated["test"] / "metrics.json").read_text())
    assert val["policy"]["chosen_on_this_split"] and val["policy"]["written_to"] == str(evaluated["model"])
    assert test["policy"]["source"] == str(evaluated["model"]) and not test["policy"]["chosen_on_this_split"]
    assert test["policy"]["settings"] == json.loads(json.dumps(stored.to_dict()))
    # 9 positive images per head in 18: every rule keeps its default, and both runs say so
    assert val["policy"]["fallbacks"] == test["policy"]["fallbacks"] and "gates/det_gate" in test["policy"]["fallbacks"]


def test_report_renders_tables_and_figures(evaluated: dict[str, Path], tmp_path: Path) -> None:
    val, test = evaluated["val"] / "metrics.json", evaluated["test"] / "metrics.json"
    result = subprocess.run(
        [sys.executable, "scripts/report.py", "build", str(test), str(val), "--out", str(tmp_path),
         "--table1", f"bigbang={val},multichexnet={test}", "--table4", f"multichexnet={test}"],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    md, page = (tmp_path / "report.md").read_text(), (tmp_path / "report.html").read_text()
    for png in ("test_roc.png", "test_pr.png", "test_reliability.png", "test_gallery.png", "val_gallery.png"):
        assert (tmp_path / png).stat().st_size > 1000
    assert md.count("data:image/png") == 0 and page.count("data:image/png;base64,") == 8
    assert "Decision policy: " in md and "Defaults kept instead of choices: findings/A" in md
    metrics = json.loads(test.read_text())["metrics"]
    auroc = metrics["cls/auroc_macro"]
    cell = f"{auroc['value']:.3f} ({auroc['low']:.3f}, {auroc['high']:.3f})"
    assert cell in md and cell in page
    assert "Table 1." in md and "| Single-task classifier | — |" in md
    assert "Single-task classifier: not provided." in md
    assert "Table 3." in md and "| A |" in md  # Table 4 has a row per finding
