"""Transfer learning: a trained MultiCheXNet with CheXCls's last layer (``dec``) replaced for new classes."""

from __future__ import annotations

import torch
from torch import nn

from .multichexnet import MultiCheXNet


def transfer_network(net: MultiCheXNet, checkpoint: str | None, num_classes: int) -> MultiCheXNet:
    """Load ``checkpoint`` (a model file's weights: its ``model`` entry, or a plain ``state_dict``) into ``net``, keep CheXEnc and CheXCls's ``feats``,
    and give CheXCls a fresh ``dec`` with ``num_classes`` outputs. Without a checkpoint (the from-scratch
    baseline) only ``dec`` is replaced."""
    if checkpoint is not None:
        state = torch.load(checkpoint, map_location="cpu", weights_only=True)
        net.load_state_dict(state["model"] if "bundle" in state else state)  # bundle.packaging's layout
    hidden = net.cls_head.dec.in_features
    net.cls_head.dec = nn.Linear(hidden, num_classes)
    return net
