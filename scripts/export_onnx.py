"""Export the model of a checkpoint folder to ONNX (encoder, all heads, gates and the gating: the detection and
segmentation heads run on the images their gate passes; dynamic batch and image size), with
``metadata.json``, ``inference.json`` and the model package (network, detector, decision policy) embedded as
``metadata_props``, as ``scripts/export_torchscript.py`` embeds them in TorchScript.

    python scripts/export_onnx.py --ckpt_dir models --filepath models/model.onnx
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import fire

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bundle.export import exportable  # noqa: E402
from bundle.onnx_export import ONNX_OPSET, export_onnx  # noqa: E402
from bundle.packaging import ModelFileError  # noqa: E402


def main(
    ckpt_dir: str = "models",
    filepath: str = "models/model.onnx",
    config_file: str = "configs/inference.json",
    meta_file: str = "configs/metadata.json",
    opset: int = ONNX_OPSET,
    **override: Any,
) -> None:
    """Export ``<ckpt_dir>/model.pt`` (``override``: config ids and values) to ``filepath``; print the model's
    image input, threshold inputs, outputs and metadata keys as JSON."""
    try:
        network, texts = exportable(ckpt_dir, config_file, meta_file, **override)
    except (FileNotFoundError, ModelFileError) as err:
        raise SystemExit(str(err)) from None
    model = export_onnx(network.cpu(), filepath, metadata=texts, opset=opset)
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    summary = {
        "filepath": filepath,
        "opset": opset,
        "input": {model.graph.input[0].name: dims},
        "thresholds": [i.name for i in model.graph.input[1:]],
        "outputs": [o.name for o in model.graph.output],
        "metadata_props": [p.key for p in model.metadata_props],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    fire.Fire(main)
