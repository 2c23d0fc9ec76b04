"""Export a trained MultiCheXNet checkpoint to ONNX (encoder, all heads, gates; dynamic batch and image size), with
``metadata.json`` and ``inference.json`` embedded as ``metadata_props``, as ``ckpt_export`` embeds them in TorchScript.

    python scripts/export_onnx.py --ckpt_file models/model.pt --config_file configs/inference.json \
        --meta_file configs/metadata.json --filepath models/model.onnx
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import fire
import torch
from monai.bundle import ConfigParser

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bundle.onnx_export import ONNX_OPSET, export_onnx  # noqa: E402


def _read_json(path: str, what: str) -> dict:
    try:
        return json.loads(Path(path).read_text())
    except FileNotFoundError:
        raise SystemExit(f"{path}: {what} not found") from None
    except json.JSONDecodeError as err:
        raise SystemExit(f"{path}: {what} is not valid JSON ({err})") from None


def main(
    ckpt_file: str = "models/model.pt",
    config_file: str = "configs/inference.json",
    meta_file: str = "configs/metadata.json",
    filepath: str = "models/model.onnx",
    net_id: str = "network_def",
    key_in_ckpt: str = "",
    opset: int = ONNX_OPSET,
    **override: Any,
) -> None:
    """Build ``net_id`` from ``config_file`` (with ``override``: config ids and values, e.g. ``--ckpt_dir DIR``),
    load ``ckpt_file`` (a state dict, or the entry ``key_in_ckpt`` of one), export it to ``filepath`` and print
    the model's inputs, outputs and metadata keys as JSON. The embedded ``inference.json`` has the overrides."""
    config = _read_json(config_file, "inference config")
    meta = _read_json(meta_file, "bundle metadata")
    if not Path(ckpt_file).is_file():
        raise SystemExit(f"{ckpt_file}: checkpoint not found; train first or pass --ckpt_file")
    state = torch.load(ckpt_file, map_location="cpu", weights_only=True)
    if key_in_ckpt:
        if key_in_ckpt not in state:
            raise SystemExit(f"{ckpt_file}: no entry {key_in_ckpt!r} (entries: {sorted(state)})")
        state = state[key_in_ckpt]
    parser = ConfigParser(config)
    for key, value in override.items():
        parser[key] = value
    metadata = {"metadata.json": json.dumps(meta), "inference.json": json.dumps(parser.get())}  # before parsing
    if net_id not in parser:
        raise SystemExit(f"{config_file}: no {net_id!r} entry to build the network from (--net_id)")
    network = parser.get_parsed_content(net_id)
    network.load_state_dict(state)
    model = export_onnx(network, filepath, metadata=metadata, opset=opset)
    dims = [d.dim_param or d.dim_value for d in model.graph.input[0].type.tensor_type.shape.dim]
    summary = {
        "filepath": filepath,
        "opset": opset,
        "input": {model.graph.input[0].name: dims},
        "outputs": [o.name for o in model.graph.output],
        "metadata_props": [p.key for p in model.metadata_props],
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    fire.Fire(main)
