"""The decision policy in evaluation: which one applies, choosing one on validation, and applying it to the
outputs an evaluation collected, so that the metrics score what every runtime would decide.

Every step that turns outputs into findings is :mod:`bundle.decisions`' (calibration, thresholds, gates, mask
and box post-processing); this module only feeds it the evaluation's arrays and hands the result to
:mod:`bundle.metrics.evaluation`, which scores it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import numpy as np

from bundle.decisions import (
    MIN_COUNTS,
    ROC_RULES,
    DecisionPolicy,
    MaskPostprocessing,
    OperatingPoint,
    checked_operating_point,
    choose_policy,
    expected_calibration_error,
    logit,
    postprocess_boxes,
    postprocess_mask,
    reliability_bins,
)
from bundle.decisions.calibration import METHODS
from bundle.metrics.evaluation import Records
from bundle.metrics.rsna import choose_box_score
from bundle.metrics.segmentation import dice_per_image
from bundle.packaging import inference_policy, read_package

#: Mask settings searched on validation: probability thresholds x minimum component area as a fraction of the
#: map (0, 10, 50 and 200 pixels of a 128 x 128 map), the other post-processing kept as the model ships it.
MASK_THRESHOLDS: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7)
MASK_MIN_AREA_FRACTIONS: tuple[float, ...] = (0.0, 0.0006, 0.003, 0.012)
#: Validation positives the mask (images with a true mask) and box-score (images with a true box) choosers need
#: by default, the floor of the ROC rules.
CHOOSER_MIN_POSITIVES: int = MIN_COUNTS["max_f1"][0]
#: Threshold kept by a rule without enough validation positives.
DEFAULT_THRESHOLD: float = 0.5
#: Bins of the expected calibration error and the reliability diagrams.
ECE_BINS: int = 15
#: Rule names of the choosers outside the ROC rules.
MASK_RULE, BOX_RULE = "max_mean_dice", "max_rsna_score"

MaskSetting = tuple[float, MaskPostprocessing]


@dataclass(frozen=True)
class DecisionRules:
    """How a policy is chosen on validation (``decision_rules`` in ``configs/evaluate.json``).

    Attributes:
        findings: rule of every finding's threshold (``max_f1``, ``youden``, ``sensitivity``), or one per finding.
        gates: rule of the detection and segmentation gates.
        sensitivity_target: sensitivity the ``sensitivity`` rule reaches (e.g. 0.95 for screening).
        min_positives: validation positives every rule needs (None: each rule's own minimum); below it the
            default is kept and the policy says so.
        calibration: per-finding calibration fitted first (``temperature``, ``isotonic`` or ``none``).
    """

    findings: str | Mapping[str, str] = "max_f1"
    gates: str = "youden"
    sensitivity_target: float = 0.95
    min_positives: int | None = None
    calibration: str = "temperature"

    def __post_init__(self) -> None:
        named = {"gates": self.gates}
        named.update({"findings": self.findings} if isinstance(self.findings, str) else
                     {f"findings.{n}": r for n, r in dict(self.findings).items()})
        for key, rule in named.items():
            if rule not in ROC_RULES:
                raise ValueError(f"decision_rules.{key}: unknown rule {rule!r}; expected one of {list(ROC_RULES)}")
        if self.calibration not in METHODS:
            raise ValueError(f"decision_rules.calibration: {self.calibration!r} is not one of {list(METHODS)}")
        if not 0.0 < self.sensitivity_target < 1.0:
            raise ValueError(f"decision_rules.sensitivity_target must be in (0, 1), got {self.sensitivity_target}")
        if self.min_positives is not None and self.min_positives < 1:
            raise ValueError(f"decision_rules.min_positives must be null or >= 1, got {self.min_positives}")

    @classmethod
    def from_config(cls, data: Mapping[str, Any] | None) -> DecisionRules:
        """The rules of a config mapping; an unknown key is an error naming it."""
        data = dict(data or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"decision_rules: unknown keys {unknown}; expected some of {sorted(known)}")
        return cls(**data)

    def to_dict(self) -> dict[str, Any]:
        findings = self.findings if isinstance(self.findings, str) else dict(self.findings)
        return {"findings": findings, "gates": self.gates, "sensitivity_target": self.sensitivity_target,
                "min_positives": self.min_positives, "calibration": self.calibration}


@dataclass
class Collected:
    """Per-sample outputs an evaluation collected, before the decision step (N samples, C classes, S settings).

    ``cls_prob``: the classifier's sigmoid; ``seg_dice``: each image's Dice under each mask setting of
    :func:`mask_settings` (NaN without ``has_seg``); ``pred_*``: the detector's decoded boxes.
    """

    patient_id: list[str]
    image: list[str]
    cls_prob: np.ndarray
    cls: np.ndarray
    cls_known: np.ndarray
    has_cls: np.ndarray
    has_seg: np.ndarray
    seg_dice: np.ndarray
    seg_positive: np.ndarray
    seg_gate_prob: np.ndarray
    has_det: np.ndarray
    det_gate_prob: np.ndarray
    pred_boxes: list[np.ndarray] = field(repr=False)
    pred_scores: list[np.ndarray] = field(repr=False)
    pred_labels: list[np.ndarray] = field(repr=False)
    true_boxes: list[np.ndarray] = field(repr=False)
    true_labels: list[np.ndarray] = field(repr=False)

    @property
    def known(self) -> np.ndarray:
        """(N, C): the label is known and the sample carries classification labels."""
        return self.cls_known.astype(bool) & self.has_cls.astype(bool)[:, None]

    @property
    def det_positive(self) -> np.ndarray:
        """(N,): the image has a true box."""
        return np.array([len(b) > 0 for b in self.true_boxes], dtype=bool)


def model_policy(
    checkpoint: str | Path | None,
    class_names: Sequence[str],
    image_size: Sequence[int],
    det_class_names: Sequence[str] = ("opacity",),
) -> tuple[DecisionPolicy, bool]:
    """The policy inference applies for the model file (its own; else a legacy ``thresholds.json`` beside it;
    else defaults), and whether the file carries a package to store a new one in.

    Raises:
        ValueError: the policy's findings are not ``class_names``.
    """
    package = read_package(checkpoint) if checkpoint is not None else None
    legacy = Path(checkpoint).with_name("thresholds.json") if checkpoint is not None else None
    policy = inference_policy(package, class_names, image_size, det_class_names, legacy_thresholds=legacy)
    if list(policy.class_names) != list(class_names):
        raise ValueError(
            f"{policy.source or 'decision policy'}: findings {list(policy.class_names)} differ from the "
            f"configuration's class_names {list(class_names)}; evaluate with the model's own class names"
        )
    if policy.source is None:
        policy = replace(policy, source="defaults (no policy in the model file and no thresholds.json beside it)")
    return policy, package is not None


def mask_settings(policy: DecisionPolicy, choosing: bool) -> list[MaskSetting]:
    """The (mask threshold, post-processing) settings whose Dice an evaluation collects: the policy's; when
    choosing, the default threshold with the model's post-processing first (the fallback), then the grid."""
    if not choosing:
        return [(policy.mask_threshold.threshold, policy.mask)]
    grid = [(t, replace(policy.mask, min_area_fraction=f)) for t in MASK_THRESHOLDS for f in MASK_MIN_AREA_FRACTIONS]
    return [(DEFAULT_THRESHOLD, policy.mask), *grid]


def mask_dice(seg_prob: np.ndarray, truth: np.ndarray, settings: Sequence[MaskSetting]) -> np.ndarray:
    """Per-image Dice (B, S) of (B, W, H) probability maps post-processed by :func:`bundle.decisions.postprocess_mask`
    under each setting, against (B, W, H) true masks."""
    scores = np.empty((len(seg_prob), len(settings)))
    for s, (threshold, params) in enumerate(settings):
        masks = np.stack([postprocess_mask(p, threshold, params) for p in seg_prob])
        scores[:, s] = dice_per_image(masks, truth).numpy()
    return scores


def _mask_point(
    collected: Collected, settings: Sequence[MaskSetting], min_positives: int, dataset: str | None
) -> tuple[OperatingPoint, int]:
    s = collected.has_seg.astype(bool)
    mean = np.mean(collected.seg_dice[s], axis=0) if s.any() else np.zeros(len(settings))
    best = int(np.argmax(mean))  # ties: the first setting, the fallback
    positive = collected.seg_positive.astype(bool)[s]
    point = checked_operating_point(
        lambda: settings[best][0], MASK_RULE, int(positive.sum()), int((~positive).sum()), min_positives,
        default=settings[0][0], name="mask", dataset=dataset,
    )
    return point, 0 if point.fallback else best


def _box_point(collected: Collected, policy: DecisionPolicy, min_positives: int, dataset: str | None) -> OperatingPoint:
    d = np.flatnonzero(collected.has_det)
    kept = [postprocess_boxes(collected.pred_boxes[i], collected.pred_scores[i], collected.pred_labels[i], 0.0,
                              policy.boxes) for i in d]
    positive = collected.det_positive[d]
    return checked_operating_point(
        lambda: choose_box_score([k[0] for k in kept], [k[1] for k in kept], [collected.true_boxes[i] for i in d]),
        BOX_RULE, int(positive.sum()), int((~positive).sum()), min_positives, default=DEFAULT_THRESHOLD,
        name="box_score", dataset=dataset,
    )


def choose_evaluation_policy(
    collected: Collected,
    base: DecisionPolicy,
    settings: Sequence[MaskSetting],
    rules: DecisionRules,
    dataset: str | None = None,
    model_sha256: str | None = None,
) -> tuple[DecisionPolicy, int]:
    """The policy chosen on these (validation) outputs with :func:`bundle.decisions.choose_policy`, and the index
    of its mask setting in ``settings``.

    Calibration and the finding and gate thresholds follow ``rules``; the mask threshold and minimum area
    maximise the mean Dice, the box score the RSNA score. Each keeps its default, saying so, with too few
    positives. Tasks and the other post-processing settings are ``base``'s (the model's).
    """
    floor = CHOOSER_MIN_POSITIVES if rules.min_positives is None else rules.min_positives
    mask_point, index = _mask_point(collected, settings, floor, dataset)
    s, d = collected.has_seg.astype(bool), collected.has_det.astype(bool)
    policy = choose_policy(
        base.class_names, base.image_size, logit(collected.cls_prob), np.where(collected.known, collected.cls, 0),
        collected.known,
        gate_probs={"det_gate": collected.det_gate_prob[d], "seg_gate": collected.seg_gate_prob[s]},
        gate_labels={"det_gate": collected.det_positive[d], "seg_gate": collected.seg_positive.astype(bool)[s]},
        cls_rule=rules.findings, gate_rule=rules.gates, target=rules.sensitivity_target,
        calibration=rules.calibration, tasks=base.tasks, box_score=_box_point(collected, base, floor, dataset),
        mask_threshold=mask_point, mask=settings[index][1], boxes=base.boxes, det_class_names=base.det_class_names,
        dataset=dataset, model_sha256=model_sha256, min_positives=rules.min_positives, default=DEFAULT_THRESHOLD,
    )
    return policy, index


def calibrated_probs(cls_prob: np.ndarray, policy: DecisionPolicy) -> np.ndarray:
    """(N, C) probabilities after each finding's calibration, from the (N, C) sigmoid outputs."""
    logits = logit(cls_prob)
    return np.stack([policy.calibration[n].apply(logits[:, c]) for c, n in enumerate(policy.class_names)], axis=1)


def apply_policy(collected: Collected, policy: DecisionPolicy, setting: int) -> Records:
    """The collected outputs after ``policy``'s decision step (``setting``: the column of its mask setting)."""
    c = collected
    kept = [postprocess_boxes(b, s, lab, policy.box_score.threshold, policy.boxes)
            for b, s, lab in zip(c.pred_boxes, c.pred_scores, c.pred_labels)]

    def opened(gate: str, prob: np.ndarray) -> np.ndarray:
        return prob >= policy.gates[gate].threshold if policy.gated(gate) else np.ones(len(prob), bool)

    return Records(
        patient_id=c.patient_id, image=c.image, cls_prob=calibrated_probs(c.cls_prob, policy), cls=c.cls,
        cls_known=c.cls_known, has_cls=c.has_cls, has_seg=c.has_seg, seg_dice=c.seg_dice[:, setting],
        seg_positive=c.seg_positive, seg_gate_prob=c.seg_gate_prob, seg_open=opened("seg_gate", c.seg_gate_prob),
        has_det=c.has_det, det_gate_prob=c.det_gate_prob, det_open=opened("det_gate", c.det_gate_prob),
        pred_boxes=c.pred_boxes, pred_scores=c.pred_scores, pred_labels=c.pred_labels,
        kept_boxes=[k[0] for k in kept], kept_scores=[k[1] for k in kept],
        true_boxes=c.true_boxes, true_labels=c.true_labels,
    )


def calibration_statistic(
    collected: Collected, calibrated: np.ndarray, class_names: Sequence[str]
) -> Callable[[np.ndarray], dict[str, float]]:
    """A function from sample indices to each finding's expected calibration error before
    (``cls/ece_uncalibrated/<finding>``) and after (``cls/ece_calibrated/<finding>``) calibration, and their
    means over findings (``*_macro``), for the bootstrap."""
    known, labels = collected.known, collected.cls
    versions = {"uncalibrated": collected.cls_prob, "calibrated": calibrated}

    def statistic(idx: np.ndarray) -> dict[str, float]:
        out: dict[str, float] = {}
        for version, probs in versions.items():
            values = []
            for c, name in enumerate(class_names):
                rows = idx[known[idx, c]]
                values.append(expected_calibration_error(probs[rows, c], labels[rows, c], ECE_BINS))
                out[f"cls/ece_{version}/{name}"] = values[-1]
            finite = [v for v in values if math.isfinite(v)]
            out[f"cls/ece_{version}_macro"] = float(np.mean(finite)) if finite else float("nan")
        return out

    return statistic


def calibration_summary(collected: Collected, calibrated: np.ndarray, policy: DecisionPolicy) -> dict[str, Any]:
    """Per finding: the calibration applied (method, temperature, what it was fitted on) and the reliability
    diagram data of this split before and after it."""
    known, labels = collected.known, collected.cls
    findings = {}
    for c, name in enumerate(policy.class_names):
        rows = known[:, c]
        fit = policy.calibration[name]
        findings[name] = {
            "method": fit.method, "temperature": fit.temperature, "fallback": fit.fallback, "reason": fit.reason,
            "fitted_on": {"n_pos": fit.n_pos, "n_neg": fit.n_neg, "chosen_on": fit.chosen_on},
            "n_pos": int(labels[rows, c].sum()), "n_neg": int(rows.sum() - labels[rows, c].sum()),
            "reliability_uncalibrated": reliability_bins(collected.cls_prob[rows, c], labels[rows, c], ECE_BINS).to_dict(),
            "reliability_calibrated": reliability_bins(calibrated[rows, c], labels[rows, c], ECE_BINS).to_dict(),
        }
    return {"bins": ECE_BINS, "findings": findings}


def policy_fallbacks(policy: DecisionPolicy) -> dict[str, str]:
    """Every setting of ``policy`` that is a default kept instead of a choice, with the reason."""
    points: dict[str, Any] = {f"findings/{n}": p for n, p in policy.findings.items()}
    points.update({f"gates/{g}": p for g, p in policy.gates.items() if policy.gated(g)})
    points.update({"box_score": policy.box_score, "mask_threshold": policy.mask_threshold})
    points.update({f"calibration/{n}": c for n, c in policy.calibration.items() if c.fallback})
    return {key: point.reason or "default" for key, point in points.items() if point.fallback}
