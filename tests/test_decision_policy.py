"""DecisionPolicy: JSON round trip, atomic save, legacy thresholds.json, overrides, and clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bundle.decisions import (
    BoxPostprocessing,
    DecisionPolicy,
    MaskPostprocessing,
    decide,
    fit_calibration,
)
from bundle.decisions.operating_points import choose_operating_point
from bundle.packaging import inference_policy

NAMES = ("Atelectasis", "Effusion", "Mass")


def chosen_policy() -> DecisionPolicy:
    rng = np.random.default_rng(0)
    labels = (rng.random(200) < 0.4).astype(float)
    logits = 3 * rng.normal(labels - 0.5, 1.0)
    point = choose_operating_point(1 / (1 + np.exp(-logits)), labels, "youden", chosen_on="2025-02-01")
    base = DecisionPolicy.default(NAMES, (128, 128), tasks={"det": "lesion", "seg": "anatomy"})
    return DecisionPolicy(
        class_names=NAMES, image_size=(128, 128), det_class_names=("opacity",),
        findings={**base.findings, "Effusion": point}, gates={**base.gates, "det_gate": point},
        calibration={"Effusion": fit_calibration(logits, labels, "temperature"),
                     "Mass": fit_calibration(logits, labels, "isotonic")},
        tasks={"det": "lesion", "seg": "anatomy"},
        mask=MaskPostprocessing(fill_holes=True, min_area_fraction=0.001, keep_largest=2),
        boxes=BoxPostprocessing(nms_iou=0.4, max_boxes=5), model_sha256="ab" * 32,
    )


def test_decision_policy_json_round_trip(tmp_path: Path) -> None:
    policy = chosen_policy()
    assert DecisionPolicy.from_dict(json.loads(json.dumps(policy.to_dict()))) == policy
    path = policy.save(tmp_path / "models" / "decisions.json")
    loaded = DecisionPolicy.load(path)
    assert loaded == policy and loaded.source == str(path)
    assert sorted(p.name for p in path.parent.iterdir()) == ["decisions.json"]  # no temporary file left
    assert json.loads(path.read_text())["version"] == 1


def test_decision_policy_fills_identity_calibration_and_orders_findings() -> None:
    policy = chosen_policy()
    assert list(policy.findings) == list(NAMES) and list(policy.calibration) == list(NAMES)
    assert policy.calibration["Atelectasis"].method == "none"


def test_decision_policy_gates_and_forward_thresholds() -> None:
    policy = chosen_policy()
    assert policy.gated("det_gate") and not policy.gated("seg_gate")
    thresholds = policy.forward_gate_thresholds()
    assert thresholds == {"det_gate": policy.gates["det_gate"].threshold, "seg_gate": 0.0}


def test_decision_policy_reads_legacy_thresholds_json(tmp_path: Path) -> None:
    legacy = {  # the layout MetricsReport writes with choose_thresholds
        "classification": {"names": list(NAMES), "thresholds": [0.3, 0.45, 0.6], "criterion": "f1"},
        "segmentation": {"threshold": 0.4, "min_area": 50, "criterion": "mean per-image Dice"},
        "gates": {"det_gate": 0.015, "seg_gate": 0.62, "criterion": "youden"},
        "detection": {"box_score": 0.35, "criterion": "RSNA challenge score"},
        "chosen_on": {"datalist": "datalist.json", "split": "validation"},
        "checkpoint_sha256": "cd" * 32,
    }
    path = tmp_path / "thresholds.json"
    path.write_text(json.dumps(legacy))
    policy = DecisionPolicy.from_thresholds_json(path, image_size=(128, 128))
    assert [policy.findings[n].threshold for n in NAMES] == [0.3, 0.45, 0.6]
    assert {p.rule for p in policy.findings.values()} == {"max_f1"}
    assert policy.gates["det_gate"].threshold == 0.015 and policy.gates["seg_gate"].rule == "youden"
    assert policy.box_score.threshold == 0.35 and policy.box_score.rule == "max_rsna_score"
    assert policy.mask_threshold.threshold == 0.4 and policy.mask_threshold.rule == "max_mean_dice"
    assert policy.mask.min_area((128, 128)) == 50 and policy.mask.min_area((256, 256)) == 200
    assert policy.model_sha256 == "cd" * 32 and policy.findings["Mass"].dataset == "datalist.json#validation"
    assert "no validation counts" in policy.gates["det_gate"].reason
    heads = {"cls": np.array([-0.5, 0.0, 0.0]), "det_gate": np.array([-3.0]), "seg_gate": np.array([0.0])}
    decision = decide(heads, policy, (256, 256))
    assert [decision.findings[n].positive for n in NAMES] == [True, True, False]  # 0.378, 0.5, 0.5
    assert decision.gates["det_gate"].open and not decision.gates["seg_gate"].open  # 0.047 >= 0.015; 0.5 < 0.62


def test_decision_policy_legacy_file_without_gates_keeps_defaults(tmp_path: Path) -> None:
    path = tmp_path / "thresholds.json"
    path.write_text(json.dumps({
        "classification": {"names": ["a"], "thresholds": [0.4], "criterion": "youden"},
        "segmentation": {"threshold": 0.5, "min_area": 0},
    }))
    policy = DecisionPolicy.from_thresholds_json(path, (64, 64))
    assert policy.gates["det_gate"].threshold == 0.5 and policy.gates["det_gate"].fallback
    assert policy.box_score.fallback


def test_decision_policy_override_is_recorded() -> None:
    policy = chosen_policy().override(findings={"Mass": 0.9}, gates={"seg_gate": 0.2}, box_score=0.7)
    assert policy.findings["Mass"].threshold == 0.9 and policy.findings["Mass"].rule == "override"
    assert policy.gates["seg_gate"].rule == "override" and policy.box_score.threshold == 0.7
    assert policy.findings["Effusion"].rule == "youden"
    with pytest.raises(ValueError, match="unknown findings \\['Nodule'\\]"):
        policy.override(findings={"Nodule": 0.5})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"version": 2}, "version 2; this code reads version 1"),
        ({"format": "something else"}, "not a decision policy"),
        ({"thresholds": {}}, "unknown fields \\['thresholds'\\]"),
        ({"class_names": ["Atelectasis", "Effusion"]}, "class_names are"),
        ({"tasks": {"det": "lesion", "seg": "organ"}}, "tasks must map"),
    ],
)
def test_decision_policy_bad_file_is_a_clear_error(tmp_path: Path, change: dict, message: str) -> None:
    path = tmp_path / "decisions.json"
    path.write_text(json.dumps({**chosen_policy().to_dict(), **change}))
    with pytest.raises(ValueError, match=message) as err:
        DecisionPolicy.load(path)
    assert str(path) in str(err.value)


def test_decision_policy_missing_or_broken_file(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no decision policy"):
        DecisionPolicy.load(tmp_path / "absent.json")
    broken = tmp_path / "broken.json"
    broken.write_text("{")
    with pytest.raises(ValueError, match="not valid JSON"):
        DecisionPolicy.load(broken)
    legacy = tmp_path / "thresholds.json"
    legacy.write_text(json.dumps({"classification": {}}))
    with pytest.raises(ValueError, match="not a thresholds.json"):
        DecisionPolicy.from_thresholds_json(legacy, (64, 64))


def test_decision_inference_mask_postprocessing_override_changes_only_the_fields_given() -> None:
    policy = chosen_policy()
    package = type("Package", (), {"policy": policy})()
    overridden = inference_policy(package, NAMES, (128, 128), mask_postprocessing={"neck_fraction": 0.03})
    assert overridden.mask == MaskPostprocessing(fill_holes=True, neck_fraction=0.03, min_area_fraction=0.001,
                                                 keep_largest=2)
    assert overridden.findings == policy.findings and overridden.gates == policy.gates
    assert inference_policy(package, NAMES, (128, 128)).mask == policy.mask
    with pytest.raises(ValueError, match=r"mask_postprocessing override: unknown fields \['neck'\]"):
        inference_policy(package, NAMES, (128, 128), mask_postprocessing={"neck": 0.03})
