"""Choose a whole :class:`DecisionPolicy` on validation outputs: calibration first, then each threshold on the
calibrated probability, by the rule named for it, with the fallbacks of :mod:`.operating_points`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from typing import Any

import numpy as np

from .arrays import as_numpy
from .calibration import fit_calibrations
from .operating_points import OperatingPoint, choose_operating_point, choose_operating_points, default_point
from .policy import GATED_HEAD, GATES, DecisionPolicy
from .postprocess import BoxPostprocessing, MaskPostprocessing


def choose_policy(
    class_names: Sequence[str],
    image_size: Sequence[int],
    cls_logits: np.ndarray,
    cls_labels: np.ndarray,
    cls_known: np.ndarray | None = None,
    gate_probs: Mapping[str, np.ndarray] | None = None,
    gate_labels: Mapping[str, np.ndarray] | None = None,
    cls_rule: str | Mapping[str, str] = "max_f1",
    gate_rule: str = "youden",
    target: float = 0.95,
    calibration: str = "temperature",
    tasks: Mapping[str, str] | None = None,
    box_score: OperatingPoint | None = None,
    mask_threshold: OperatingPoint | None = None,
    mask: MaskPostprocessing | None = None,
    boxes: BoxPostprocessing | None = None,
    det_class_names: Sequence[str] = ("opacity",),
    dataset: str | None = None,
    model_sha256: str | None = None,
    min_positives: int | None = None,
    default: float = 0.5,
) -> DecisionPolicy:
    """The policy chosen on validation outputs.

    Args:
        cls_logits, cls_labels, cls_known: (N, C) classifier logits, 0/1 labels, and which labels are known.
        gate_probs, gate_labels: per gate (``det_gate``, ``seg_gate``), the (M,) gate probabilities and 0/1
            truth (the image has a box / a non-empty mask) on the images that carry that head's labels.
        cls_rule, gate_rule, target: rules of :func:`choose_operating_point` (``target`` for ``sensitivity``).
        calibration: per-finding method (``temperature``, ``isotonic`` or ``none``).
        tasks: ``{"det": ..., "seg": ...}``; an ``anatomy`` head's gate keeps the default, never applied.
        box_score, mask_threshold: operating points chosen by their own choosers (RSNA score, Dice) through
            :func:`checked_operating_point`; None keeps the default.
        dataset: what the data is (e.g. ``datalist.json#validation``); min_positives: overrides the rules' minima.
    """
    tasks = dict(tasks or {"det": "lesion", "seg": "lesion"})
    today = date.today().isoformat()
    common: dict[str, Any] = {"chosen_on": today, "default": default}
    logits, labels = as_numpy(cls_logits), as_numpy(cls_labels)
    calibrations = fit_calibrations(logits, labels, class_names, cls_known, method=calibration, chosen_on=today)
    calibrated = np.stack([calibrations[n].apply(logits[:, c]) for c, n in enumerate(class_names)], axis=1)
    findings = choose_operating_points(
        calibrated, labels, class_names, cls_known, rule=cls_rule, target=target,
        min_positives=min_positives, dataset=dataset, **common,
    )
    gates: dict[str, OperatingPoint] = {}
    for gate in GATES:
        if tasks.get(GATED_HEAD[gate]) == "anatomy":
            gates[gate] = default_point(default, f"the {GATED_HEAD[gate]} head is anatomy: never gated")
        elif gate_probs is None or gate not in gate_probs:
            gates[gate] = default_point(default, "no validation gate outputs given")
        else:
            gates[gate] = choose_operating_point(
                gate_probs[gate], (gate_labels or {})[gate], gate_rule, target=target, min_positives=min_positives,
                name=gate, dataset=dataset, **common,
            )
    return DecisionPolicy(
        class_names=tuple(class_names), image_size=tuple(image_size), det_class_names=tuple(det_class_names),
        findings=findings, calibration=calibrations, gates=gates, tasks=tasks,
        box_score=box_score or default_point(default), boxes=boxes or BoxPostprocessing(),
        mask_threshold=mask_threshold or default_point(default), mask=mask or MaskPostprocessing(),
        model_sha256=model_sha256,
    )
