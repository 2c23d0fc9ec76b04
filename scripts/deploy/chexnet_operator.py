"""MultiCheXNet inference for a MONAI Deploy application: one exported TorchScript model and the package it
carries, all heads gated at the package's thresholds, findings only through :mod:`bundle.decisions`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import torch
import torch.nn.functional as F
from monai.deploy.core import AppContext, Fragment, Image, OperatorSpec
from monai.deploy.core.domain.dicom_series_selection import StudySelectedSeries
from monai.deploy.operators.inference_operator import InferenceOperator

from bundle.data.readers import dicom_pixel_spacing_source, dicom_to_array, normalise_intensity
from bundle.decisions import Decision, decide, dicom_warnings, image_heads, prediction_record
from bundle.export import load_exported
from bundle.packaging import file_sha256


class CheXNetInferenceOperator(InferenceOperator):
    """Run the exported MultiCheXNet (``model.ts`` from ``scripts/export_torchscript.py``, with its embedded
    ``metadata.json`` and model package) on the radiograph of the first selected series.

    The SDK's ``MonaiBundleInferenceOperator`` runs a bundle's own ``preprocessing`` / ``inferer`` /
    ``postprocessing`` on file paths and expects one tensor (or class) output; this network returns a dict of
    six heads, so this operator calls the bundle's parts itself, on the series' DICOM data set rather than on
    ``DICOMSeriesToVolumeOperator``'s volume (which applies no VOI LUT): the bundle's grey-level pipeline
    (``dicom_to_array``: modality and VOI LUTs, MONOCHROME1 inverted), min-max to [0, 1], area resize to the
    package's image size, ``forward_gated`` at the package's gate thresholds, boxes decoded by the package's
    detector, then :func:`bundle.decisions.decide` and :func:`bundle.decisions.prediction_record` with the
    data set's pixel spacing and header warnings. So the findings are those of ``run inference``.

    Outputs: ``seg_image`` (uint8 ``Image``, the decision's mask, (1, rows, columns) like the source frame),
    ``findings`` (the prediction record, ``docs/schemas/prediction.schema.json``) and ``findings_text`` (its
    summary, for a text SR).
    """

    def __init__(self, fragment: Fragment, *args: Any, app_context: AppContext, model_path: Path, **kwargs: Any) -> None:
        self.network, self.bundle_metadata, _, self.package = load_exported(str(model_path))
        self.policy = self.package.policy
        self.detector = self.package.detector()
        self.gate_thresholds = self.policy.forward_gate_thresholds()
        self.model_version = str(self.bundle_metadata.get("version", "unknown"))
        self.model_hash = file_sha256(model_path)
        self.app_context = app_context
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("study_selected_series_list")
        spec.output("seg_image")
        spec.output("findings")
        spec.output("findings_text")

    def pre_process(self, data: pydicom.Dataset, *args: Any, **kwargs: Any) -> torch.Tensor:
        """(1, 1, W, H) model input from one radiograph's data set (the bundle's arrays are x-first)."""
        grey = torch.from_numpy(np.ascontiguousarray(dicom_to_array(data).T))[None]
        return F.interpolate(normalise_intensity(grey)[None], size=self.policy.image_size, mode="area")

    def predict(self, data: torch.Tensor, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        """The gated head outputs, and the decoded boxes under ``boxes`` (a list with one dict per image)."""
        with torch.no_grad():
            out = self.network.forward_gated(data, self.gate_thresholds["det_gate"], self.gate_thresholds["seg_gate"])
        out = {k: v if v.dtype == torch.bool else v.float() for k, v in out.items()}
        out["boxes"] = self.detector.predict(out.pop("det_cls"), out.pop("det_box"), data.shape[2:])
        return out

    def post_process(self, data: dict[str, Any], *args: Any, **kwargs: Any) -> tuple[Decision, dict[str, Any]]:
        """The decision and its record, for the data set ``kwargs['dataset']`` read from ``kwargs['source']``."""
        ds: pydicom.Dataset = kwargs["dataset"]
        source: str = kwargs["source"]
        heads = image_heads(data, 0, data["boxes"])
        decision = decide(heads, self.policy, (int(ds.Columns), int(ds.Rows)), self.policy.image_size)
        warnings = dicom_warnings(source if Path(source).is_file() else ds)
        record = prediction_record(
            decision, source, self.model_version, self.model_hash, dicom_pixel_spacing_source(ds), warnings
        )
        return decision, record

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        ds = selected_radiograph(op_input.receive("study_selected_series_list"))
        source = str(getattr(ds, "filename", None) or ds.SOPInstanceUID)
        decision, record = self.post_process(self.predict(self.pre_process(ds)), dataset=ds, source=source)
        op_output.emit(Image(decision.mask.T[None].astype(np.uint8)), "seg_image")
        op_output.emit(record, "findings")
        op_output.emit(summary_text(record), "findings_text")


def selected_radiograph(selection: list[StudySelectedSeries]) -> pydicom.Dataset:
    """The data set of the one radiograph in the first selected series.

    Raises:
        ValueError: nothing selected (no CR or DX series), or a series of more than one instance.
    """
    if not selection or not selection[0].selected_series:
        raise ValueError("no CR or DX series in the input: give the folder of a chest radiograph's DICOM file")
    series = selection[0].selected_series[0].series
    instances = series.get_sop_instances()
    if len(instances) != 1:
        raise ValueError(
            f"series {series.SeriesInstanceUID} holds {len(instances)} instances; the application reads one "
            "radiograph per series: put each series' file in its own input folder"
        )
    return instances[0].get_native_sop_instance()


def summary_text(record: dict[str, Any]) -> str:
    """A plain-text report of a prediction record, for a DICOM text SR."""
    findings = record["findings"]
    positive = [name for name, f in findings.items() if f["positive"]]
    title = f"MultiCheXNet {record['model']['version']} findings (calibrated probabilities at the model's operating points"
    lines = [f"{title}; not a diagnosis):", f"Positive: {', '.join(positive) or 'none'}"]
    for name, f in sorted(findings.items(), key=lambda kv: -kv[1]["probability"]):
        verdict = "positive" if f["positive"] else "negative"
        lines.append(f"{name}: {f['probability']:.3f} (threshold {f['threshold']:.3f}, {verdict})")
    for name, gate in record["gates"].items():
        state = ("open" if gate["open"] else "shut") if gate["gated"] else "not gated"
        lines.append(f"{name}: p={gate['probability']:.3f} threshold={gate['threshold']:.3f} {state}")
    mask = record["mask"]
    if mask is not None:
        area = f", {mask['area_mm2']:.0f} mm2" if mask["area_mm2"] is not None else ""
        lines.append(f"mask ({record['policy']['tasks']['seg']}): {mask['pixels']} pixels, "
                     f"{mask['area_fraction']:.1%} of the image{area}")
    lines.append(f"boxes: {len(record['boxes'])}")
    for box in record["boxes"]:
        lines.append(f"{box['label']} {box['score']:.3f} at [{', '.join(f'{c:.0f}' for c in box['box'])}] px")
    lines += [f"warning {w['code']}: {w['message']}" for w in record["warnings"]]
    return "\n".join(lines)
