"""Evaluation under the model's decision policy: the same decisions as bundle.decisions.decide, the policy chosen
on validation and written into model.pt, fallbacks recorded, and where the policy comes from."""

from __future__ import annotations

import json
import logging
from dataclasses import replace
from datetime import date
from pathlib import Path

import numpy as np
import pytest
import torch

from bundle.decisions import Calibration, DecisionPolicy, MaskPostprocessing, OperatingPoint, decide, logit
from bundle.handlers.evaluation_policy import DecisionRules, mask_dice
from bundle.handlers.metrics_report import MetricsReport
from bundle.metrics import dice_per_image, rsna_image_score
from bundle.packaging import ModelFileError, read_package

from .evaluator_outputs import CLASSES, SIZE, default_policy, evaluate, evaluator_batch, write_model_file


def _shipped_policy() -> DecisionPolicy:
    """A policy unlike the defaults everywhere evaluation applies one."""
    chosen = OperatingPoint(threshold=0.35, rule="max_f1", n_pos=20, n_neg=20)
    return replace(
        default_policy(),
        findings={"A": chosen, "B": replace(chosen, threshold=0.6), "C": replace(chosen, threshold=0.5)},
        calibration={"A": Calibration(method="temperature", temperature=2.0)},
        gates={"det_gate": OperatingPoint(0.55, "youden"), "seg_gate": OperatingPoint(0.45, "youden")},
        box_score=OperatingPoint(0.5, "max_rsna_score"),
        mask_threshold=OperatingPoint(0.45, "max_mean_dice"),
        mask=MaskPostprocessing(fill_holes=True, min_area_pixels=3),
    )


def _heads(batch: dict, i: int) -> dict:
    """Image ``i``'s head outputs as a runtime would give them to decide (logits of the evaluator's sigmoids)."""
    det = batch["det"][i]
    return {
        "cls": logit(batch["cls_prob"][i]), "seg": logit(batch["seg_prob"][i]),
        "det_gate": logit(batch["det_gate_prob"][i : i + 1]), "seg_gate": logit(batch["seg_gate_prob"][i : i + 1]),
        "boxes": det["boxes"], "scores": det["scores"], "labels": det["labels"],
    }


def test_decision_evaluation_scores_what_decide_decides(tmp_path: Path) -> None:
    policy = _shipped_policy()
    model = write_model_file(tmp_path / "models" / "model.pt", policy)
    batches = [evaluator_batch(seed) for seed in range(3)]
    report = evaluate(batches, tmp_path / "eval", model)
    assert report["policy"]["source"] == str(model) and not report["policy"]["chosen_on_this_split"]
    assert report["policy"]["settings"]["mask"] == policy.mask.to_dict()
    with np.load(tmp_path / "eval" / "predictions.npz") as pred:
        saved = {k: pred[k] for k in pred.files}
    ungated = replace(policy, tasks={"det": "anatomy", "seg": "anatomy"})
    gated_dice, rsna, positive, truth = [], [], [], []
    k = 0
    for batch in batches:
        for i in range(len(batch["patient_id"])):
            true_mask = batch["mask"][i, 0].numpy() > 0
            shipped, raw = decide(_heads(batch, i), policy, (SIZE, SIZE)), decide(_heads(batch, i), ungated, (SIZE, SIZE))
            np.testing.assert_allclose(saved["cls_prob"][k], [shipped.findings[n].probability for n in CLASSES],
                                       atol=1e-6)
            # the same mask post-processing (holes filled, the speck dropped) as decide, per image
            assert saved["seg_dice"][k] == pytest.approx(float(dice_per_image(raw.mask[None], true_mask[None])[0]))
            np.testing.assert_allclose(saved["kept_boxes"][saved["kept_image"] == k],
                                       np.array([b.box for b in raw.boxes]).reshape(-1, 4))
            gated_dice.append(float(dice_per_image(shipped.mask[None], true_mask[None])[0]))
            found = np.array([b.box for b in shipped.boxes]).reshape(-1, 4)
            rsna.append(rsna_image_score(found, [b.score for b in shipped.boxes], batch["boxes"][i].numpy()))
            positive.append([shipped.findings[n].positive for n in CLASSES])
            truth.append(batch["cls"][i].numpy())
            k += 1
    metrics = report["metrics"]
    assert metrics["seg/dice_mean_gated"]["value"] == pytest.approx(np.mean(gated_dice), abs=1e-6)
    assert metrics["det/rsna_map_gated"]["value"] == pytest.approx(np.nanmean(rsna), abs=1e-6)
    positive, truth = np.array(positive), np.array(truth).astype(bool)
    for c, name in enumerate(CLASSES):
        sensitivity = (positive[:, c] & truth[:, c]).sum() / truth[:, c].sum()
        assert metrics[f"cls/sensitivity/{name}"]["value"] == pytest.approx(sensitivity, abs=1e-6)


