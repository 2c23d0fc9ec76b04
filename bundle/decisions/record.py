"""The decision step of one image: head outputs in, findings out (:func:`decide`), and its JSON record
(:func:`prediction_record`, the layout of ``docs/schemas/prediction.schema.json``).

Head outputs of ONE image, NumPy arrays or torch tensors (any runtime's), at the model's input size (W, H):
``cls`` (C,) logits; ``det_gate``, ``seg_gate`` (1,) logits; ``seg`` (1, W, H) or (W, H) logits; ``boxes``
(k, 4) ``[x1, y1, x2, y2]`` model pixels, ``scores`` (k,), ``labels`` (k,) as the detector decoded them; and,
from ``forward_gated``, ``det_gated_in`` / ``seg_gated_in`` (whether the head ran). Absent heads are left out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .arrays import as_numpy, sigmoid
from .policy import GATED_HEAD, GATES, POLICY_VERSION, DecisionPolicy
from .postprocess import postprocess_boxes, postprocess_mask, resize_bilinear, scale_boxes
from .schema import SCHEMA_VERSION

#: Head output keys of the detector's decoded boxes, and the network's per-image keys.
BOX_KEYS: tuple[str, ...] = ("boxes", "scores", "labels")
NETWORK_KEYS: tuple[str, ...] = (
    "cls", "seg", "det_gate", "seg_gate", "det_gated_in", "seg_gated_in", "sal", "gradcam", "input_gradient",
)
#: Head outputs holding explanation maps, one per finding: Grad-CAM, or the input gradient (bridge networks).
EXPLANATION_KEYS: tuple[str, ...] = ("gradcam", "input_gradient")
#: Decimals kept in the record: probabilities and scores, pixel coordinates, millimetres.
PROB_DECIMALS, PIXEL_DECIMALS, MM_DECIMALS = 6, 3, 3


@dataclass(frozen=True)
class FindingDecision:
    """One finding: calibrated ``probability`` (``uncalibrated``: plain sigmoid), threshold and decision."""

    probability: float
    uncalibrated: float
    threshold: float
    positive: bool


@dataclass(frozen=True)
class GateDecision:
    """One gate: its probability and threshold; ``gated``: whether the policy gates the head at all (not for an
    anatomy head); ``open``: whether the head's output is used; ``head_ran``: whether the runtime ran it."""

    probability: float
    threshold: float
    gated: bool
    open: bool
    head_ran: bool


@dataclass(frozen=True)
class BoxDecision:
    """One box in original pixels ``[x1, y1, x2, y2]`` (x = column), its score and class name."""

    box: tuple[float, float, float, float]
    score: float
    label: str


@dataclass
class Decision:
    """The findings of one image under ``policy``, at its original size ``image_size`` (W, H).

    ``mask`` (W, H) bool and ``seg_prob`` (W, H) float32 are None without a segmentation output; both are
    empty where the segmentation gate is shut. ``warnings`` are ``{code, message}`` items. ``saliency`` (W, H)
    float32 summing to 1 is the saliency head's map of where a radiologist looks, None without the head.
    ``explanations`` maps findings to their (W, H) explanation maps summing to 1, made by ``explanation_method``
    (``grad_cam`` from ``gradcam`` head outputs, :func:`bundle.explain.grad_cam`, or ``input_gradient`` from
    ``input_gradient`` outputs, :func:`bundle.explain.input_gradient`): every positive finding, or the most
    probable one when none is positive.
    """

    policy: DecisionPolicy
    image_size: tuple[int, int]
    model_size: tuple[int, int]
    findings: dict[str, FindingDecision]
    gates: dict[str, GateDecision]
    mask: np.ndarray | None
    seg_prob: np.ndarray | None
    boxes: list[BoxDecision]
    warnings: list[dict[str, str]] = field(default_factory=list)
    saliency: np.ndarray | None = None
    explanations: dict[str, np.ndarray] = field(default_factory=dict)
    explanation_method: str = "grad_cam"

    @property
    def positive_findings(self) -> list[str]:
        return [name for name, f in self.findings.items() if f.positive]


