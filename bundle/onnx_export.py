"""ONNX export of MultiCheXNet: the encoder, every head and both gates in one graph, gated as ``forward_gated``.

The graph is ``MultiCheXNet.forward_gated``: inputs ``image`` (B, C, W, H) float32 with W and H multiples of 32
(batch and both sides dynamic) and the scalar float32 gate thresholds :data:`THRESHOLD_NAMES`; outputs
:func:`output_names` then :data:`GATED_NAMES`, with the shapes of ``forward_gated``. The detection and segmentation
heads run on the rows their gate passes only (thresholds 0 pass every image: ``forward``'s outputs), so ONNX
Runtime gains from gating as PyTorch does. The opset and any caller metadata travel in the model's
``metadata_props``.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import onnx
import torch
from torch import Tensor, nn
from torch.export import Dim

from bundle.networks.saliency_bridge import refuse_export

#: Name of the graph input.
INPUT_NAME: str = "image"
#: Graph outputs, in order: the keys of ``MultiCheXNet.forward``, and ``sal`` after them for a network with a
#: saliency head (:func:`output_names`).
OUTPUT_NAMES: tuple[str, ...] = ("cls", "seg", "det_cls", "det_box", "det_gate", "seg_gate")


def output_names(network: nn.Module) -> tuple[str, ...]:
    """The graph outputs of ``network``: :data:`OUTPUT_NAMES`, plus ``sal`` with a saliency head."""
    return OUTPUT_NAMES + (("sal",) if getattr(network, "sal_head", None) is not None else ())


#: Scalar graph inputs after the image: the detection and segmentation gate thresholds.
THRESHOLD_NAMES: tuple[str, str] = ("det_threshold", "seg_threshold")
#: Graph outputs after :func:`output_names`: whether each image passed the detection / segmentation gate.
GATED_NAMES: tuple[str, str] = ("det_gated_in", "seg_gated_in")
#: ONNX opset of the exported graph (torch 2.13's exporter default).
ONNX_OPSET: int = 20
#: ``metadata_props`` key holding the opset.
OPSET_KEY: str = "opset"


class _Gated(nn.Module):
    """``network.forward_gated`` as a tuple in :func:`output_names` + :data:`GATED_NAMES` order."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.names = output_names(network) + GATED_NAMES

    def forward(self, image: Tensor, det_threshold: Tensor, seg_threshold: Tensor) -> tuple[Tensor, ...]:
        out = self.network.forward_gated(image, det_threshold, seg_threshold)
        return tuple(out[key] for key in self.names)


def export_onnx(
    network: nn.Module,
    filepath: str | Path | None = None,
    metadata: Mapping[str, str] | None = None,
    opset: int = ONNX_OPSET,
    in_channels: int = 1,
) -> onnx.ModelProto:
    """Export ``network`` (a MultiCheXNet, put in eval mode) to ONNX, check it and return the model.

    Args:
        network: the network to export (CPU weights).
        filepath: where to save the model (weights inside the file); None only returns it.
        metadata: extra ``metadata_props`` (e.g. ``{"metadata.json": "...", "inference.json": "..."}``).
        opset: ONNX opset version, recorded under :data:`OPSET_KEY`.
        in_channels: image channels of the tracing input.

    Raises:
        ValueError: ``metadata`` uses the reserved :data:`OPSET_KEY` or has a non-string key or value.
    """
    refuse_export(network, f"ONNX export{f' to {filepath}' if filepath else ''}")
    props = dict(metadata or {})
    if OPSET_KEY in props:
        raise ValueError(f"metadata key {OPSET_KEY!r} is reserved for the exporter's opset; rename it")
    bad = [k for k, v in props.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise ValueError(f"metadata values must be strings (serialise JSON with json.dumps): {bad}")
    image = torch.rand(2, in_channels, 64, 64)
    thresholds = (torch.tensor(0.0), torch.tensor(0.0))  # two tensors: one passed twice would be one graph input
    sides = {2: 32 * Dim("w32", min=1), 3: 32 * Dim("h32", min=1)}
    program = torch.onnx.export(
        _Gated(network).eval(),
        (image, *thresholds),
        dynamo=True,
        input_names=[INPUT_NAME, *THRESHOLD_NAMES],
        output_names=[*output_names(network), *GATED_NAMES],
        opset_version=opset,
        dynamic_shapes={"image": {0: Dim("batch", min=1), **sides}, "det_threshold": {}, "seg_threshold": {}},
        verbose=False,
    )
    model = program.model_proto
    for key, value in {OPSET_KEY: str(opset), **props}.items():
        model.metadata_props.add(key=key, value=value)
    onnx.checker.check_model(model, full_check=True)
    if filepath is not None:
        Path(filepath).parent.mkdir(parents=True, exist_ok=True)
        onnx.save_model(model, str(filepath))
    return model


def read_onnx_metadata(path: str | Path) -> dict[str, str]:
    """The ``metadata_props`` of the ONNX model at ``path`` (weights are not loaded)."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: ONNX model not found; export one with scripts/export_onnx.py")
    model = onnx.load_model(str(path), load_external_data=False)
    return {p.key: p.value for p in model.metadata_props}
