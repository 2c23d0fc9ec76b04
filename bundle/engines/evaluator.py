"""MultiTaskEvaluator: all heads in one encoder pass, turned into probabilities, masks and boxes."""

from __future__ import annotations

from typing import Any

import torch
from monai.engines import SupervisedEvaluator
from monai.engines.utils import IterationEvents

from bundle.detection import CheXDetector
from bundle.runtimes import Backend, load_backend, read_model_package

from .batch import batch_to_device, plain
from .distributed import unwrap
from .gating import gated_forward
from .precision import effective_amp

#: Batch keys copied into the output so metrics can compare predictions with labels.
LABEL_KEYS: tuple[str, ...] = (
    "cls", "cls_known", "has_cls", "mask", "has_seg", "boxes", "box_labels", "has_det", "saliency", "has_sal",
    "fixation_map", "has_fix",
)


class MultiTaskEvaluator(SupervisedEvaluator):
    """SupervisedEvaluator over multi-task batches.

    The iteration output holds ``image``, ``cls_prob`` (B, C), ``seg_prob`` (B, 1, W, H), ``det`` (per image
    ``boxes``/``scores``/``labels``), ``det_gate_prob`` and ``seg_gate_prob`` (B,), ``patient_id`` and, when
    the batch has them, the labels of :data:`LABEL_KEYS`.

    With ``gate_thresholds`` (``{"det_gate": p, "seg_gate": q}``) the detection / segmentation heads run only
    on images whose gate probability reaches the threshold (:func:`gated_forward`), on the same encoder
    features; the output then also holds ``det_gated_in`` and ``seg_gated_in``.

    Args:
        detector: turns CheXDet's outputs into scored boxes.
        gate_thresholds: positive-case gate thresholds; None runs every head on every image.
        backend: ``eager``, ``torchscript`` or ``onnxruntime`` (:func:`bundle.runtimes.load_backend`).
        backend_file: the exported model the backend runs; None makes it from ``network`` (weights loaded).
        args, kwargs: as :class:`monai.engines.SupervisedEvaluator` (``decollate`` is forced off; ``amp`` as
            in :class:`MultiTaskTrainer`).
    """

    def __init__(
        self,
        *args: Any,
        detector: CheXDetector,
        gate_thresholds: dict[str, float] | None = None,
        backend: str = "eager",
        backend_file: str | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs["decollate"] = False
        kwargs["amp"] = effective_amp(kwargs.get("amp", False), kwargs.get("device", args[0] if args else "cpu"))
        super().__init__(*args, **kwargs)
        self.detector = detector
        self.gate_thresholds = gate_thresholds
        self.backend_name = backend
        self.backend_file = backend_file
        self._backend: Backend | None = None

    def runner(self) -> Any:
        """What runs the network: the eager module, or the :mod:`bundle.runtimes` backend named ``backend``
        (from ``backend_file``, else made from the network once its weights are loaded, on first use)."""
        if self.backend_name == "eager":
            return self.network
        if self._backend is None:
            network = unwrap(self.network).eval()
            if self.backend_file is not None:
                exported = read_model_package(self.backend_file)
                if exported.network_args != network.init_args:
                    raise ValueError(
                        f"{self.backend_file}: exported from another network ({exported.network_args}) than the "
                        f"checkpoint's ({network.init_args}); export the checkpoint again"
                    )
            self._backend = load_backend(self.backend_name, network, self.backend_file)
        return self._backend

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """The network's float32 head outputs for one batch (B, 1, W, H): all heads, or gated by
        ``gate_thresholds`` (then with ``det_gated_in`` / ``seg_gated_in``)."""
        runner = self.runner()
        with self.mode(self.network), torch.no_grad():
            with torch.autocast(self.state.device.type, enabled=self.amp, **self.amp_kwargs):
                if self.gate_thresholds is None:
                    pred = self.inferer(plain(image), runner)
                else:
                    pred = gated_forward(
                        runner, plain(image), self.gate_thresholds["det_gate"], self.gate_thresholds["seg_gate"]
                    )
            self.fire_event(IterationEvents.FORWARD_COMPLETED)
        return {k: v if v.dtype == torch.bool else v.float() for k, v in pred.items()}

    def predict(self, image: torch.Tensor) -> dict[str, Any]:
        """Probabilities, decoded boxes, the saliency distribution (``sal_prob``, with a saliency head) and (when
        gating) the gate decisions of one batch (B, 1, W, H)."""
        pred = self.forward(image)
        output: dict[str, Any] = {
            "cls_prob": torch.sigmoid(pred["cls"]),
            "seg_prob": torch.sigmoid(pred["seg"]),
            "det": self.detector.predict(pred["det_cls"], pred["det_box"], image.shape[2:]),
            "det_gate_prob": torch.sigmoid(pred["det_gate"])[:, 0],
            "seg_gate_prob": torch.sigmoid(pred["seg_gate"])[:, 0],
        }
        if "sal" in pred:
            output["sal_prob"] = pred["sal"].exp()
        if self.gate_thresholds is not None:
            output.update(
                det_gated_in=pred["det_gated_in"], seg_gated_in=pred["seg_gated_in"], gate_thresholds=self.gate_thresholds
            )
        return output

    def _iteration(self, engine: MultiTaskEvaluator, batchdata: dict[str, Any]) -> dict[str, Any]:
        batch = batch_to_device(batchdata, engine.state.device, engine.non_blocking)
        output: dict[str, Any] = {key: batch[key] for key in LABEL_KEYS if key in batch}
        output.update(image=batch["image"], patient_id=batch.get("patient_id"), **engine.predict(batch["image"]))
        engine.state.output = output
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return output
