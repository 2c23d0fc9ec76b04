"""FolderInferenceEvaluator: inference over a folder in which any file may fail without taking others down."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from monai.engines.utils import IterationEvents

from bundle.data.inference_data import failure_message
from bundle.decisions import image_heads
from bundle.explain import grad_cam_pass, input_gradient_pass
from bundle.networks import MultiCheXNetEnsemble
from bundle.runtimes import gate_outputs

from .distributed import unwrap
from .evaluator import MultiTaskEvaluator

log = logging.getLogger("bundle.inference")



class FolderInferenceEvaluator(MultiTaskEvaluator):
    """:class:`MultiTaskEvaluator` over :func:`bundle.data.inference_data.inference_collate` batches.

    The iteration output is ``{"items": [...], "failed": [...]}``: one item per image that went through the
    network (``source``, ``name``, ``original_size``, ``model_size`` and ``heads``: that image's head outputs and
    decoded boxes, as :func:`bundle.decisions.decide` takes them), and one failure record (``source``, ``name``, ``error``,
    ``stage``) per file that could not be read or run. When the network fails on a batch, each of its images is
    retried alone, so that one bad image cannot take its neighbours down.

    With ``explain`` each item's heads also hold ``gradcam``: the Grad-CAM maps of every finding
    (:func:`bundle.explain.grad_cam_pass`; eager backend only, as they need gradients), or for a network with the
    saliency bridge ``input_gradient`` (:func:`bundle.explain.input_gradient_pass`, MultiMix's saliency). The heads then run on
    that pass's encoder features, all of them, and the gates are applied to their outputs
    (:func:`bundle.runtimes.gate_outputs`, as for ONNX Runtime): the encoder still runs once.
    """

    def __init__(self, *args: Any, explain: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if explain and self.backend_name != "eager":
            raise ValueError(f"explain: explanation maps need gradients, so the eager backend, not {self.backend_name!r}")
        if explain and isinstance(unwrap(self.network), MultiCheXNetEnsemble):
            raise ValueError(f"explain: explanation maps are of one network, and this model is an ensemble of "
                             f"{unwrap(self.network).init_args['members']} (its ckpt_dir's model.pt); run without explain")
        self.explain = explain

    def _iteration(self, engine: FolderInferenceEvaluator, batchdata: dict[str, Any]) -> dict[str, Any]:
        failed = [{**f, "stage": "input"} for f in batchdata["failed"]]
        items: list[dict[str, Any]] = []
        image = batchdata["image"]
        if image is not None:
            image = image.to(engine.state.device, non_blocking=engine.non_blocking)
            indices = list(range(image.shape[0]))
            try:
                items = engine._items(batchdata, image, indices)
            except Exception as err:  # retried image by image below
                if len(indices) == 1:
                    failed.append(engine._failure(batchdata, 0, err))
                else:
                    log.warning("the network failed on a batch of %d images (%s); retrying each alone",
                                len(indices), failure_message(err))
                    for i in indices:
                        try:
                            items += engine._items(batchdata, image[i : i + 1], [i])
                        except Exception as one:  # reported with its file, the run goes on
                            failed.append(engine._failure(batchdata, i, one))
        engine.state.output = {"items": items, "failed": failed}
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        return engine.state.output

    def _items(self, batchdata: dict[str, Any], image: torch.Tensor, indices: Sequence[int]) -> list[dict[str, Any]]:
        """One item per image of ``image`` (the batch images ``indices``): its head outputs on the CPU."""
        pred = self._explained(image) if self.explain else self.forward(image)
        det = self.detector.predict(pred["det_cls"], pred["det_box"], image.shape[2:])
        pred = {k: v.cpu() for k, v in pred.items() if k not in ("det_cls", "det_box")}
        return [
            {
                "source": batchdata["source"][i],
                "name": batchdata["name"][i],
                "original_size": batchdata["original_size"][i],
                "model_size": tuple(image.shape[2:]),
                "heads": image_heads(pred, j, [{k: v.cpu() for k, v in d.items()} for d in det]),
            }
            for j, i in enumerate(indices)
        ]

    def _explained(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        """Head outputs and explanation maps of one batch, from one encoder pass: Grad-CAM (``gradcam``), or for a
        network with the saliency bridge its input-gradient maps (``input_gradient``), whose top finding's map
        also feeds the bridge."""
        network = unwrap(self.network)
        if network.bridge is None:
            features, maps = grad_cam_pass(network, image)
            saliency, key = None, "gradcam"
        else:
            features, maps, saliency = input_gradient_pass(network, image)
            key = "input_gradient"
        with self.mode(network), torch.no_grad():
            pred = network.forward_heads(image, features, None, saliency)
        if self.gate_thresholds is not None:
            pred = gate_outputs(pred, self.gate_thresholds["det_gate"], self.gate_thresholds["seg_gate"])
        pred = {k: v if v.dtype == torch.bool else v.float() for k, v in pred.items()}
        pred[key] = maps
        return pred

    @staticmethod
    def _failure(batchdata: dict[str, Any], i: int, err: BaseException) -> dict[str, Any]:
        return {"source": batchdata["source"][i], "name": batchdata["name"][i], "error": failure_message(err),
                "stage": "inference"}