def test_decision_choose_on_validation_writes_the_policy_into_model_pt(tmp_path: Path) -> None:
    model = write_model_file(tmp_path / "models" / "model.pt", replace(default_policy(), mask=MaskPostprocessing(
        fill_holes=True)))
    validation = [evaluator_batch(seed, n=10) for seed in range(6)]
    report = evaluate(validation, tmp_path / "val", model, "validation", choose=True, datalist=tmp_path / "demo.json")
    assert report["policy"]["written_to"] == str(model) and report["policy"]["rules"]["findings"] == "max_f1"
    stored = read_package(model).policy
    labels = np.concatenate([b["cls"].numpy() for b in validation])
    for c, name in enumerate(CLASSES):
        point = stored.findings[name]
        assert (point.rule, point.fallback, point.n_pos) == ("max_f1", False, int(labels[:, c].sum()))
        assert point.chosen_on == date.today().isoformat() and point.dataset == "demo.json#validation"
        assert stored.calibration[name].method == "temperature" and not stored.calibration[name].fallback
    for gate in ("det_gate", "seg_gate"):
        assert stored.gates[gate].rule == "youden" and (stored.gates[gate].n_pos, stored.gates[gate].n_neg) == (30, 30)
    assert stored.box_score.rule == "max_rsna_score" and stored.box_score.n_pos == 30 and not stored.box_score.fallback
    assert stored.mask_threshold.rule == "max_mean_dice" and stored.mask.fill_holes  # the model's setting kept
    assert torch.equal(torch.load(model, weights_only=True)["model"]["w"], torch.arange(4.0))  # weights untouched
    assert report["policy"]["settings"] == json.loads(json.dumps(stored.to_dict()))  # the policy applied
    test = evaluate([evaluator_batch(seed) for seed in (10, 11)], tmp_path / "test", model)
    assert test["policy"]["source"] == str(model) and not test["policy"]["chosen_on_this_split"]
    assert {n: p["threshold"] for n, p in test["policy"]["settings"]["findings"].items()} == pytest.approx(
        {n: p.threshold for n, p in stored.findings.items()})


def test_decision_rule_with_too_few_positives_keeps_the_default(tmp_path: Path, caplog) -> None:
    model = write_model_file(tmp_path / "model.pt", default_policy())
    validation = [evaluator_batch(seed, n=10) for seed in range(4)]
    for k, batch in enumerate(validation):  # one true box in the whole split, and two positives of finding C
        batch["boxes"] = [b if (k, i) == (0, 0) else torch.zeros(0, 4) for i, b in enumerate(batch["boxes"])]
        batch["box_labels"] = [torch.zeros(len(b), dtype=torch.long) for b in batch["boxes"]]
        batch["det_gate_prob"] = torch.full((10,), 0.01)
        batch["cls"][:, 2] = 0.0
    validation[0]["det_gate_prob"][0] = 0.015  # the old bug: a gate threshold chosen from this one box
    validation[0]["cls"][:2, 2] = 1.0
    with caplog.at_level(logging.WARNING):
        report = evaluate(validation, tmp_path / "val", model, "validation", choose=True)
    stored = read_package(model).policy
    gate = stored.gates["det_gate"]
    assert (gate.threshold, gate.fallback, gate.n_pos) == (0.5, True, 1) and "1 positives" in gate.reason
    assert stored.box_score.fallback and stored.box_score.threshold == 0.5
    assert stored.findings["C"].fallback and not stored.findings["A"].fallback
    assert stored.calibration["C"].fallback and stored.calibration["C"].method == "none"
    fallbacks = report["policy"]["fallbacks"]
    assert fallbacks["gates/det_gate"] == gate.reason and "findings/C" in fallbacks and "findings/A" not in fallbacks
    assert "calibration/C" in fallbacks
    assert any("det_gate" in r.getMessage() and "1 positives" in r.getMessage() for r in caplog.records)


