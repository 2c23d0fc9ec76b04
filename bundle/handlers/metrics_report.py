"""MetricsReport: collect an evaluator's per-sample outputs and write every metric with its 95% CI to metrics.json.

Thresholds "stored with the model": run once on the validation split with ``choose_thresholds=True``; the
classifier's per-class thresholds (max F1 by default) and the segmentation post-processing (probability
threshold and minimum component area, max mean Dice) chosen there are written to ``thresholds_file`` (by default
``<ckpt_dir>/thresholds.json``, beside ``model.pt``). Later runs read that file; without it they use 0.5 and
no component filtering, and say so in metrics.json.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections import defaultdict
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events

from bundle.metrics.bootstrap import DEFAULT_RESAMPLES, bootstrap_metrics
from bundle.metrics.classification import choose_thresholds
from bundle.metrics.evaluation import Records, Thresholds, evaluation_statistic
from bundle.metrics.rsna import choose_box_score
from bundle.metrics.segmentation import choose_seg_postprocessing, dice_for_settings, postprocess_settings

from bundle.fileio import atomic_write

logger = logging.getLogger(__name__)

HEAD_FLAGS: tuple[str, ...] = ("has_cls", "has_seg", "has_det")


def sha256_of(path: str | Path) -> str | None:
    """SHA-256 hex digest of a file's bytes; None when it does not exist."""
    path = Path(path)
    if not path.is_file():
        return None
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _json_number(value: float) -> float | None:
    return None if value is None or not math.isfinite(value) else round(float(value), 6)


def _numpy(value: Any) -> np.ndarray:
    return value.detach().cpu().numpy() if isinstance(value, torch.Tensor) else np.asarray(value)


