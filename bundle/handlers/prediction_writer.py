"""PredictionWriter: per input image, the prediction record (JSON) and the mask and boxes as files viewers open."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from ignite.engine import Engine, Events
from PIL import Image

from bundle.data.inputs import FolderInputs, InputFile
from bundle.data.readers import load_cxr
from bundle.decisions import Decision, DecisionPolicy, decide, dicom_warnings, prediction_record
from bundle.fileio import atomic_write, remove_temporaries
from bundle.outputs import (
    ErrorReport,
    ImageGeometry,
    is_dicom,
    measurement_spacing,
    read_geometry,
    write_dicom_seg,
    write_nifti,
    write_nifti_map,
    write_nrrd,
    write_roi_markups,
)
from bundle.outputs.report import NOT_AN_IMAGE, OUTPUT_FAILED, RUN_FAILED, UNREADABLE

log = logging.getLogger("bundle.outputs")

#: Output formats besides the JSON, and their file name endings.
FORMATS: dict[str, str] = {
    "png": "_mask.png",
    "overlay": "_overlay.png",
    "nifti": "_mask.nii.gz",
    "nrrd": "_mask.nrrd",
    "markups": "_boxes.mrk.json",
    "dicom_seg": "_seg.dcm",
    "saliency": "_saliency.png",
    "saliency_nifti": "_saliency.nii.gz",
    "gradcam": ".png",
    "gradcam_nifti": ".nii.gz",
}
#: Formats with one file per explained finding, ``<name>_gradcam_<finding><ending>``.
PER_FINDING: frozenset[str] = frozenset({"gradcam", "gradcam_nifti"})
#: File name tag of each explanation method (Grad-CAM, or the input gradient of networks with the saliency bridge).
EXPLANATION_TAGS: dict[str, str] = {"grad_cam": "gradcam", "input_gradient": "inputgrad"}
#: Formats written in the source's physical geometry.
NEEDS_GEOMETRY: frozenset[str] = frozenset({"nifti", "nrrd", "markups", "saliency_nifti", "gradcam_nifti"})
#: Overlay colours (RGB): the mask tint, the box outlines and the saliency heat (scaled by the map's value).
MASK_RGB, BOX_RGB, HEAT_RGB = np.array([255, 64, 64]), np.array([255, 220, 0]), np.array([255, 140, 0])


class PredictionWriter:
    """Write the outputs of every image a :class:`bundle.engines.FolderInferenceEvaluator` processes.

    Per image, under its output name ``<name>`` (:mod:`bundle.data.inputs`; sub-folders of the input folder are
    kept): ``<name>_pred.json``, the prediction record of :func:`bundle.decisions.prediction_record` (schema
    ``docs/schemas/prediction.schema.json``: findings, gates, boxes in pixels and mm, the operating points used,
    DICOM warnings, the names of the files below); then, per ``formats``: ``png`` (0/255 mask), ``overlay`` (the
    image with the mask tinted and the boxes drawn), ``nifti`` and ``nrrd`` (label-1 mask volumes overlaying the
    source in 3D Slicer), ``markups`` (one Slicer ROI per box; only when there are boxes, since Slicer cannot load
    an empty markups file), ``dicom_seg`` (DICOM inputs only), and for a network with a saliency head
    ``saliency`` (the image under the map of where a radiologist looks, as a heat tint) and ``saliency_nifti`` (that
    map, peak 1, as a float volume over the source); with ``explain`` (``FolderInferenceEvaluator``) ``gradcam`` and
    ``gradcam_nifti``, the same two for the Grad-CAM map of each explained finding,
    ``<name>_gradcam_<finding>.png`` / ``.nii.gz`` (record keys ``gradcam_<finding>``, ``gradcam_nifti_<finding>``);
    for a network with the saliency bridge its input-gradient map, ``<name>_inputgrad_<finding>.png`` / ``.nii.gz``
    (record keys ``inputgrad_<finding>``, ``inputgrad_nifti_<finding>``).
    See :mod:`bundle.outputs.geometry`. Findings, masks and boxes are :func:`bundle.decisions.decide`'s under ``policy``: nothing here applies a threshold.

    Every file is written atomically and the JSON last, so an image whose JSON names its source and every file it
    lists is complete: :meth:`pending` leaves such images out of a rerun (unless ``overwrite``), so a killed run
    over many files resumes where it stopped. Files that cannot be read or run are listed in ``error_report``
    (``errors.json``), and :meth:`finish` ends the run with one summary line.

    Args:
        output_dir: folder for the files (created).
        policy: the decision policy (shipped in the model file).
        error_report: where an input or output that fails is reported, the others still being written.
        formats: which of :data:`FORMATS` to write besides the JSON.
        segment_label: name of the mask's segment in the DICOM SEG.
        model_version: bundle version, recorded in the JSON and the DICOM SEG.
        model_hash: SHA-256 of the model file, recorded in the JSON.
    """

    def __init__(
        self,
        output_dir: str,
        policy: DecisionPolicy,
        error_report: ErrorReport,
        formats: Sequence[str] = tuple(FORMATS),
        segment_label: str = "lesion",
        model_version: str = "unknown",
        model_hash: str | None = None,
    ) -> None:
        unknown = set(formats) - set(FORMATS)
        if unknown:
            raise ValueError(f"unknown output formats {sorted(unknown)}; choose from {list(FORMATS)}")
        self.output_dir = Path(output_dir)
        self.policy = policy
        self.formats = list(formats)
        self.error_report = error_report
        self.segment_label = segment_label
        self.model_version = model_version
        self.model_hash = model_hash
        self.done = self.skipped = self.total = self.todo = self.handled = 0

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
        self.todo, self.handled = len(todo) + len(found.others), len(found.others)
        if self.skipped:
            log.info("%d of %d images have complete outputs in %s and are skipped (--overwrite True redoes them)",
                     self.skipped, len(found.images), self.output_dir)
        return todo

    def json_path(self, name: str) -> Path:
        return self.output_dir / f"{name}_pred.json"

    def complete(self, item: InputFile) -> bool:
        """Whether ``item`` has its JSON (written last) for this source, newer than the source, and every file
        that JSON names."""
        path = self.json_path(item.name)
        try:
            record = json.loads(path.read_text())
            fresh = path.stat().st_mtime >= item.path.stat().st_mtime
        except (OSError, ValueError):
            return False
        same = isinstance(record, dict) and record.get("input", {}).get("file") == str(item.path) and fresh
        return same and all((path.parent / name).is_file() for name in record.get("files", {}).values() if name)

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
        decision = decide(item["heads"], self.policy, item["original_size"], item["model_size"])
        geometry = self._attempt(source, "geometry", lambda: read_geometry(source))
        spacing = self._attempt(source, "spacing", lambda: measurement_spacing(source))
        warnings = (self._attempt(source, "warnings", lambda: dicom_warnings(source)) or []) if is_dicom(source) else []
        base = self.output_dir / name
        files: dict[str, str] = {}
        for fmt in self.formats:
            if fmt in NEEDS_GEOMETRY and geometry is None:
                continue  # the geometry problem is reported already
            if fmt in PER_FINDING:
                files.update(self._write_explanations(fmt, source, decision, geometry, base))
                continue
            path = base.parent / f"{base.name}{FORMATS[fmt]}"
            path.unlink(missing_ok=True)  # no stale file from an earlier run where this one is not written
            if self._attempt(source, fmt, lambda: self._write(fmt, source, decision, geometry, path)):
                files[fmt] = path.name
        named = {"mask": files.get("png"), "overlay": files.get("overlay"), **files}
        record = prediction_record(decision, source, self.model_version, self.model_hash, spacing, warnings, named)
        json_path = self.json_path(name)
        atomic_write(json_path, json.dumps(record, indent=2).encode())
        return {"json": json_path.name, **files}

    def _write(self, fmt: str, source: str, decision: Decision, geometry: ImageGeometry | None, path: Path) -> bool:
        """Write one format; False when it does not apply to this image (no mask, no boxes, not DICOM)."""
        mask = decision.mask
        boxes = [{"box": list(b.box), "score": b.score, "label": b.label} for b in decision.boxes]
        if fmt in ("png", "nifti", "nrrd", "dicom_seg") and mask is None:
            return False
        if fmt in ("saliency", "saliency_nifti") and decision.saliency is None:
            return False
        if fmt == "png":
            atomic_write(path, _png_bytes(np.ascontiguousarray(mask.T).astype(np.uint8) * 255))
        elif fmt == "overlay":
            atomic_write(path, _png_bytes(overlay(source, decision)))
        elif fmt == "nifti":
            write_nifti(mask, geometry, path)
        elif fmt == "nrrd":
            write_nrrd(mask, geometry, path)
        elif fmt == "markups":
            if not boxes:
                return False
            write_roi_markups(boxes, geometry, path)
        elif fmt == "saliency":
            atomic_write(path, _png_bytes(heat_overlay(source, decision.saliency)))
        elif fmt == "saliency_nifti":
            write_nifti_map(decision.saliency, geometry, path)
        elif fmt == "dicom_seg":
            if not is_dicom(source):
                return False
            write_dicom_seg(mask, source, path, self.segment_label, model_version=self.model_version)
        return True

    def _write_explanations(
        self, fmt: str, source: str, decision: Decision, geometry: ImageGeometry | None, base: Path
    ) -> dict[str, str]:
        """One file of format ``fmt`` per explained finding, named by the explanation's method: for Grad-CAM
        ``<name>_gradcam_<finding>`` (record key ``<fmt>_<finding>``), for the input gradient
        ``<name>_inputgrad_<finding>`` (record key ``<fmt>_<finding>`` with ``inputgrad`` for ``gradcam``)."""
        written = {}
        tag = EXPLANATION_TAGS[decision.explanation_method]
        for finding, values in decision.explanations.items():
            path = base.parent / f"{base.name}_{tag}_{finding}{FORMATS[fmt]}"
            if fmt == "gradcam":
                step = lambda: atomic_write(path, _png_bytes(heat_overlay(source, values)))  # noqa: E731
            else:
                step = lambda: write_nifti_map(values, geometry, path)  # noqa: E731
            if self._attempt(source, f"{fmt} {finding}", lambda: step() or True):
                written[f"{fmt.replace('gradcam', tag)}_{finding}"] = path.name
        return written

    def _attempt(self, source: str, stage: str, step: Callable[[], Any]) -> Any:
        """``step()``; a failure is reported and gives None instead of stopping the run."""
        try:
            return step()
        except Exception as err:  # reported with the file and stage, never dropped
            self.error_report.add(source, stage, f"{type(err).__name__}: {err}", OUTPUT_FAILED)
            return None


def _png_bytes(rows_first: np.ndarray) -> bytes:
    """PNG bytes of an (H, W) or (H, W, 3) uint8 array (PIL wants rows first; this project's axis 0 is x)."""
    buffer = io.BytesIO()
    Image.fromarray(rows_first).save(buffer, format="PNG", compress_level=1)  # 0/255 masks compress well anyway
    return buffer.getvalue()


def overlay(source: str, decision: Decision) -> np.ndarray:
    """The image of ``source`` as (H, W, 3) uint8 with the decision's mask tinted and its boxes outlined."""
    grey = load_cxr(source)[0].numpy().T  # (H, W) in [0, 1]
    rgb = np.repeat((grey * 255).astype(np.float32)[..., None], 3, axis=2)
    if decision.mask is not None:
        inside = decision.mask.T
        rgb[inside] = 0.6 * rgb[inside] + 0.4 * MASK_RGB
    height, width = grey.shape
    line = max(1, round(min(height, width) / 256))
    for box in decision.boxes:
        x1, y1, x2, y2 = (int(round(c)) for c in box.box)
        x1, x2 = np.clip([x1, x2], 0, width - 1)
        y1, y2 = np.clip([y1, y2], 0, height - 1)
        for rows, cols in ((slice(y1, y1 + line), slice(x1, x2 + 1)), (slice(y2 - line + 1, y2 + 1), slice(x1, x2 + 1)),
                           (slice(y1, y2 + 1), slice(x1, x1 + line)), (slice(y1, y2 + 1), slice(x2 - line + 1, x2 + 1))):
            rgb[rows, cols] = BOX_RGB
    return rgb.astype(np.uint8)


def heat_overlay(source: str, values: np.ndarray) -> np.ndarray:
    """The image of ``source`` as (H, W, 3) uint8 tinted by the (W, H) map ``values``, scaled to its peak."""
    grey = load_cxr(source)[0].numpy().T
    heat = (values / max(float(values.max()), 1e-12)).T[..., None]
    rgb = np.repeat((grey * 255).astype(np.float32)[..., None], 3, axis=2)
    return ((1 - 0.6 * heat) * rgb + 0.6 * heat * HEAT_RGB).astype(np.uint8)
