"""MetricsReport: collect an evaluator's per-sample outputs, apply the model's decision policy, and write every
metric with its 95% CI, the policy applied and the calibration to metrics.json.

The policy is the one inference applies (:func:`bundle.handlers.evaluation_policy.model_policy`: the model
file's own, else a legacy ``thresholds.json`` beside it, else defaults), so the metrics score the findings a user
gets. With ``choose_policy`` (on a validation split) the whole policy is chosen there instead (calibration,
operating points by the configured rules, mask and box settings) and written into the model file; a plain state
dict without a package has nowhere to hold it, and the run stops before evaluating with a message saying so.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events

from bundle.decisions import DecisionPolicy
from bundle.fileio import atomic_write
from bundle.metrics.bootstrap import DEFAULT_RESAMPLES, bootstrap_metrics
from bundle.metrics.evaluation import Records, evaluation_statistic
from bundle.packaging import ModelFileError, file_sha256, write_policy

from .evaluation_policy import (
    Collected,
    DecisionRules,
    apply_policy,
    calibration_statistic,
    calibration_summary,
    choose_evaluation_policy,
    mask_dice,
    mask_settings,
    model_policy,
    policy_fallbacks,
)
from .saliency_records import SaliencyRecords

logger = logging.getLogger(__name__)

HEAD_FLAGS: tuple[str, ...] = ("has_cls", "has_seg", "has_det")


def _json_ready(value: Any) -> Any:
    """``value`` with every NaN or infinity as None (valid JSON)."""
    if isinstance(value, Mapping):
        return {k: _json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_ready(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    return value


def _metric_value(value: float) -> float | None:
    return round(float(value), 6) if math.isfinite(value) else None


def _numpy(value: Any) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


class MetricsReport:
    """Write ``metrics.json`` (and optionally ``predictions.npz``) in ``output_dir`` when the evaluator completes.

    Args:
        output_dir: folder of the outputs.
        class_names: classifier outputs' names; det_class_names: box classes' names.
        image_size: the model's input (W, H), for a policy made of defaults.
        datalist: datalist file evaluated; split: its list evaluated (both recorded).
        checkpoint: model file evaluated: its SHA-256 is recorded and its decision policy applied.
        choose_policy: choose the decision policy on this split and write it into ``checkpoint`` (refused on a
            'testing' split; needs a model file with a package).
        decision_rules: how to choose it (:class:`DecisionRules` fields; defaults when None).
        n_resamples, seed: patient bootstrap settings.
        save_predictions: also write ``predictions.npz`` (per-sample probabilities, labels, boxes, gallery).
        gallery_size, gallery_side: images kept for the report's gallery, and their side in pixels.
    """

    def __init__(
        self,
        output_dir: str | Path,
        class_names: Sequence[str],
        det_class_names: Sequence[str] = ("opacity",),
        image_size: Sequence[int] = (128, 128),
        datalist: str | Path | None = None,
        split: str = "",
        checkpoint: str | Path | None = None,
        choose_policy: bool = False,
        decision_rules: Mapping[str, Any] | None = None,
        n_resamples: int = DEFAULT_RESAMPLES,
        seed: int = 0,
        save_predictions: bool = True,
        gallery_size: int = 16,
        gallery_side: int = 128,
    ) -> None:
        if choose_policy and split == "testing":
            raise ValueError("the decision policy must be chosen on a validation split, not on 'testing'")
        if choose_policy and checkpoint is None:
            raise ValueError("choose_policy needs the checkpoint to write the chosen policy into")
        self.output_dir = Path(output_dir)
        self.class_names = list(class_names)
        self.det_class_names = list(det_class_names)
        self.model_size = tuple(int(s) for s in image_size)
        self.datalist = None if datalist is None else str(datalist)
        self.split = split
        self.checkpoint = None if checkpoint is None else Path(checkpoint)
        self.choose = choose_policy
        self.rules = DecisionRules.from_config(decision_rules)
        self.n_resamples = n_resamples
        self.seed = seed
        self.save_predictions = save_predictions
        self.gallery_size = gallery_size
        self.gallery_side = gallery_side

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, self.finish)

    # -- events -----------------------------------------------------------------------------------------------
    def start(self, engine: Engine) -> None:
        """Read the model's policy (refusing to choose one that could not be stored) and reset the collected data."""
        self.policy, packaged = model_policy(self.checkpoint, self.class_names, self.model_size, self.det_class_names)
        if self.choose and not packaged:
            raise ModelFileError(
                f"{self.checkpoint}: a plain state dict without a model package, so a decision policy chosen here "
                "could not be stored with the model; nothing was evaluated or written. Retrain with the current "
                "configs/train.json (it saves the package), then choose on validation again"
            )
        self.checkpoint_sha256 = file_sha256(self.checkpoint) if self.checkpoint else None
        self.settings = mask_settings(self.policy, self.choose)
        logger.info("decision policy: %s", "chosen on this split" if self.choose else self.policy.source)
        self._data: dict[str, list] = defaultdict(list)
        self._gallery: dict[str, list] = defaultdict(list)  # samples with masks or boxes
        self._fallback: dict[str, list] = defaultdict(list)  # the others, shown when too few have labels
        self._saliency = SaliencyRecords(self.datalist, self.split)

    def collect(self, engine: Engine) -> None:
        """Keep the per-sample outputs and labels of the iteration's batch (per-image Dice under each setting)."""
        out = engine.state.output
        n, n_classes = out["cls_prob"].shape
        d = self._data
        flags = {k: _numpy(out[k]).astype(bool) if k in out else np.zeros(n, bool) for k in HEAD_FLAGS}
        for key, value in flags.items():
            d[key].append(value)
        first = len(d["image"])
        images = [str(f) for f in getattr(out["image"], "meta", {}).get("filename_or_obj", [""] * n)]
        d["image"] += images
        # without a patient id, an image is its own patient (and the bootstrap resamples images)
        d["patient_id"] += [str(p) or f"image:{f}" for p, f in zip(out.get("patient_id") or [""] * n, images)]
        d["cls_prob"].append(_numpy(out["cls_prob"]).astype(np.float64))
        d["cls"].append(_numpy(out["cls"]) if "cls" in out else np.zeros((n, n_classes)))
        known = _numpy(out["cls_known"]).astype(bool) if "cls_known" in out else np.zeros((n, n_classes), bool)
        d["cls_known"].append(known)
        for key in ("seg_gate_prob", "det_gate_prob"):
            d[key].append(_numpy(out[key]).astype(np.float64))
        seg_prob = _numpy(out["seg_prob"])[:, 0]
        truth = _numpy(out["mask"])[:, 0] > 0 if "mask" in out else np.zeros(seg_prob.shape, bool)
        scores = np.full((n, len(self.settings)), np.nan)
        s = flags["has_seg"]
        if s.any():
            scores[s] = mask_dice(seg_prob[s], truth[s], self.settings)
        d["seg_dice"].append(scores)
        d["seg_positive"].append(truth.reshape(n, -1).any(1))
        self._saliency.collect(out, n)
        for i in range(n):
            self._collect_boxes(out, i)
        self.image_size = list(out["image"].shape[2:])
        pixels = _numpy(out["image"])[:, 0]
        for i in range(n):
            labelled = flags["has_seg"][i] or flags["has_det"][i]
            kept = self._gallery if labelled else self._fallback
            if len(kept["index"]) < self.gallery_size:
                self._keep_for_gallery(kept, first + i, pixels[i], seg_prob[i], truth[i])

    def _collect_boxes(self, out: dict[str, Any], i: int) -> None:
        det, d = out["det"][i], self._data
        d["pred_boxes"].append(_numpy(det["boxes"]).reshape(-1, 4).astype(np.float64))
        d["pred_scores"].append(_numpy(det["scores"]).reshape(-1).astype(np.float64))
        d["pred_labels"].append(_numpy(det["labels"]).reshape(-1).astype(np.int64))
        truth = (out["boxes"][i], out["box_labels"][i]) if "boxes" in out else (np.zeros((0, 4)), np.zeros(0))
        d["true_boxes"].append(_numpy(truth[0]).reshape(-1, 4).astype(np.float64))
        d["true_labels"].append(_numpy(truth[1]).reshape(-1).astype(np.int64))

    def _keep_for_gallery(
        self, kept: dict[str, list], index: int, image: np.ndarray, seg_prob: np.ndarray, truth: np.ndarray
    ) -> None:
        """Keep a downsampled copy of a sample (image and probabilities as uint8, true mask as bool)."""

        def resize(array: np.ndarray, mode: str) -> np.ndarray:
            tensor = torch.as_tensor(np.asarray(array, dtype=np.float32))[None, None]
            return F.interpolate(tensor, size=(self.gallery_side,) * 2, mode=mode)[0, 0].numpy()

        kept["index"].append(index)
        kept["image"].append((np.clip(resize(image, "area"), 0, 1) * 255).astype(np.uint8))
        kept["seg_prob"].append((np.clip(resize(seg_prob, "area"), 0, 1) * 255).astype(np.uint8))
        kept["mask"].append(resize(truth, "nearest") > 0)

    def _collected(self) -> Collected:
        d = self._data
        arrays = {key: np.concatenate(d[key]) for key in (
            "cls_prob", "cls", "cls_known", *HEAD_FLAGS, "seg_dice", "seg_positive", "seg_gate_prob", "det_gate_prob"
        )}
        boxes = {key: d[key] for key in ("pred_boxes", "pred_scores", "pred_labels", "true_boxes", "true_labels")}
        return Collected(patient_id=d["patient_id"], image=d["image"], **arrays, **boxes)

    def _choose(self, collected: Collected) -> tuple[DecisionPolicy, int]:
        """The policy chosen on this split, written into the model file."""
        dataset = f"{Path(self.datalist).name if self.datalist else 'datalist'}#{self.split}"
        policy, setting = choose_evaluation_policy(
            collected, self.policy, self.settings, self.rules, dataset, self.checkpoint_sha256
        )
        write_policy(self.checkpoint, policy)
        logger.info("wrote the decision policy chosen on %s into %s", dataset, self.checkpoint)
        return replace(policy, source=str(self.checkpoint)), setting

    def finish(self, engine: Engine) -> None:
        """Apply (or choose) the policy, compute every metric with its bootstrap CI and write the files."""
        if not self._data:
            logger.warning("MetricsReport: the evaluator saw no data; nothing written")
            return
        collected = self._collected()
        policy, setting = self._choose(collected) if self.choose else (self.policy, 0)
        fallbacks = policy_fallbacks(policy)
        if fallbacks:
            logger.warning("decision policy: defaults kept instead of choices for %s (reasons: metrics.json, "
                           "policy.fallbacks)", ", ".join(fallbacks))
        records = apply_policy(collected, policy, setting)
        cls_thresholds = [policy.findings[n].threshold for n in self.class_names]
        metrics = evaluation_statistic(records, cls_thresholds, self.class_names, self.det_class_names)
        calibration = calibration_statistic(collected, records.cls_prob, self.class_names)
        saliency = self._saliency.statistic()
        intervals = bootstrap_metrics(
            lambda idx: {**metrics(idx), **calibration(idx), **saliency(idx)}, records.patient_id, self.n_resamples,
            self.seed,
        )
        report = self._report(records, policy, intervals, calibration_summary(collected, records.cls_prob, policy))
        atomic_write(self.output_dir / "metrics.json", json.dumps(_json_ready(report), indent=2).encode())
        if self.save_predictions:
            self._write_predictions(records, collected, cls_thresholds, policy)
        headline = ("cls/auroc_macro", "cls/f1_macro", "cls/ece_calibrated_macro", "seg/dice_mean", "det/rsna_map",
                    "sal/cc")
        logger.info("metrics.json: %s", {k: report["metrics"][k]["value"] for k in headline if k in report["metrics"]})

    def _report(
        self, records: Records, policy: DecisionPolicy, intervals: dict, calibration: dict[str, Any]
    ) -> dict[str, Any]:
        synthetic = None
        if self.datalist and Path(self.datalist).is_file():
            synthetic = bool(json.loads(Path(self.datalist).read_text()).get("synthetic", False))
        return {
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "dataset": {
                "datalist": self.datalist,
                "split": self.split,
                "synthetic": synthetic,
                "images": len(records),
                "patients": len(set(records.patient_id)),
                "images_with_cls": int(records.has_cls.sum()),
                "images_with_seg": int(records.has_seg.sum()),
                "images_with_det": int(records.has_det.sum()),
                "images_with_saliency": self._saliency.with_maps,
                "images_with_fixations": self._saliency.with_fixations,
            },
            "checkpoint": {"path": None if self.checkpoint is None else str(self.checkpoint),
                           "sha256": self.checkpoint_sha256},
            "class_names": self.class_names,
            "det_class_names": self.det_class_names,
            "policy": {
                "source": policy.source,
                "chosen_on_this_split": self.choose,
                "written_to": str(self.checkpoint) if self.choose else None,
                "rules": self.rules.to_dict() if self.choose else None,
                "fallbacks": policy_fallbacks(policy),
                "settings": policy.to_dict(),
            },
            "calibration": calibration,
            "bootstrap": {
                "unit": "patient", "resamples": self.n_resamples, "seed": self.seed,
                "confidence": 0.95, "method": "percentile",
            },
            "metrics": {
                name: {"value": _metric_value(v.value), "low": _metric_value(v.low), "high": _metric_value(v.high)}
                for name, v in intervals.items()
            },
        }

    def _write_predictions(
        self, records: Records, collected: Collected, cls_thresholds: Sequence[float], policy: DecisionPolicy
    ) -> None:
        def flat(arrays: list[np.ndarray], width: int | None = None) -> np.ndarray:
            empty = np.zeros((0, width) if width else 0, np.float32)
            return np.concatenate(arrays) if arrays else empty

        def owner(boxes: list[np.ndarray]) -> np.ndarray:
            return np.repeat(np.arange(len(records)), [len(b) for b in boxes])

        arrays = {
            "patient_id": np.array(records.patient_id), "image": np.array(records.image),
            "class_names": np.array(self.class_names), "det_class_names": np.array(self.det_class_names),
            "image_size": np.array(self.image_size), "policy": np.array(json.dumps(policy.to_dict())),
            "cls_prob": records.cls_prob.astype(np.float32),
            "cls_prob_uncalibrated": collected.cls_prob.astype(np.float32),
            "cls": records.cls.astype(np.int8), "cls_known": records.cls_known,
            "cls_thresholds": np.array(cls_thresholds), "has_cls": records.has_cls, "has_seg": records.has_seg,
            "has_det": records.has_det, "seg_dice": records.seg_dice, "seg_positive": records.seg_positive,
            "seg_gate_prob": records.seg_gate_prob.astype(np.float32), "seg_open": records.seg_open,
            "det_gate_prob": records.det_gate_prob.astype(np.float32), "det_open": records.det_open,
            "pred_image": owner(records.pred_boxes), "pred_boxes": flat(records.pred_boxes, 4),
            "pred_scores": flat(records.pred_scores), "pred_labels": flat(records.pred_labels),
            "kept_image": owner(records.kept_boxes), "kept_boxes": flat(records.kept_boxes, 4),
            "kept_scores": flat(records.kept_scores),
            "true_image": owner(records.true_boxes), "true_boxes": flat(records.true_boxes, 4),
            "true_labels": flat(records.true_labels),
        }
        room = self.gallery_size - len(self._gallery["index"])
        for key in ("index", "image", "seg_prob", "mask"):
            shown = self._gallery[key] + self._fallback[key][:room]
            if shown:
                arrays[f"gallery_{key}"] = np.stack(shown)
        tmp = self.output_dir / ".predictions.tmp.npz"
        np.savez_compressed(tmp, **arrays)
        os.replace(tmp, self.output_dir / "predictions.npz")