def image_heads(
    pred: Mapping[str, Any], i: int, detections: Sequence[Mapping[str, Any]] | None = None
) -> dict[str, Any]:
    """Image ``i``'s head outputs for :func:`decide`, from a batched network output (``cls`` (B, C), ``seg``
    (B, 1, W, H), gates (B, 1), ``*_gated_in`` (B,)) and the detector's per-image ``boxes`` / ``scores`` /
    ``labels`` (``CheXDetector.predict``)."""
    one = {key: pred[key][i] for key in NETWORK_KEYS if key in pred}
    if detections is not None:
        one.update({key: detections[i][key] for key in BOX_KEYS})
    return one


def _head(heads: Mapping[str, Any], key: str, shape: tuple[int | None, ...]) -> np.ndarray:
    """``heads[key]`` as float64, checked against ``shape`` (None: any length)."""
    value = as_numpy(heads[key])
    if value.ndim != len(shape) or any(s is not None and s != v for s, v in zip(shape, value.shape)):
        dims = ["k" if s is None else str(s) for s in shape]
        want = f"({dims[0]},)" if len(dims) == 1 else f"({', '.join(dims)})"
        raise ValueError(f"head output {key!r} of one image must have shape {want}, got {tuple(value.shape)}")
    return value


def _seg_logits(heads: Mapping[str, Any]) -> np.ndarray:
    seg = as_numpy(heads["seg"])
    if seg.ndim == 3 and seg.shape[0] == 1:
        seg = seg[0]
    if seg.ndim != 2:
        raise ValueError(f"head output 'seg' of one image must be (1, W, H) or (W, H), got {tuple(seg.shape)}")
    return seg


def _findings(heads: Mapping[str, Any], policy: DecisionPolicy) -> dict[str, FindingDecision]:
    if "cls" not in heads:
        return {}
    logits = _head(heads, "cls", (len(policy.class_names),))
    raw = sigmoid(logits)
    found = {}
    for c, name in enumerate(policy.class_names):
        p = float(policy.calibration[name].apply(logits[c]))
        threshold = policy.findings[name].threshold
        found[name] = FindingDecision(p, float(raw[c]), threshold, p >= threshold)
    return found


def _gates(heads: Mapping[str, Any], policy: DecisionPolicy) -> dict[str, GateDecision]:
    head_present = {"seg": "seg" in heads, "det": "boxes" in heads}
    gates = {}
    for gate in GATES:
        head = GATED_HEAD[gate]
        if gate not in heads:
            if head_present[head] and policy.gated(gate):
                raise ValueError(f"head outputs have {head!r} but no {gate!r}, which the policy gates it with")
            continue
        p = float(sigmoid(_head(heads, gate, (1,)))[0])
        threshold = policy.gates[gate].threshold
        ran = bool(as_numpy(heads[f"{head}_gated_in"], bool).reshape(-1)[0]) if f"{head}_gated_in" in heads \
            else head_present[head]
        is_gated = policy.gated(gate)
        gates[gate] = GateDecision(p, threshold, is_gated, (p >= threshold) or not is_gated, ran)
    return gates


