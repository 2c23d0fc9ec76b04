"""decide(): hand-made head outputs of one image to findings, gates, mask and boxes, whatever the array type."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bundle.decisions import (
    BoxPostprocessing,
    Calibration,
    DecisionPolicy,
    MaskPostprocessing,
    OperatingPoint,
    decide,
    image_heads,
    prediction_record,
)

ROOT = Path(__file__).resolve().parents[1]
NAMES = ("Effusion", "Mass")
MODEL = (32, 24)  # (W, H) the heads ran at
ORIGINAL = (64, 72)  # the image: 2x along x, 3x along y


def logit(p: float) -> float:
    return float(np.log(p / (1 - p)))


def policy(seg_task: str = "lesion") -> DecisionPolicy:
    base = DecisionPolicy.default(NAMES, MODEL)
    return DecisionPolicy(
        class_names=NAMES, image_size=MODEL,
        findings={"Effusion": OperatingPoint(0.6, "youden"), "Mass": OperatingPoint(0.3, "max_f1")},
        calibration={"Effusion": Calibration(method="temperature", temperature=3.0)},
        gates={"det_gate": OperatingPoint(0.4, "youden"), "seg_gate": OperatingPoint(0.5, "youden")},
        tasks={"det": "lesion", "seg": seg_task},
        box_score=OperatingPoint(0.5, "max_rsna_score"), boxes=BoxPostprocessing(nms_iou=0.3, max_boxes=10),
        mask_threshold=base.mask_threshold, mask=MaskPostprocessing(fill_holes=True, min_area_pixels=30),
    )


def heads(det_gate: float = 0.9, seg_gate: float = 0.9) -> dict[str, np.ndarray]:
    """One image's head outputs: a 10 x 8 lesion with a hole, a 1-pixel island, two overlapping boxes."""
    seg = np.full((1, *MODEL), -5.0)  # not -6: no pixel exactly at 0.5 after resizing
    seg[0, 10:20, 8:16] = 6.0
    seg[0, 14:16, 11:13] = -5.0  # hole
    seg[0, 2, 2] = 6.0  # island
    return {
        "cls": np.array([1.0, logit(0.31)]),
        "det_gate": np.array([logit(det_gate)]), "seg_gate": np.array([logit(seg_gate)]),
        "seg": seg,
        "boxes": np.array([[4, 4, 12, 10], [4.5, 4, 12, 10.5], [20, 2, 30, 8]]),
        "scores": np.array([0.8, 0.9, 0.4]), "labels": np.array([0, 0, 0]),
    }


def test_decision_findings_are_calibrated_then_thresholded() -> None:
    decision = decide(heads(), policy(), ORIGINAL)
    effusion, mass = decision.findings["Effusion"], decision.findings["Mass"]
    assert effusion.uncalibrated == pytest.approx(0.731, abs=1e-3)  # sigmoid(1) would pass 0.6 ...
    assert effusion.probability == pytest.approx(1 / (1 + np.exp(-1 / 3)))  # ... sigmoid(1/3) = 0.583 does not
    assert not effusion.positive and effusion.threshold == 0.6
    assert mass.positive and mass.probability == pytest.approx(0.31)  # identity calibration, 0.31 >= 0.3
    assert decision.positive_findings == ["Mass"]


def test_decision_mask_at_original_size_post_processed() -> None:
    decision = decide(heads(), policy(), ORIGINAL)
    assert decision.mask.shape == ORIGINAL and decision.seg_prob.shape == ORIGINAL
    assert decision.seg_prob.dtype == np.float32
    xs, ys = np.nonzero(decision.mask)
    assert (xs.min(), xs.max(), ys.min(), ys.max()) == (20, 39, 24, 47)  # lesion x 10:20, y 8:16, scaled 2x / 3x
    assert decision.mask[28:32, 33:39].all()  # hole filled
    assert not decision.mask[:10, :10].any()  # the island (2 x 3 px at this size) is below 30 px


def test_decision_overlapping_boxes_keep_one_scaled_to_original_pixels() -> None:
    decision = decide(heads(), policy(), ORIGINAL)
    assert len(decision.boxes) == 1  # the 0.8 box overlaps the 0.9 one; the 0.4 one is below the score threshold
    box = decision.boxes[0]
    assert box.score == 0.9 and box.label == "opacity"
    assert box.box == pytest.approx((9.0, 12.0, 24.0, 31.5))


def test_decision_shut_gates_empty_mask_and_boxes() -> None:
    decision = decide(heads(det_gate=0.3, seg_gate=0.2), policy(), ORIGINAL)
    assert not decision.gates["det_gate"].open and decision.boxes == []
    assert not decision.gates["seg_gate"].open and not decision.mask.any() and not decision.seg_prob.any()
    assert decision.gates["det_gate"].probability == pytest.approx(0.3)
    assert decision.gates["det_gate"].head_ran  # this runtime ran every head; the policy dropped the output


