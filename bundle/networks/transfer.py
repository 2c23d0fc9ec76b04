"""Transfer learning: a trained MultiCheXNet with CheXCls's last layer (``dec``) replaced for new classes, and a
pretrained CheXEnc (contrastive pretraining, ``configs/ssl_pretrain.json``) loaded into any MultiCheXNet."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .multichexnet import MultiCheXNet

#: What an encoder file (``models/ssl/model.pt``) holds besides the weights.
ENCODER_FILE_KEYS: tuple[str, ...] = ("encoder", "backbone", "in_channels")


def transfer_network(net: MultiCheXNet, checkpoint: str | None, num_classes: int) -> MultiCheXNet:
    """Load ``checkpoint`` (a model file's weights: its ``model`` entry, or a plain ``state_dict``) into ``net``, keep CheXEnc and CheXCls's ``feats``,
    and give CheXCls a fresh ``dec`` with ``num_classes`` outputs (and ``init_args`` that number). Without a
    checkpoint (the from-scratch baseline) only ``dec`` is replaced."""
    if checkpoint is not None:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        net.load_state_dict(state["model"] if "bundle" in state else state)  # bundle.packaging's layout
    hidden = net.cls_head.dec.in_features
    net.cls_head.dec = nn.Linear(hidden, num_classes)
    net.init_args["num_classes"] = num_classes  # a model file's arguments rebuild the network it holds
    return net


def encoder_file(net: MultiCheXNet, **extra: Any) -> dict[str, Any]:
    """The content of an encoder file: CheXEnc's weights, its backbone and input channels, and ``extra`` entries
    (the projection head)."""
    args = net.init_args
    return {"encoder": net.encoder.state_dict(), "backbone": net.encoder.backbone, "in_channels": args["in_channels"],
            **extra}


def load_pretrained_encoder(net: MultiCheXNet, path: str | Path | None) -> MultiCheXNet:
    """``net`` with CheXEnc's weights from the encoder file at ``path`` (:func:`encoder_file`); None: unchanged.

    Raises:
        ValueError: the file is missing or not an encoder file, or its backbone, input channels or any weight
            shape differs from ``net``'s encoder (strict: every weight must fit); the message names the file
            and both backbones.
    """
    if path is None:
        return net
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: pretrained encoder file not found (write one with configs/ssl_pretrain.json)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:
        reason = " ".join(str(err).split())[:300]
        raise ValueError(f"{path}: cannot read the pretrained encoder file ({reason})") from err
    if not isinstance(state, Mapping) or any(key not in state for key in ENCODER_FILE_KEYS):
        found = sorted(state) if isinstance(state, Mapping) else type(state).__name__
        raise ValueError(
            f"{path}: not an encoder file (needs {list(ENCODER_FILE_KEYS)}, has {found}); write one with "
            "configs/ssl_pretrain.json, or load a whole model with configs/transfer.json"
        )
    mine = {"backbone": net.encoder.backbone, "in_channels": net.init_args["in_channels"]}  # "a+b": a dual encoder
    if state["backbone"] != mine["backbone"] or int(state["in_channels"]) != int(mine["in_channels"]):
        raise ValueError(
            f"{path}: encoder of backbone {state['backbone']!r} with {state['in_channels']} input channel(s), but "
            f"the network's backbone is {mine['backbone']!r} with {mine['in_channels']}: set "
            f"--network_def#backbone {state['backbone']} (or --network_def#encoders for a dual encoder), or "
            f"pretrain a {mine['backbone']} encoder"
        )
    try:
        net.encoder.load_state_dict(state["encoder"], strict=True)
    except RuntimeError as err:
        raise ValueError(
            f"{path}: the {state['backbone']} encoder weights do not fit the network's {mine['backbone']} encoder: "
            + " ".join(str(err).split())[:500]
        ) from err
    return net