class MetricsReport:
    """Write ``metrics.json`` (and optionally ``predictions.npz``) in ``output_dir`` when the evaluator completes.

    Args:
        output_dir: folder of the outputs.
        class_names: classifier outputs' names; det_class_names: box classes' names.
        datalist: datalist file evaluated; split: its list evaluated (both recorded).
        checkpoint: model file evaluated (its SHA-256 is recorded).
        thresholds_file: where thresholds are read, or written when ``choose_thresholds``.
        choose_thresholds: choose thresholds on this split and write them (refused on a 'testing' split).
        threshold_criterion: 'f1' or 'youden', for the classifier's thresholds.
        gate_threshold: gate probability below which the gated metrics drop an image's mask and boxes.
        n_resamples, seed: patient bootstrap settings.
        save_predictions: also write ``predictions.npz`` (per-sample probabilities, labels, boxes, gallery).
        gallery_size, gallery_side: images kept for the report's gallery, and their side in pixels.
    """

    def __init__(
        self,
        output_dir: str | Path,
        class_names: Sequence[str],
        det_class_names: Sequence[str] = ("opacity",),
        datalist: str | Path | None = None,
        split: str = "",
        checkpoint: str | Path | None = None,
        thresholds_file: str | Path | None = None,
        choose_thresholds: bool = False,
        threshold_criterion: str = "f1",
        gate_threshold: float = 0.5,
        n_resamples: int = DEFAULT_RESAMPLES,
        seed: int = 0,
        save_predictions: bool = True,
        gallery_size: int = 16,
        gallery_side: int = 128,
    ) -> None:
        if choose_thresholds and split == "testing":
            raise ValueError("thresholds must be chosen on a validation split, not on 'testing'")
        if choose_thresholds and thresholds_file is None:
            raise ValueError("choose_thresholds needs a thresholds_file to write")
        self.output_dir = Path(output_dir)
        self.class_names = list(class_names)
        self.det_class_names = list(det_class_names)
        self.datalist = None if datalist is None else str(datalist)
        self.split = split
        self.checkpoint = None if checkpoint is None else str(checkpoint)
        self.thresholds_file = None if thresholds_file is None else Path(thresholds_file)
        self.choose = choose_thresholds
        self.criterion = threshold_criterion
        self.gate_threshold = gate_threshold
        self.n_resamples = n_resamples
        self.seed = seed
        self.save_predictions = save_predictions
        self.gallery_size = gallery_size
        self.gallery_side = gallery_side

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self.start)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, self.finish)

    # -- thresholds -------------------------------------------------------------------------------------------
    def load_thresholds(self) -> Thresholds:
        """The thresholds file's settings, or the defaults when there is none (or thresholds are being chosen)."""
        default = Thresholds(
            cls=[0.5] * len(self.class_names), det_gate=self.gate_threshold, seg_gate=self.gate_threshold
        )
        if self.choose or self.thresholds_file is None or not self.thresholds_file.is_file():
            return default
        stored = json.loads(self.thresholds_file.read_text())
        if stored["classification"]["names"] != self.class_names:
            raise ValueError(f"{self.thresholds_file}: class names differ from the model's")
        if self.checkpoint and stored.get("checkpoint_sha256") not in (None, sha256_of(self.checkpoint)):
            logger.warning("%s was chosen for another checkpoint than %s", self.thresholds_file, self.checkpoint)
        return Thresholds(
            cls=[float(t) for t in stored["classification"]["thresholds"]],
            seg_threshold=float(stored["segmentation"]["threshold"]),
            seg_min_area=int(stored["segmentation"]["min_area"]),
            det_gate=float(stored.get("gates", {}).get("det_gate", self.gate_threshold)),
            seg_gate=float(stored.get("gates", {}).get("seg_gate", self.gate_threshold)),
            det_score=float(stored.get("detection", {}).get("box_score", 0.0)),
            source=str(self.thresholds_file),
        )

    def _choose(self, records: Records, seg_scores: np.ndarray) -> Thresholds:
        c = records.has_cls.astype(bool)
        cls = choose_thresholds(records.cls_prob[c], records.cls[c], records.cls_known[c].astype(bool), self.criterion)
        s = records.has_seg.astype(bool)
        threshold, min_area = choose_seg_postprocessing(seg_scores[s], self.settings) if s.any() else (0.5, 0)
        gates = self._choose_gates(records)
        d = np.flatnonzero(records.has_det)
        box_score = choose_box_score(
            [records.pred_boxes[i] for i in d], [records.pred_scores[i] for i in d], [records.true_boxes[i] for i in d]
        )
        chosen = Thresholds(
            cls=cls.tolist(), seg_threshold=threshold, seg_min_area=min_area, **gates, det_score=box_score,
            source=f"chosen on this split ({self.split}), written to {self.thresholds_file}",
        )
        stored = {
            "classification": {"names": self.class_names, "thresholds": chosen.cls, "criterion": self.criterion},
            "segmentation": {"threshold": threshold, "min_area": min_area, "criterion": "mean per-image Dice"},
            "gates": {**gates, "criterion": "youden"},
            "detection": {"box_score": box_score, "criterion": "RSNA challenge score"},
            "chosen_on": {"datalist": self.datalist, "split": self.split},
            "checkpoint_sha256": sha256_of(self.checkpoint) if self.checkpoint else None,
        }
        atomic_write(self.thresholds_file, json.dumps(stored, indent=2).encode())
        logger.info("wrote thresholds chosen on %s to %s", self.split, self.thresholds_file)
        return chosen

    def _choose_gates(self, records: Records) -> dict[str, float]:
        """Each gate's threshold maximising Youden's J on the images that carry its labels (the configured
        threshold when they are all positive or all negative)."""
        d, s = records.has_det.astype(bool), records.has_seg.astype(bool)
        det_truth = np.array([len(b) > 0 for b in records.true_boxes], dtype=bool)
        gates = {}
        for name, prob, truth, flag in (
            ("det_gate", records.det_gate_prob, det_truth, d),
            ("seg_gate", records.seg_gate_prob, records.seg_positive.astype(bool), s),
        ):
            known = np.ones((int(flag.sum()), 1), dtype=bool)
            gates[name] = float(
                choose_thresholds(prob[flag][:, None], truth[flag][:, None].astype(float), known, "youden",
                                  default=self.gate_threshold)[0]
            )
        return gates

    # -- events -----------------------------------------------------------------------------------------------
    def start(self, engine: Engine) -> None:
        """Reset the collected data and fix the segmentation settings to score (the grid when choosing)."""
        self.thresholds = self.load_thresholds()
        self.settings = (
            postprocess_settings() if self.choose else [(self.thresholds.seg_threshold, self.thresholds.seg_min_area)]
        )
        self._data: dict[str, list] = defaultdict(list)
        self._gallery: dict[str, list] = defaultdict(list)  # samples with masks or boxes
        self._fallback: dict[str, list] = defaultdict(list)  # the others, shown when too few have labels

    def collect(self, engine: Engine) -> None:
        """Keep the per-sample predictions and labels of the iteration's batch."""
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
        d["cls_prob"].append(_numpy(out["cls_prob"]).astype(np.float32))
        d["cls"].append(_numpy(out["cls"]) if "cls" in out else np.zeros((n, n_classes)))
        known = _numpy(out["cls_known"]).astype(bool) if "cls_known" in out else np.zeros((n, n_classes), bool)
        d["cls_known"].append(known)
        for key in ("seg_gate_prob", "det_gate_prob"):
            d[key].append(_numpy(out[key]).astype(np.float32))
        seg_prob = _numpy(out["seg_prob"])[:, 0]
        truth = _numpy(out["mask"])[:, 0] > 0 if "mask" in out else np.zeros(seg_prob.shape, bool)
        scores = np.full((n, len(self.settings)), np.nan)
        s = flags["has_seg"]
        if s.any():
            scores[s] = dice_for_settings(seg_prob[s], truth[s], self.settings)
        d["seg_scores"].append(scores)
        d["seg_positive"].append(truth.reshape(n, -1).any(1))
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
        d["pred_boxes"].append(_numpy(det["boxes"]).reshape(-1, 4).astype(np.float32))
        d["pred_scores"].append(_numpy(det["scores"]).reshape(-1).astype(np.float32))
        d["pred_labels"].append(_numpy(det["labels"]).reshape(-1).astype(np.int64))
        truth = (out["boxes"][i], out["box_labels"][i]) if "boxes" in out else (np.zeros((0, 4)), np.zeros(0))
        d["true_boxes"].append(_numpy(truth[0]).reshape(-1, 4).astype(np.float32))
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

    def finish(self, engine: Engine) -> None:
        """Compute every metric with its bootstrap CI and write the files."""
        d = self._data
        if not d:
            logger.warning("MetricsReport: the evaluator saw no data; nothing written")
            return
        seg_scores = np.concatenate(d["seg_scores"])  # (N, settings); one setting unless choosing
        records = Records(
            patient_id=d["patient_id"], image=d["image"],
            cls_prob=np.concatenate(d["cls_prob"]), cls=np.concatenate(d["cls"]),
            cls_known=np.concatenate(d["cls_known"]), has_cls=np.concatenate(d["has_cls"]),
            has_seg=np.concatenate(d["has_seg"]), seg_dice=seg_scores[:, 0],
            seg_positive=np.concatenate(d["seg_positive"]),
            seg_gate_prob=np.concatenate(d["seg_gate_prob"]), has_det=np.concatenate(d["has_det"]),
            det_gate_prob=np.concatenate(d["det_gate_prob"]),
            pred_boxes=d["pred_boxes"], pred_scores=d["pred_scores"], pred_labels=d["pred_labels"],
            true_boxes=d["true_boxes"], true_labels=d["true_labels"],
        )
        thresholds = self.thresholds
        if self.choose:
            thresholds = self._choose(records, seg_scores)
            records.seg_dice = seg_scores[:, self.settings.index((thresholds.seg_threshold, thresholds.seg_min_area))]
        statistic = evaluation_statistic(records, thresholds, self.class_names, self.det_class_names)
        intervals = bootstrap_metrics(statistic, records.patient_id, self.n_resamples, self.seed)
        report = self._report(records, thresholds, intervals)
        atomic_write(self.output_dir / "metrics.json", json.dumps(report, indent=2).encode())
        if self.save_predictions:
            self._write_predictions(records, thresholds)
        headline = ("cls/auroc_macro", "cls/f1_macro", "seg/dice_mean", "det/rsna_map", "det/coco_map")
        logger.info("metrics.json: %s", {k: report["metrics"][k]["value"] for k in headline})

    def _report(self, records: Records, thresholds: Thresholds, intervals: dict) -> dict[str, Any]:
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
            },
            "checkpoint": {"path": self.checkpoint, "sha256": sha256_of(self.checkpoint) if self.checkpoint else None},
            "class_names": self.class_names,
            "det_class_names": self.det_class_names,
            "thresholds": {
                "source": thresholds.source,
                "classification": dict(zip(self.class_names, thresholds.cls)),
                "segmentation": {"threshold": thresholds.seg_threshold, "min_area": thresholds.seg_min_area},
                "gates": {"det_gate": thresholds.det_gate, "seg_gate": thresholds.seg_gate},
                "detection": {"box_score": thresholds.det_score},
            },
            "bootstrap": {
                "unit": "patient", "resamples": self.n_resamples, "seed": self.seed,
                "confidence": 0.95, "method": "percentile",
            },
            "metrics": {
                name: {"value": _json_number(v.value), "low": _json_number(v.low), "high": _json_number(v.high)}
                for name, v in intervals.items()
            },
        }

    def _write_predictions(self, records: Records, thresholds: Thresholds) -> None:
        def flat(arrays: list[np.ndarray], width: int | None = None) -> np.ndarray:
            empty = np.zeros((0, width) if width else 0, np.float32)
            return np.concatenate(arrays) if arrays else empty

        counts = np.array([len(b) for b in records.pred_boxes])
        true_counts = np.array([len(b) for b in records.true_boxes])
        arrays = {
            "patient_id": np.array(records.patient_id), "image": np.array(records.image),
            "class_names": np.array(self.class_names), "det_class_names": np.array(self.det_class_names),
            "image_size": np.array(self.image_size),
            "cls_prob": records.cls_prob, "cls": records.cls.astype(np.int8), "cls_known": records.cls_known,
            "cls_thresholds": np.array(thresholds.cls), "has_cls": records.has_cls, "has_seg": records.has_seg,
            "has_det": records.has_det, "seg_dice": records.seg_dice, "seg_positive": records.seg_positive,
            "seg_gate_prob": records.seg_gate_prob, "det_gate_prob": records.det_gate_prob,
            "pred_image": np.repeat(np.arange(len(records)), counts), "pred_boxes": flat(records.pred_boxes, 4),
            "pred_scores": flat(records.pred_scores), "pred_labels": flat(records.pred_labels),
            "true_image": np.repeat(np.arange(len(records)), true_counts), "true_boxes": flat(records.true_boxes, 4),
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


def stored_gate_thresholds(thresholds_file: str | Path, default: float = 0.5) -> dict[str, float]:
    """The gate thresholds chosen on validation and stored beside the checkpoint, or ``default`` for both."""
    path = Path(thresholds_file)
    stored = json.loads(path.read_text()).get("gates", {}) if path.is_file() else {}
    return {name: float(stored.get(name, default)) for name in ("det_gate", "seg_gate")}
