"""PredictionWriter: per input image, a JSON of findings and boxes, and the mask and boxes as files viewers open."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events
from PIL import Image

from bundle.outputs import (
    ErrorReport,
    ImageGeometry,
    box_in_mm,
    is_dicom,
    measurement_spacing,
    output_stem,
    read_geometry,
    write_dicom_seg,
    write_nifti,
    write_nrrd,
    write_roi_markups,
)

from .files import atomic_write

log = logging.getLogger("bundle.outputs")

#: Output formats besides the JSON, and their file name endings.
FORMATS: dict[str, str] = {
    "png": "_mask.png",
    "nifti": "_mask.nii.gz",
    "nrrd": "_mask.nrrd",
    "markups": "_boxes.mrk.json",
    "dicom_seg": "_seg.dcm",
}
#: Formats written in the source's physical geometry.
NEEDS_GEOMETRY: frozenset[str] = frozenset({"nifti", "nrrd", "markups"})


@dataclass
class Prediction:
    """One image's results at its original size: ``mask`` (W, H) bool indexed [x, y], ``boxes`` in pixels."""

    source: str
    mask: np.ndarray
    boxes: list[dict[str, Any]]
    geometry: ImageGeometry | None


class PredictionWriter:
    """Write the outputs of every image an evaluator processes into ``output_dir``.

    Per image ``<stem>`` (the file name without its image suffix): ``<stem>_pred.json`` with class and gate
    probabilities, the gating decision and thresholds, the boxes (``box``: ``[x1, y1, x2, y2]`` in original
    pixels, x = column; ``box_mm`` / ``size_mm`` when the DICOM gives a pixel spacing, which ``spacing`` names,
    else null), the physical ``geometry`` of the files below and their names (``outputs``); then, per
    ``formats``: ``png`` (0/255 mask preview), ``nifti`` and ``nrrd`` (label-1 mask volumes overlaying the
    source in 3D Slicer), ``markups`` (one Slicer ROI per box; only when there are boxes, since Slicer cannot
    load an empty markups file), ``dicom_seg`` (DICOM inputs only). See :mod:`bundle.outputs.geometry`.

    Args:
        output_dir: folder for the files (created).
        class_names: names of the classification outputs.
        det_class_names: names of the box classes.
        mask_threshold: probability above which a pixel is in the mask.
        formats: which of :data:`FORMATS` to write besides the JSON.
        error_report: where an output that cannot be written is reported, the others still being written;
            None lets the error stop the run.
        segment_label: name of the mask's segment in the DICOM SEG.
        model_version: software version recorded in the DICOM SEG.
    """

    def __init__(
        self,
        output_dir: str,
        class_names: Sequence[str],
        det_class_names: Sequence[str] = ("opacity",),
        mask_threshold: float = 0.5,
        formats: Sequence[str] = tuple(FORMATS),
        error_report: ErrorReport | None = None,
        segment_label: str = "lesion",
        model_version: str = "unknown",
    ) -> None:
        unknown = set(formats) - set(FORMATS)
        if unknown:
            raise ValueError(f"unknown output formats {sorted(unknown)}; choose from {list(FORMATS)}")
        self.output_dir = Path(output_dir)
        self.class_names = list(class_names)
        self.det_class_names = list(det_class_names)
        self.mask_threshold = mask_threshold
        self.formats = list(formats)
        self.error_report = error_report
        self.segment_label = segment_label
        self.model_version = model_version
        self.written = 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)
        engine.add_event_handler(Events.COMPLETED, self._summary)

    def __call__(self, engine: Engine) -> None:
        out = engine.state.output
        meta = out["image"].meta
        model_size = tuple(out["image"].shape[2:])
        total = len(engine.state.dataloader.dataset)
        for i, source in enumerate(meta["filename_or_obj"]):
            original = tuple(int(s) for s in meta["spatial_shape"][i])
            files = self.write_one(source, original, model_size, out, i)
            self.written += 1
            log.info("[%d/%d] %s: %s", self.written, total, source, ", ".join(files.values()))

    def _summary(self, engine: Engine) -> None:
        report = self.error_report
        problems = f"; {len(report.errors)} problem(s) listed in {report.path}" if report is not None else ""
        log.info("wrote the outputs of %d images to %s%s", self.written, self.output_dir, problems)

    def write_one(
        self, source: str, original: tuple[int, ...], model_size: tuple[int, ...], out: dict[str, Any], i: int
    ) -> dict[str, str]:
        """Write the files of sample ``i`` of the output ``out``; return their names by format."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        stem = output_stem(source)
        prob = F.interpolate(out["seg_prob"][i : i + 1].float().cpu(), size=original, mode="bilinear")[0, 0]
        geometry = self._attempt(source, "geometry", lambda: read_geometry(source))
        spacing = self._attempt(source, "spacing", lambda: measurement_spacing(source))
        mask = (prob > self.mask_threshold).numpy()
        pred = Prediction(str(source), mask, self._boxes(out, i, original, model_size), geometry)
        files = {}
        for fmt in self.formats:
            if fmt in NEEDS_GEOMETRY and geometry is None:
                continue  # the geometry problem is reported already
            path = self.output_dir / f"{stem}{FORMATS[fmt]}"
            path.unlink(missing_ok=True)  # no stale file from an earlier run where this one is not written
            if self._attempt(source, fmt, lambda: self._write(fmt, pred, path)):
                files[fmt] = path.name
        record = {
            "image": str(source),
            "image_size": list(original),
            "classes": {n: round(float(p), 4) for n, p in zip(self.class_names, out["cls_prob"][i].cpu())},
            "det_gate": round(float(out["det_gate_prob"][i]), 4),
            "seg_gate": round(float(out["seg_gate_prob"][i]), 4),
            "gating": self._gating(out, i),
            "spacing": {"mm_per_pixel": list(spacing[0]), "source": spacing[1]} if spacing else None,
            "boxes": [self._box_record(box, spacing) for box in pred.boxes],
            "geometry": geometry.as_record() if geometry is not None else None,
            "mask": files.get("png"),
            "outputs": files,
        }
        json_name = f"{stem}_pred.json"
        atomic_write(self.output_dir / json_name, json.dumps(record, indent=2).encode())
        return {"json": json_name, **files}

    def _write(self, fmt: str, pred: Prediction, path: Path) -> bool:
        """Write one format; False when it does not apply to this image (no boxes, not DICOM)."""
        if fmt == "png":
            png = io.BytesIO()  # PIL wants rows first; the mask's axis 0 is x
            Image.fromarray(np.ascontiguousarray(pred.mask.T).astype(np.uint8) * 255).save(png, format="PNG")
            atomic_write(path, png.getvalue())
        elif fmt == "nifti":
            write_nifti(pred.mask, pred.geometry, path)
        elif fmt == "nrrd":
            write_nrrd(pred.mask, pred.geometry, path)
        elif fmt == "markups":
            if not pred.boxes:
                return False
            write_roi_markups(pred.boxes, pred.geometry, path)
        elif fmt == "dicom_seg":
            if not is_dicom(pred.source):
                return False
            write_dicom_seg(pred.mask, pred.source, path, self.segment_label, model_version=self.model_version)
        return True

    def _attempt(self, source: str, stage: str, step: Callable[[], Any]) -> Any:
        """``step()``; with an error report, a failure is reported and gives None instead of stopping the run."""
        try:
            return step()
        except Exception as err:  # reported with the file and stage, never dropped
            if self.error_report is None:
                raise
            self.error_report.add(source, stage, f"{type(err).__name__}: {err}")
            return None

    def _boxes(
        self, out: dict[str, Any], i: int, original: tuple[int, ...], model_size: tuple[int, ...]
    ) -> list[dict[str, Any]]:
        """Boxes of sample ``i`` in original pixels, with scores and label names."""
        scale = torch.tensor([o / m for o, m in zip(original, model_size)] * 2)
        det = out["det"][i]
        return [
            {
                "box": [round(float(c), 2) for c in box],
                "score": round(float(score), 4),
                "label": self.det_class_names[int(label)],
            }
            for box, score, label in zip(det["boxes"].cpu() * scale, det["scores"].cpu(), det["labels"].cpu())
        ]

    @staticmethod
    def _box_record(box: dict[str, Any], spacing: tuple[tuple[float, float], str] | None) -> dict[str, Any]:
        """The JSON item of a box: pixels, and millimetres when the pixel spacing is known (else null)."""
        return {**box, **(box_in_mm(box["box"], spacing[0]) if spacing else {"box_mm": None, "size_mm": None})}

    @staticmethod
    def _gating(out: dict[str, Any], i: int) -> dict[str, Any] | None:
        """The gate decisions and thresholds of sample ``i`` when the evaluator gated the heads, else None."""
        if "det_gated_in" not in out:
            return None
        return {
            "det_head_ran": bool(out["det_gated_in"][i]),
            "seg_head_ran": bool(out["seg_gated_in"][i]),
            "thresholds": dict(out["gate_thresholds"]),
        }