def decide(
    heads: Mapping[str, Any],
    policy: DecisionPolicy,
    original_size: Sequence[int],
    model_size: Sequence[int] | None = None,
) -> Decision:
    """Findings of one image from its head outputs (see the module docstring) under ``policy``.

    ``original_size`` is the image's (W, H); ``model_size`` the (W, H) the heads ran at (default: the ``seg``
    output's size, else ``policy.image_size``). Probabilities are calibrated, then thresholded; a shut gate
    empties its head's mask or boxes; the mask is the sigmoid, resized bilinearly to the original size, then
    post-processed; boxes are score-thresholded, NMS-filtered, capped and scaled to original pixels.
    """
    original = (int(original_size[0]), int(original_size[1]))
    seg = _seg_logits(heads) if "seg" in heads else None
    if model_size is None:
        model_size = seg.shape if seg is not None else policy.image_size
    model = (int(model_size[0]), int(model_size[1]))
    if seg is not None and tuple(seg.shape) != model:
        raise ValueError(f"head output 'seg' is {tuple(seg.shape)} but the model size is {model}")
    gates = _gates(heads, policy)
    warnings = [
        {"code": "head_not_run", "message": f"the {GATED_HEAD[g]} head's gate is open under the policy but the "
                                            f"runtime did not run the head (another gate threshold?)"}
        for g, d in gates.items() if d.open and not d.head_ran
    ]
    mask = prob = None
    if seg is not None:
        if gates.get("seg_gate") is None or gates["seg_gate"].open:
            prob = resize_bilinear(sigmoid(seg), original)
            mask = postprocess_mask(prob, policy.mask_threshold.threshold, policy.mask)
            prob = prob.astype(np.float32)
        else:
            prob, mask = np.zeros(original, np.float32), np.zeros(original, bool)
    boxes: list[BoxDecision] = []
    if "boxes" in heads and (gates.get("det_gate") is None or gates["det_gate"].open):
        missing = [k for k in BOX_KEYS if k not in heads]
        if missing:
            raise ValueError(f"head outputs have 'boxes' but not {missing}")
        kept, scores, labels = postprocess_boxes(
            _head(heads, "boxes", (None, 4)), _head(heads, "scores", (None,)), as_numpy(heads["labels"], np.int64),
            policy.box_score.threshold, policy.boxes,
        )
        names = policy.det_class_names
        if len(labels) and (labels.min() < 0 or labels.max() >= len(names)):
            found = sorted(set(labels.tolist()))
            raise ValueError(f"box labels {found} out of range for det_class_names {list(names)}")
        for box, score, label in zip(scale_boxes(kept, model, original), scores, labels):
            boxes.append(BoxDecision(tuple(float(c) for c in box), float(score), names[int(label)]))
    saliency = None
    if "sal" in heads:
        sal = np.exp(as_numpy(heads["sal"]).reshape(model))
        saliency = resize_bilinear(sal / sal.sum(), original)
        saliency = (saliency / saliency.sum()).astype(np.float32)
    findings = _findings(heads, policy)
    method = "input_gradient" if "input_gradient" in heads else "grad_cam"
    return Decision(policy, original, model, findings, gates, mask, prob, boxes, warnings, saliency,
                    _explanations(heads, findings, policy, model, original), method)


def _distribution_at(values: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """A non-negative (W, H) map resized bilinearly to ``size`` and normalised to sum 1 (all zero stays zero)."""
    resized = np.clip(resize_bilinear(values.astype(np.float64), size), 0, None)
    total = resized.sum()
    return (resized / total if total > 0 else resized).astype(np.float32)


def _explanations(
    heads: Mapping[str, Any], findings: Mapping[str, FindingDecision], policy: DecisionPolicy,
    model: tuple[int, int], original: tuple[int, int],
) -> dict[str, np.ndarray]:
    key = next((k for k in EXPLANATION_KEYS if k in heads), None)
    if key is None or not findings:
        return {}
    maps = as_numpy(heads[key]).reshape(len(policy.class_names), *model)
    chosen = [n for n, f in findings.items() if f.positive] or [max(findings, key=lambda n: findings[n].probability)]
    return {name: _distribution_at(maps[policy.class_names.index(name)], original) for name in chosen}


def box_in_mm(box: Sequence[float], spacing: Sequence[float]) -> dict[str, list[float]]:
    """A pixel box ``[x1, y1, x2, y2]`` in mm from the image's top-left corner (``box_mm``) and its
    ``size_mm`` (width, height), given (x, y) mm per pixel."""
    sx, sy = (float(s) for s in spacing)
    x1, y1, x2, y2 = (float(c) for c in box)
    mm = {"box_mm": [x1 * sx, y1 * sy, x2 * sx, y2 * sy], "size_mm": [(x2 - x1) * sx, (y2 - y1) * sy]}
    return {key: [round(v, MM_DECIMALS) for v in values] for key, values in mm.items()}


def _number(value: float | None, decimals: int = PROB_DECIMALS) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), decimals)


def _point(point: Any) -> dict[str, Any]:
    data = point.to_dict()
    for key in ("threshold", "target", "sensitivity", "specificity"):
        data[key] = _number(data[key])
    return data


