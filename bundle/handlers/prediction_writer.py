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
    read_geometry,
    write_dicom_seg,
    write_nifti,
    write_nrrd,
    write_roi_markups,
)

from bundle.data.inputs import FolderInputs, InputFile
from bundle.fileio import atomic_write, remove_temporaries
from bundle.outputs.report import NOT_AN_IMAGE, OUTPUT_FAILED, RUN_FAILED, UNREADABLE

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
    """Write the outputs of every image a :class:`bundle.engines.FolderInferenceEvaluator` processes.

    Per image, under its output name ``<name>`` (:mod:`bundle.data.inputs`; sub-folders of the input folder are
    kept): ``<name>_pred.json`` with class and gate probabilities, the gating decision and thresholds, the boxes
    (``box``: ``[x1, y1, x2, y2]`` in original pixels, x = column; ``box_mm`` / ``size_mm`` when the DICOM gives a
    pixel spacing, which ``spacing`` names, else null), the physical ``geometry`` of the files below and their
    names (``outputs``); then, per ``formats``: ``png`` (0/255 mask preview), ``nifti`` and ``nrrd`` (label-1 mask
    volumes overlaying the source in 3D Slicer), ``markups`` (one Slicer ROI per box; only when there are boxes,
    since Slicer cannot load an empty markups file), ``dicom_seg`` (DICOM inputs only). See
    :mod:`bundle.outputs.geometry`.

    Every file is written atomically and the JSON last, so an image whose JSON exists with every file it lists
    is complete: :meth:`pending` leaves such images out of a rerun (unless ``overwrite``), so a killed run over
    many files resumes where it stopped. Files that cannot be read or run are listed in ``error_report``
    (``errors.json``), and :meth:`finish` ends the run with one summary line.

    Args:
        output_dir: folder for the files (created).
        class_names: names of the classification outputs.
        det_class_names: names of the box classes.
        mask_threshold: probability above which a pixel is in the mask.
        formats: which of :data:`FORMATS` to write besides the JSON.
        error_report: where an input or output that fails is reported, the others still being written.
        segment_label: name of the mask's segment in the DICOM SEG.
        model_version: software version recorded in the DICOM SEG.
    """

    def __init__(
        self,
        output_dir: str,
        class_names: Sequence[str],
        error_report: ErrorReport,
        det_class_names: Sequence[str] = ("opacity",),
        mask_threshold: float = 0.5,
        formats: Sequence[str] = tuple(FORMATS),
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
        self.done = 0
        self.skipped = 0
        self.total = 0
        self.todo = 0
        self.handled = 0

    def pending(self, found: FolderInputs, overwrite: bool = False) -> list[InputFile]:
        """The images of ``found`` still to process: all with ``overwrite``, else those without complete outputs.

        Files that are not images are reported; temporary files of a killed run are removed.
        """
        for stale in remove_temporaries(self.output_dir):
            log.info("removed %s, left by an interrupted run", stale)
        for other in found.others:
            self.error_report.add(other, "input", "not an image: no image suffix and no DICOM header", NOT_AN_IMAGE)
        todo = [f for f in found.images if overwrite or not self.complete(f)]
        self.total = len(found.images) + len(found.others)
        self.skipped = len(found.images) - len(todo)
        self.todo, self.handled = len(todo), 0
        if self.skipped:
            log.info("%d of %d images have complete outputs in %s and are skipped (--overwrite True redoes them)",
                     self.skipped, len(found.images), self.output_dir)
        return todo

    def complete(self, item: InputFile) -> bool:
        """Whether ``item`` has its JSON, written last, for the same source file, and every file that JSON lists."""
        path = self.output_dir / f"{item.name}_pred.json"
        try:
            record = json.loads(path.read_text())
        except (OSError, ValueError):
            return False
        same = record.get("image") == str(item.path) and record.get("source_bytes") == item.path.stat().st_size
        return same and all((path.parent / name).is_file() for name in record.get("outputs", {}).values())

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        out = engine.state.output
        for failure in out["failed"]:
            action = UNREADABLE if failure["stage"] == "input" else RUN_FAILED
            self.error_report.add(failure["source"], failure["stage"], failure["error"], action)
            self._progress(failure["source"], "failed (see errors.json)")
        for item in out["items"]:
            files = self.write_one(item)
            self.done += 1
            self._progress(item["source"], ", ".join(files.values()))

    def _progress(self, source: str, outcome: str) -> None:
        self.handled += 1
        log.info("[%d/%d] %s: %s", self.handled, self.todo, source, outcome)

    def finish(self) -> None:
        """Log the run's summary line; exit non-zero only when nothing could be processed."""
        failed = len(self.error_report.files)
        log.info("inference finished: %d done, %d failed, %d skipped (outputs complete) of %d files in %s%s",
                 self.done, failed, self.skipped, self.total, self.output_dir,
                 f"; problems listed in {self.error_report.path}" if self.error_report.errors else "")
        if self.done + self.skipped == 0:
            raise SystemExit(f"inference: no input could be processed ({failed} failed; see {self.error_report.path})")

    def write_one(self, item: dict[str, Any]) -> dict[str, str]:
        """Write the files of one image (an item of :class:`FolderInferenceEvaluator`); their names by format."""
        source, name = str(item["source"]), item["name"]
        original, model_size = tuple(item["original_size"]), tuple(item["model_size"])
        prob = F.interpolate(item["seg_prob"][None].float().cpu(), size=original, mode="bilinear")[0, 0]
        geometry = self._attempt(source, "geometry", lambda: read_geometry(source))
        spacing = self._attempt(source, "spacing", lambda: measurement_spacing(source))
        mask = (prob > self.mask_threshold).numpy()
        pred = Prediction(source, mask, self._boxes(item, original, model_size), geometry)
        base = self.output_dir / name
        files = {}
        for fmt in self.formats:
            if fmt in NEEDS_GEOMETRY and geometry is None:
                continue  # the geometry problem is reported already
            path = base.parent / f"{base.name}{FORMATS[fmt]}"
            path.unlink(missing_ok=True)  # no stale file from an earlier run where this one is not written
            if self._attempt(source, fmt, lambda: self._write(fmt, pred, path)):
                files[fmt] = path.name
        record = {
            "image": source,
            "source_bytes": Path(source).stat().st_size,
            "image_size": list(original),
            "classes": {n: round(float(p), 4) for n, p in zip(self.class_names, item["cls_prob"].cpu())},
            "det_gate": round(float(item["det_gate_prob"]), 4),
            "seg_gate": round(float(item["seg_gate_prob"]), 4),
            "gating": self._gating(item),
            "spacing": {"mm_per_pixel": list(spacing[0]), "source": spacing[1]} if spacing else None,
            "boxes": [self._box_record(box, spacing) for box in pred.boxes],
            "geometry": geometry.as_record() if geometry is not None else None,
            "mask": files.get("png"),
            "outputs": files,
        }
        json_path = base.parent / f"{base.name}_pred.json"
        atomic_write(json_path, json.dumps(record, indent=2).encode())
        return {"json": json_path.name, **files}

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
        """``step()``; a failure is reported and gives None instead of stopping the run."""
        try:
            return step()
        except Exception as err:  # reported with the file and stage, never dropped
            self.error_report.add(source, stage, f"{type(err).__name__}: {err}", OUTPUT_FAILED)
            return None

    def _boxes(
        self, item: dict[str, Any], original: tuple[int, ...], model_size: tuple[int, ...]
    ) -> list[dict[str, Any]]:
        """Boxes of one image in original pixels, with scores and label names."""
        scale = torch.tensor([o / m for o, m in zip(original, model_size)] * 2)
        det = item["det"]
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
    def _gating(item: dict[str, Any]) -> dict[str, Any] | None:
        """The gate decisions and thresholds of one image when the evaluator gated the heads, else None."""
        if "det_gated_in" not in item:
            return None
        return {
            "det_head_ran": bool(item["det_gated_in"]),
            "seg_head_ran": bool(item["seg_gated_in"]),
            "thresholds": dict(item["gate_thresholds"]),
        }