def test_decision_choose_refuses_a_plain_state_dict_and_writes_nothing(tmp_path: Path) -> None:
    model = write_model_file(tmp_path / "model.pt", None)
    before = model.read_bytes()
    with pytest.raises(ModelFileError, match="plain state dict.*nothing was evaluated or written"):
        evaluate([evaluator_batch(0)], tmp_path / "val", model, "validation", choose=True)
    assert model.read_bytes() == before and not (tmp_path / "val" / "metrics.json").exists()
    with pytest.raises(ValueError, match="validation split"):
        MetricsReport(tmp_path, CLASSES, split="testing", checkpoint=model, choose_policy=True)


def test_decision_evaluation_of_a_plain_state_dict_reads_legacy_thresholds_json(tmp_path: Path) -> None:
    model = write_model_file(tmp_path / "model.pt", None)
    legacy = {
        "classification": {"names": CLASSES, "thresholds": [0.3, 0.4, 0.7], "criterion": "f1"},
        "segmentation": {"threshold": 0.6, "min_area": 10, "criterion": "mean per-image Dice"},
        "gates": {"det_gate": 0.2, "seg_gate": 0.3, "criterion": "youden"},
    }
    (tmp_path / "thresholds.json").write_text(json.dumps(legacy))
    report = evaluate([evaluator_batch(0)], tmp_path / "eval", model)
    policy = report["policy"]
    assert policy["source"] == str(tmp_path / "thresholds.json")
    assert [policy["settings"]["findings"][n]["threshold"] for n in CLASSES] == [0.3, 0.4, 0.7]
    assert policy["settings"]["gates"]["det_gate"]["threshold"] == 0.2
    # min_area (model pixels) becomes a fraction of the map
    assert policy["settings"]["mask"]["min_area_fraction"] == pytest.approx(10 / SIZE**2, abs=1e-6)
    defaults = evaluate([evaluator_batch(0)], tmp_path / "defaults", None)
    assert defaults["policy"]["source"].startswith("defaults") and len(defaults["policy"]["fallbacks"]) == 7


def test_decision_mask_dice_uses_the_decision_post_processing() -> None:
    truth = np.zeros((2, 10, 10), bool)
    truth[0, 0:4, 0:4] = True
    prob = np.zeros((2, 10, 10))
    prob[0, 0:4, 0:4] = 0.8
    prob[0, 1, 1] = 0.2  # a hole: filled only with fill_holes
    prob[1, 9, 9] = 0.8  # a speck on an empty image: removing it turns Dice 0 into 1
    settings = [(0.5, MaskPostprocessing()), (0.5, MaskPostprocessing(min_area_pixels=5)),
                (0.5, MaskPostprocessing(fill_holes=True, min_area_fraction=0.05)), (0.9, MaskPostprocessing())]
    # 15 of 16 pixels: Dice 30 / 31; the speck: 0 unless removed; threshold 0.9: nothing predicted
    np.testing.assert_allclose(mask_dice(prob, truth, settings), [[30 / 31, 30 / 31, 1, 0], [0, 1, 1, 1]])


def test_decision_rules_name_a_bad_key_or_rule() -> None:
    assert DecisionRules.from_config(None) == DecisionRules()
    with pytest.raises(ValueError, match="decision_rules: unknown keys \\['gate'\\]"):
        DecisionRules.from_config({"gate": "youden"})
    with pytest.raises(ValueError, match="decision_rules.findings.B: unknown rule 'f1'"):
        DecisionRules.from_config({"findings": {"A": "youden", "B": "f1"}})
    with pytest.raises(ValueError, match="decision_rules.calibration"):
        DecisionRules.from_config({"calibration": "platt"})
