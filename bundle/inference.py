"""Single-image inference components: the ``inferer`` and ``postprocessing`` of ``configs/inference.json``.

These are the bundle keys that MONAI Label's ``BundleInferTask`` reads (``preprocessing``, ``inferer``,
``postprocessing``): it runs ``inferer(image[None], network)``, un-batches the dict of head outputs into
``pred`` and then runs ``postprocessing``, which turns that dict into the lesion label map MONAI Label writes.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from monai.inferers import Inferer
from monai.transforms import MapTransform
from monai.utils import convert_to_tensor
from torch import Tensor, nn

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
    """Turn one image's head outputs (the dict in ``pred``) into MONAI Label's label map and result.

    At the original image size (``spatial_shape`` of the ``image`` metadata) it writes:

    - ``pred``: the lesion label map, (W, H) uint8, 1 where the lesion probability exceeds ``mask_threshold``;
    - ``seg``: the lesion probability, (1, W, H) float (the first ``network_data_format`` output, which MONAI
      Label's ``Restored`` finds already at the original size);
    - ``result``: finding and gate probabilities, the gate decisions and the boxes (``[x1, y1, x2, y2]``,
      x = column, original pixels), as JSON-ready values;
    - ``result_extension``: ``default_extension`` when the request named none, so that a JPEG or DICOM input
      does not get a lossy or image-typed label file.

    Args:
        detector: turns the detection head's outputs into scored boxes.
        class_names: names of the classification outputs.
        det_class_names: names of the box classes.
        mask_threshold: probability above which a pixel is lesion.
        default_extension: label file extension used when the request has no ``result_extension``.
    """

    def __init__(
        self,
        detector: CheXDetector,
        class_names: Sequence[str],
        det_class_names: Sequence[str] = ("opacity",),
        mask_threshold: float = 0.5,
        default_extension: str = ".png",
    ) -> None:
        super().__init__(keys="pred")
        self.detector = detector
        self.class_names = list(class_names)
        self.det_class_names = list(det_class_names)
        self.mask_threshold = mask_threshold
        self.default_extension = default_extension

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        heads = {k: convert_to_tensor(v, track_meta=False).cpu() for k, v in d["pred"].items()}
        model_size = tuple(d["image"].shape[1:])
        original = tuple(int(s) for s in d["image"].meta["spatial_shape"])
        prob = F.interpolate(torch.sigmoid(heads["seg"].float())[None], size=original, mode="bilinear")[0]
        d["seg"] = prob
        d["pred"] = (prob[0] > self.mask_threshold).to(torch.uint8).numpy()
        d["result"] = {**(d.get("result") or {}), **self._summary(heads, model_size, original)}
        d["result_extension"] = d.get("result_extension") or self.default_extension
        return d

    def _summary(
        self, heads: Mapping[str, Tensor], model_size: tuple[int, ...], original: tuple[int, ...]
    ) -> dict[str, Any]:
        """Finding and gate probabilities, gate decisions and boxes (original pixels), as JSON values."""
        prob = {key: torch.sigmoid(heads[key].float()) for key in ("cls", "det_gate", "seg_gate")}
        det = self.detector.predict(heads["det_cls"][None].float(), heads["det_box"][None].float(), model_size)[0]
        scale = torch.tensor([o / m for o, m in zip(original, model_size)] * 2)
        names = self.det_class_names
        summary: dict[str, Any] = {
            "classes": {name: round(float(p), 4) for name, p in zip(self.class_names, prob["cls"])},
            "det_gate": round(float(prob["det_gate"][0]), 4),
            "seg_gate": round(float(prob["seg_gate"][0]), 4),
            "boxes": [
                {"box": [round(float(c), 2) for c in box], "score": round(float(s), 4), "label": names[i]}
                for box, s, i in zip(det["boxes"] * scale, det["scores"], det["labels"].tolist())
            ],
        }
        if "det_gated_in" in heads:  # the inferer gated the heads
            summary["gating"] = {f"{head}_head_ran": bool(heads[f"{head}_gated_in"]) for head in ("det", "seg")}
        return summary