def prediction_record(
    decision: Decision,
    input_file: str,
    model_version: str,
    model_hash: str | None = None,
    spacing: tuple[Sequence[float], str] | None = None,
    warnings: Sequence[Mapping[str, str]] = (),
    files: Mapping[str, str | None] | None = None,
) -> dict[str, Any]:
    """The JSON record of ``decision`` (schema ``docs/schemas/prediction.schema.json``).

    Args:
        input_file: the image file as given.
        model_version: the bundle version; model_hash: SHA-256 of the model file, when known.
        spacing: ((x, y) mm per pixel, the DICOM attribute it comes from) for sizes in mm; None without one.
        warnings: input warnings (e.g. :func:`bundle.decisions.dicom_warnings`), before the decision's own.
        files: names of the files written beside the record (``mask``, ``overlay``, other formats).
    """
    policy = decision.policy
    mm = spacing[0] if spacing is not None else None
    mask = None
    if decision.mask is not None:
        pixels = int(decision.mask.sum())
        mask = {
            "pixels": pixels,
            "area_fraction": _number(pixels / decision.mask.size),
            "area_mm2": _number(pixels * float(mm[0]) * float(mm[1]), MM_DECIMALS) if mm is not None else None,
        }
    has_mask = decision.mask is not None and bool(decision.mask.any())

    def located(values: np.ndarray) -> dict[str, Any]:
        """A map's peak pixel and its mass inside the predicted mask (None without a non-empty mask)."""
        peak = np.unravel_index(int(np.argmax(values)), values.shape)
        return {"peak": [int(peak[0]), int(peak[1])],
                "mass_in_mask": _number(float(values[decision.mask].sum())) if has_mask else None}

    saliency = {"source": "saliency_head", **located(decision.saliency)} if decision.saliency is not None else None
    explanations = {
        name: {"method": decision.explanation_method, "positive": bool(decision.findings[name].positive), **located(values)}
        for name, values in decision.explanations.items()
    }
    boxes = []
    for b in decision.boxes:
        sized = box_in_mm(b.box, mm) if mm is not None else {"box_mm": None, "size_mm": None}
        boxes.append({"label": b.label, "score": _number(b.score), "box": [round(c, PIXEL_DECIMALS) for c in b.box],
                      **sized})
    return {
        "schema_version": SCHEMA_VERSION,
        "input": {"file": str(input_file), "image_size": list(decision.image_size)},
        "model": {"version": str(model_version), "sha256": model_hash, "input_size": list(decision.model_size)},
        "policy": {"version": POLICY_VERSION, "source": policy.source, "tasks": dict(policy.tasks)},
        "operating_points": {
            "findings": {n: _point(p) for n, p in policy.findings.items()},
            "gates": {n: _point(p) for n, p in policy.gates.items()},
            "box_score": _point(policy.box_score),
            "mask": _point(policy.mask_threshold),
        },
        "calibration": {
            n: {"method": c.method, "temperature": _number(c.temperature), "fallback": c.fallback, "reason": c.reason}
            for n, c in policy.calibration.items()
        },
        "postprocessing": {"mask": policy.mask.to_dict(), "boxes": policy.boxes.to_dict()},
        "findings": {
            n: {"probability": _number(f.probability), "uncalibrated_probability": _number(f.uncalibrated),
                "threshold": _number(f.threshold), "positive": bool(f.positive)}
            for n, f in decision.findings.items()
        },
        "gates": {
            n: {"probability": _number(g.probability), "threshold": _number(g.threshold), "gated": g.gated,
                "open": g.open, "head_ran": g.head_ran}
            for n, g in decision.gates.items()
        },
        "spacing": {"mm_per_pixel": [float(s) for s in mm], "source": str(spacing[1])} if mm is not None else None,
        "mask": mask,
        "boxes": boxes,
        "files": {"mask": None, "overlay": None, **dict(files or {})},
        "warnings": [{"code": str(w["code"]), "message": str(w["message"])} for w in (*warnings, *decision.warnings)],
        **({"saliency": saliency} if saliency is not None else {}),
        **({"explanations": explanations} if explanations else {}),
    }
