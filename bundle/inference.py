"""Single-image inference components: the ``inferer`` and ``postprocessing`` of ``configs/inference.json``.

These are the bundle keys that MONAI Label's ``BundleInferTask`` reads (``preprocessing``, ``inferer``,
``postprocessing``): it runs ``inferer(image[None], network)``, un-batches the dict of head outputs into
``pred`` and then runs ``postprocessing``, which turns that dict into the label map and the prediction record MONAI Label writes.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.inferers import Inferer
from monai.transforms import MapTransform
from monai.utils import convert_to_tensor
from torch import Tensor, nn

from bundle.decisions import DecisionPolicy, decide, prediction_record
from bundle.detection import CheXDetector
from bundle.engines.gating import gated_forward


class MultiTaskInferer(Inferer):
    """All MultiCheXNet heads on one encoder pass, gated as :class:`bundle.engines.MultiTaskEvaluator` gates.

    Args:
        gate_thresholds: ``{"det_gate": p, "seg_gate": q}``; the detection / segmentation heads run only on
            images whose gate probability reaches the threshold. None runs every head on every image.
    """

    def __init__(self, gate_thresholds: Mapping[str, float] | None = None) -> None:
        super().__init__()
        self.gate_thresholds = gate_thresholds

    def __call__(self, inputs: Tensor, network: nn.Module, *args: Any, **kwargs: Any) -> dict[str, Tensor]:
        image = convert_to_tensor(inputs, track_meta=False)
        if self.gate_thresholds is None:
            return network(image)
        return gated_forward(network, image, self.gate_thresholds["det_gate"], self.gate_thresholds["seg_gate"])


class HeadsToLabeld(MapTransform):
    """Turn one image's head outputs (the dict in ``pred``) into MONAI Label's label map and result, by
    :func:`bundle.decisions.decide` under ``policy`` (the same decisions as ``run inference``).

    At the original image size (``spatial_shape`` of the ``image`` metadata) it writes:

    - ``pred``: the label map, (W, H) uint8, the post-processed mask of the decision;
    - ``seg``: the mask probability, (1, W, H) float (the first ``network_data_format`` output, which MONAI
      Label's ``Restored`` finds already at the original size);
    - ``result``: the prediction record (``docs/schemas/prediction.schema.json``) as JSON-ready values;
    - ``result_extension``: ``default_extension`` when the request named none, so that a JPEG or DICOM input
      does not get a lossy or image-typed label file.

    Args:
        detector: turns the detection head's outputs into scored boxes.
        policy: the decision policy (shipped in the model file).
        model_version, model_hash: recorded in the result.
        default_extension: label file extension used when the request has no ``result_extension``.
    """

    def __init__(
        self,
        detector: CheXDetector,
        policy: DecisionPolicy,
        model_version: str = "unknown",
        model_hash: str | None = None,
        default_extension: str = ".png",
    ) -> None:
        super().__init__(keys="pred")
        self.detector = detector
        self.policy = policy
        self.model_version = model_version
        self.model_hash = model_hash
        self.default_extension = default_extension

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        heads = {k: convert_to_tensor(v, track_meta=False).cpu() for k, v in d["pred"].items()}
        model_size = tuple(d["image"].shape[1:])
        original = tuple(int(s) for s in d["image"].meta["spatial_shape"])
        det = self.detector.predict(heads["det_cls"][None].float(), heads["det_box"][None].float(), model_size)
        one = {k: v.float() if v.is_floating_point() else v for k, v in heads.items() if k not in ("det_cls", "det_box")}
        decision = decide({**one, **det[0]}, self.policy, original, model_size)
        source = str(d["image"].meta.get("filename_or_obj", ""))
        d["seg"] = torch.as_tensor(decision.seg_prob)[None]
        d["pred"] = decision.mask.astype(np.uint8)
        d["result"] = {**(d.get("result") or {}), **prediction_record(decision, source, self.model_version, self.model_hash)}
        d["result_extension"] = d.get("result_extension") or self.default_extension
        return d
