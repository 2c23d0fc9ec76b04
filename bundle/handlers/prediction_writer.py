"""PredictionWriter: per input image, a JSON of findings and boxes and a mask PNG, at the input's size."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events
from PIL import Image

from .files import atomic_write


class PredictionWriter:
    """Write ``<stem>_pred.json`` and ``<stem>_mask.png`` for every image an evaluator processes.

    Boxes and masks are mapped from the model's input size back to the original image size read from the
    image metadata (``spatial_shape``). The JSON holds class probabilities by name, the gate probabilities,
    and the boxes (``[x1, y1, x2, y2]`` in original pixels, x = column) with scores and labels.

    Args:
        output_dir: folder for the files (created).
        class_names: names of the classification outputs.
        det_class_names: names of the box classes.
        mask_threshold: probability above which a pixel is in the mask.
    """

    def __init__(
        self,
        output_dir: str,
        class_names: Sequence[str],
        det_class_names: Sequence[str] = ("opacity",),
        mask_threshold: float = 0.5,
    ) -> None:
        self.output_dir = Path(output_dir)
        self.class_names = list(class_names)
        self.det_class_names = list(det_class_names)
        self.mask_threshold = mask_threshold

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        self.output_dir.mkdir(parents=True, exist_ok=True)
        out = engine.state.output
        meta = out["image"].meta
        model_size = tuple(out["image"].shape[2:])
        for i, source in enumerate(meta["filename_or_obj"]):
            original = tuple(int(s) for s in meta["spatial_shape"][i])
            self.write_one(source, original, model_size, out, i)

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

    def write_one(
        self, source: str, original: tuple[int, ...], model_size: tuple[int, ...], out: dict[str, Any], i: int
    ) -> None:
        """Write the two files of sample ``i`` of the output ``out``."""
        stem = Path(source).name.split(".")[0]
        prob = F.interpolate(out["seg_prob"][i : i + 1].float().cpu(), size=original, mode="bilinear")[0, 0]
        mask = (prob > self.mask_threshold).numpy().astype(np.uint8) * 255
        mask_path = self.output_dir / f"{stem}_mask.png"
        png = io.BytesIO()
        Image.fromarray(np.ascontiguousarray(mask.T)).save(png, format="PNG")  # array axis 0 is x; PIL: rows first
        atomic_write(mask_path, png.getvalue())
        scale = torch.tensor([o / m for o, m in zip(original, model_size)] * 2)
        det = out["det"][i]
        boxes = [
            {"box": [round(float(c), 2) for c in box], "score": round(float(score), 4), "label": self.det_class_names[int(label)]}
            for box, score, label in zip(det["boxes"].cpu() * scale, det["scores"].cpu(), det["labels"].cpu())
        ]
        record = {
            "image": str(source),
            "image_size": list(original),
            "classes": {n: round(float(p), 4) for n, p in zip(self.class_names, out["cls_prob"][i].cpu())},
            "det_gate": round(float(out["det_gate_prob"][i]), 4),
            "seg_gate": round(float(out["seg_gate_prob"][i]), 4),
            "gating": self._gating(out, i),
            "boxes": boxes,
            "mask": mask_path.name,
        }
        atomic_write(self.output_dir / f"{stem}_pred.json", json.dumps(record, indent=2).encode())
