"""ONNX export of MultiCheXNet: the encoder, every head and both gates in one graph.

The graph is ``forward`` with all heads: input ``image`` (B, C, W, H) float32 with W and H multiples of 32 (batch
and both sides dynamic), outputs :data:`OUTPUT_NAMES` with the shapes of ``MultiCheXNet.forward``. Gating (which
heads' outputs an image keeps) is applied on these outputs by :class:`bundle.runtimes.OnnxRuntimeBackend`, with
the same rule as ``forward_gated``. The opset and any caller metadata travel in the model's ``metadata_props``.
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
#: ONNX opset of the exported graph (torch 2.13's exporter default).
ONNX_OPSET: int = 20
#: ``metadata_props`` key holding the opset.
OPSET_KEY: str = "opset"


class _AllHeads(nn.Module):
    """``network.forward`` with every head, as a tuple in :func:`output_names` order."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.names = output_names(network)

    def forward(self, image: Tensor) -> tuple[Tensor, ...]:
        out = self.network(image)
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
    sides = {2: 32 * Dim("w32", min=1), 3: 32 * Dim("h32", min=1)}
    program = torch.onnx.export(
        _AllHeads(network).eval(),
        (image,),
        dynamo=True,
        input_names=[INPUT_NAME],
        output_names=list(output_names(network)),
        opset_version=opset,
        dynamic_shapes={"image": {0: Dim("batch", min=1), **sides}},
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
