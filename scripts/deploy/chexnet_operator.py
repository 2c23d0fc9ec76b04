"""MultiCheXNet inference for a MONAI Deploy application: one exported TorchScript bundle, all heads, gated."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.deploy.core import AppContext, Fragment, Image, OperatorSpec
from monai.deploy.operators.inference_operator import InferenceOperator


class CheXNetInferenceOperator(InferenceOperator):
    """Run the exported MultiCheXNet (``model.ts`` with its embedded ``metadata.json`` / ``inference.json``) on one
    radiograph volume from ``DICOMSeriesToVolumeOperator`` (index order DHW, one slice, MONOCHROME1 inverted).

    The SDK's ``MonaiBundleInferenceOperator`` runs a bundle's own ``preprocessing`` / ``inferer`` /
    ``postprocessing`` and expects one tensor (or class) output; this bundle's preprocessing reads files through
    the ``bundle`` package and its network returns a dict of six heads, so this operator does the documented
    equivalent itself: min-max intensity to [0, 1] (the bundle's ``normalise_intensity``), area resize to the
    bundle's ``image_size``, ``forward_gated`` (one encoder pass, heads gated), mask back to the source size.

    Outputs: ``seg_image`` (uint8 ``Image``, 1 = lesion, DHW like the input), ``findings`` (dict: finding
    probabilities, gate probabilities, thresholds and decisions) and ``findings_text`` (a summary for a text SR).
    """

    def __init__(
        self,
        fragment: Fragment,
        *args: Any,
        app_context: AppContext,
        model_path: Path,
        det_threshold: float = 0.5,
        seg_threshold: float = 0.5,
        mask_threshold: float = 0.5,
        **kwargs: Any,
    ) -> None:
        extra = {"metadata.json": "", "inference.json": ""}
        self.network = torch.jit.load(str(model_path), map_location="cpu", _extra_files=extra).eval()
        if not extra["metadata.json"] or not extra["inference.json"]:
            raise ValueError(f"{model_path}: no embedded metadata.json / inference.json; export with ckpt_export")
        self.bundle_metadata = json.loads(extra["metadata.json"])
        config = json.loads(extra["inference.json"])
        self.image_size = tuple(int(s) for s in config["image_size"])
        self.class_names = list(self.bundle_metadata["network_data_format"]["outputs"]["cls"]["channel_def"].values())
        self.thresholds = {"det_gate": det_threshold, "seg_gate": seg_threshold}
        self.mask_threshold = mask_threshold
        self.app_context = app_context
        super().__init__(fragment, *args, **kwargs)

    def setup(self, spec: OperatorSpec) -> None:
        spec.input("image")
        spec.output("seg_image")
        spec.output("findings")
        spec.output("findings_text")

    def pre_process(self, data: Image, *args: Any, **kwargs: Any) -> torch.Tensor:
        """(1, 1, W, H) model input from a DHW single-slice volume (the bundle's arrays are x-first)."""
        volume = np.asarray(data.asnumpy(), dtype=np.float32)
        if volume.ndim != 3 or volume.shape[0] != 1:
            raise ValueError(f"expected one radiograph (1, rows, columns), got a volume of shape {volume.shape}")
        image = torch.from_numpy(volume[0].T.copy())[None, None]
        low, high = image.min(), image.max()
        image = (image - low) / (high - low) if high > low else torch.zeros_like(image)
        return F.interpolate(image, size=self.image_size, mode="area")

    def predict(self, data: torch.Tensor, *args: Any, **kwargs: Any) -> dict[str, torch.Tensor]:
        with torch.no_grad():
            return self.network.forward_gated(data, self.thresholds["det_gate"], self.thresholds["seg_gate"])

    def post_process(self, data: dict[str, torch.Tensor], *args: Any, **kwargs: Any) -> tuple[np.ndarray, dict]:
        """The DHW uint8 mask at ``kwargs['size']`` (columns, rows) and the findings record."""
        columns, rows = kwargs["size"]
        prob = F.interpolate(torch.sigmoid(data["seg"].float()), size=(columns, rows), mode="bilinear")[0, 0]
        mask = (prob > self.mask_threshold).numpy().T.astype(np.uint8)[None]
        findings = {
            "findings": {n: round(float(p), 4) for n, p in zip(self.class_names, torch.sigmoid(data["cls"][0]))},
            "gates": {
                name: {
                    "probability": round(float(torch.sigmoid(data[name][0, 0])), 4),
                    "threshold": self.thresholds[name],
                    "head_ran": bool(data[decision][0]),
                }
                for name, decision in (("det_gate", "det_gated_in"), ("seg_gate", "seg_gated_in"))
            },
            "lesion_pixels": int(mask.sum()),
        }
        return mask, findings

    def compute(self, op_input: Any, op_output: Any, context: Any) -> None:
        image: Image = op_input.receive("image")
        _, rows, columns = image.asnumpy().shape
        mask, findings = self.post_process(self.predict(self.pre_process(image)), size=(columns, rows))
        op_output.emit(Image(mask, metadata=image.metadata()), "seg_image")
        op_output.emit(findings, "findings")
        op_output.emit(summary_text(findings), "findings_text")


def summary_text(findings: dict) -> str:
    """A plain-text report of the findings record, for a DICOM text SR."""
    lines = ["MultiCheXNet findings (probabilities, not a diagnosis):"]
    lines += [f"{name}: {p:.3f}" for name, p in sorted(findings["findings"].items(), key=lambda kv: -kv[1])]
    for name, gate in findings["gates"].items():
        lines.append(f"{name}: p={gate['probability']:.3f} threshold={gate['threshold']} head ran={gate['head_ran']}")
    return "\n".join(lines)
