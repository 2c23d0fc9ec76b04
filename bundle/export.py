"""Check a network (eager or TorchScript) against the input/output description in ``metadata.json``.

MONAI's ``verify_net_in_out`` assumes one tensor output named ``pred``; MultiCheXNet returns a dict of head
outputs, so the bundle checks every head itself. Shape conventions of ``network_data_format`` here:

* an entry is channel-first, ``(B, num_channels, *spatial_shape)``, unless it sets ``"channels_last": true``
  (the detection outputs, ``(B, num_anchors_total, num_channels)``);
* ``spatial_shape`` items are integers or arithmetic expressions of ``n`` (the input side is ``32*n``).
"""

from __future__ import annotations

import ast
import json
import operator
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from bundle.networks.saliency_bridge import refuse_export

_OPERATORS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Pow: operator.pow}


def eval_dim(expr: int | str, n: int) -> int:
    """Value of a ``spatial_shape`` item: an integer, or an expression of ``n`` with ``+ - * **``."""
    if isinstance(expr, int):
        return expr

    def value(node: ast.AST) -> int:
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            return node.value
        if isinstance(node, ast.Name) and node.id == "n":
            return n
        if isinstance(node, ast.BinOp) and type(node.op) in _OPERATORS:
            return _OPERATORS[type(node.op)](value(node.left), value(node.right))
        raise ValueError(f"unsupported spatial_shape item {expr!r}: only integers, n, +, -, * and ** are allowed")

    return value(ast.parse(str(expr), mode="eval").body)


def expected_shape(entry: Mapping[str, Any], batch: int, n: int) -> tuple[int, ...]:
    """The tensor shape that a ``network_data_format`` entry describes for a batch of ``32*n`` square images."""
    spatial = tuple(eval_dim(d, n) for d in entry["spatial_shape"])
    channels = int(entry["num_channels"])
    return (batch, *spatial, channels) if entry.get("channels_last", False) else (batch, channels, *spatial)


def check_network_io(
    model: nn.Module | torch.jit.ScriptModule, metadata: Mapping[str, Any], sizes: Sequence[int] = (2, 4), batch: int = 2
) -> list[str]:
    """Problems found running ``model`` (``forward`` and ``forward_gated``) on images of side ``32*n`` for each
    ``n`` in ``sizes``: missing or extra outputs, wrong shapes or dtypes. An empty list means it matches."""
    fmt = metadata["network_data_format"]
    image_meta = fmt["inputs"]["image"]
    dtype = getattr(torch, image_meta["dtype"])
    problems: list[str] = []
    for n in sizes:
        image = torch.rand(expected_shape(image_meta, batch, n), dtype=dtype)
        with torch.no_grad():
            outputs = {"forward": model(image), "forward_gated": model.forward_gated(image, 0.0, 0.0)}
        for method, out in outputs.items():
            extra = set(out) - set(fmt["outputs"])
            if method == "forward_gated":
                extra -= {"det_gated_in", "seg_gated_in"}
                problems += [
                    f"forward_gated: {k} has shape {tuple(out[k].shape)}, expected ({batch},)"
                    for k in ("det_gated_in", "seg_gated_in")
                    if k in out and tuple(out[k].shape) != (batch,)
                ]
            problems += [f"{method}: output {k!r} is not described in network_data_format" for k in sorted(extra)]
            for key, entry in fmt["outputs"].items():
                if key not in out:
                    problems.append(f"{method}: output {key!r} is missing (n={n})")
                    continue
                want = expected_shape(entry, batch, n)
                if tuple(out[key].shape) != want:
                    problems.append(f"{method}: {key} has shape {tuple(out[key].shape)}, expected {want} (n={n})")
                if out[key].dtype != getattr(torch, entry["dtype"]):
                    problems.append(f"{method}: {key} has dtype {out[key].dtype}, expected {entry['dtype']}")
    return problems


def exportable(
    ckpt_dir: str, config_file: str = "configs/inference.json", meta_file: str = "configs/metadata.json",
    **override: Any,
) -> tuple[nn.Module, dict[str, str]]:
    """The network of ``<ckpt_dir>/model.pt`` with its weights, built as ``config_file`` builds it (from the
    model file's package), and the JSON texts an export embeds: ``metadata.json``, ``inference.json`` (with
    ``override``) and :data:`bundle.packaging.EXTRA_FILE` (the package: network, detector, decision policy)."""
    from monai.bundle import ConfigParser

    from bundle.packaging import EXTRA_FILE, ModelPackage, read_checkpoint

    for path, what, option in ((config_file, "inference config", "config_file"), (meta_file, "metadata", "meta_file")):
        if not Path(path).is_file():
            raise FileNotFoundError(f"{path}: {what} not found; pass the bundle's file with --{option}")
    parser = ConfigParser()
    parser.read_config(config_file)
    parser.read_meta(meta_file)
    parser["ckpt_dir"] = ckpt_dir
    for key, value in override.items():
        parser[key] = value
    texts = {"metadata.json": json.dumps(parser.get()["_meta_"]), "inference.json": json.dumps(
        {k: v for k, v in parser.get().items() if k != "_meta_"})}
    network = parser.get_parsed_content("network_def")
    refuse_export(network, f"export of {parser.get_parsed_content('model_file')}")
    network.load_state_dict(read_checkpoint(parser.get_parsed_content("model_file"))["model"])
    package = parser.get_parsed_content("model_package") or ModelPackage(
        network.init_args, parser.get_parsed_content("detector").init_args, parser.get_parsed_content("decision_policy")
    )
    package.policy = parser.get_parsed_content("decision_policy")  # with the overrides, as inference applies it
    texts[EXTRA_FILE] = package.to_json()
    return network.eval(), texts


def load_exported(path: str) -> tuple[torch.jit.ScriptModule, dict[str, Any], dict[str, Any], Any]:
    """A TorchScript export of :func:`exportable` with its metadata, inference config and model package."""
    from bundle.packaging import EXTRA_FILE, ModelPackage

    extra = {"metadata.json": "", "inference.json": "", EXTRA_FILE: ""}
    model = torch.jit.load(path, map_location="cpu", _extra_files=extra)
    missing = [k for k, v in extra.items() if not v]
    if missing:
        raise ValueError(f"{path}: no embedded {', '.join(missing)}; export with scripts/export_torchscript.py")
    package = ModelPackage.from_json(extra[EXTRA_FILE], source=f"{path}:{EXTRA_FILE}")
    return model.eval(), json.loads(extra["metadata.json"]), json.loads(extra["inference.json"]), package


def max_output_difference(
    exported: nn.Module | torch.jit.ScriptModule, eager: nn.Module, images: torch.Tensor, gate_thresholds: Sequence[float]
) -> dict[str, float]:
    """Largest absolute difference per output between two networks on ``images``, for ``forward`` and for
    ``forward_gated`` at the given (det, seg) gate thresholds (gate decisions compared as 0/1)."""
    diffs: dict[str, float] = {}
    with torch.no_grad():
        pairs = {
            "": (exported(images), eager(images)),
            "gated_": (exported.forward_gated(images, *gate_thresholds), eager.forward_gated(images, *gate_thresholds)),
        }
    for prefix, (got, want) in pairs.items():
        if set(got) != set(want):
            raise ValueError(f"output keys differ: {sorted(got)} vs {sorted(want)}")
        for key in want:
            diffs[prefix + key] = float((got[key].float() - want[key].float()).abs().max())
    return diffs