def test_decision_anatomy_head_is_never_gated() -> None:
    decision = decide(heads(seg_gate=0.01), policy(seg_task="anatomy"), ORIGINAL)
    gate = decision.gates["seg_gate"]
    assert gate.open and not gate.gated and decision.mask.any()


def test_decision_is_the_same_from_numpy_and_torch_float32() -> None:
    numpy_heads = {k: v.astype(np.float32) for k, v in heads().items()}
    torch_heads = {k: torch.from_numpy(v) for k, v in numpy_heads.items()}
    torch_heads["labels"] = torch.zeros(3, dtype=torch.int64)
    a = decide(numpy_heads, policy(), ORIGINAL)
    b = decide(torch_heads, policy(), ORIGINAL)
    np.testing.assert_array_equal(a.mask, b.mask)
    np.testing.assert_array_equal(a.seg_prob, b.seg_prob)
    assert a.findings == b.findings and a.gates == b.gates and a.boxes == b.boxes
    assert prediction_record(a, "x.png", "1.0") == prediction_record(b, "x.png", "1.0")


def test_decision_of_each_image_of_a_batched_output() -> None:
    one, other = heads(), heads(det_gate=0.1)
    keys = ("cls", "seg", "det_gate", "seg_gate")
    batched = {key: torch.from_numpy(np.stack([one[key], other[key]])) for key in keys}
    batched["det_gated_in"] = torch.tensor([True, False])
    found = [{key: torch.from_numpy(h[key]) for key in ("boxes", "scores", "labels")} for h in (one, other)]
    second = image_heads(batched, 1, found)
    assert set(second) == {*batched, "boxes", "scores", "labels"}
    decision = decide(second, policy(), ORIGINAL)
    assert not decision.gates["det_gate"].open and not decision.gates["det_gate"].head_ran and decision.boxes == []
    first = decide(image_heads(batched, 0, found), policy(), ORIGINAL)
    assert first.findings == decide(one, policy(), ORIGINAL).findings


def test_decision_reports_a_head_the_runtime_skipped() -> None:
    skipped = {**heads(), "seg_gated_in": torch.tensor([False]), "det_gated_in": torch.tensor([True])}
    skipped["seg"] = np.full((1, *MODEL), -30.0)  # what forward_gated gives a skipped head
    decision = decide(skipped, policy(), ORIGINAL)
    assert decision.gates["seg_gate"].open and not decision.gates["seg_gate"].head_ran
    assert [w["code"] for w in decision.warnings] == ["head_not_run"]
    assert not decision.mask.any()


def test_decision_heads_may_be_partial() -> None:
    decision = decide({"cls": np.zeros(2)}, policy(), ORIGINAL)
    assert decision.mask is None and decision.boxes == [] and decision.gates == {}
    assert decision.model_size == MODEL


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"cls": np.zeros((1, 2))}, "'cls' of one image must have shape \\(2,\\)"),
        ({"seg": np.zeros((2, 32, 24))}, "'seg' of one image must be"),
        ({"boxes": np.zeros((3, 5))}, "'boxes' of one image must have shape \\(k, 4\\)"),
        ({"labels": np.array([0, 0, 3])}, "out of range for det_class_names"),
    ],
)
def test_decision_bad_head_outputs_are_clear_errors(change: dict, message: str) -> None:
    bad = {**heads(), **change}
    if "labels" in change:
        bad["scores"] = np.array([0.9, 0.8, 0.7])
        bad["boxes"] = np.array([[0, 0, 4, 4], [10, 10, 14, 14], [20, 20, 24, 24]])
    with pytest.raises(ValueError, match=message):
        decide(bad, policy(), ORIGINAL)


def test_decision_missing_gate_of_a_gated_head_is_an_error() -> None:
    without_gate = {k: v for k, v in heads().items() if k != "det_gate"}
    with pytest.raises(ValueError, match="no 'det_gate'"):
        decide(without_gate, policy(), ORIGINAL)


def test_decision_package_runs_without_torch_or_the_rest_of_the_bundle() -> None:
    """The MONAI Deploy venv imports the package by path: it must need only NumPy, SciPy and pydicom."""
    script = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('torch', 'ignite', 'monai', 'itk', 'bundle'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        f"sys.path.insert(0, {str(ROOT / 'bundle')!r})\n"
        "import numpy as np, decisions\n"
        "p = decisions.DecisionPolicy.default(['a'], (32, 32))\n"
        "d = decisions.decide({'cls': np.zeros(1), 'seg_gate': np.ones(1), 'seg': np.ones((1, 32, 32))}, p, (64, 64))\n"
        "print(int(d.mask.sum()))\n"
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == str(64 * 64)
