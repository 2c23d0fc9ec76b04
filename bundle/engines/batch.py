"""Moving multi-task batches to a device and summarising engine outputs."""

from __future__ import annotations

from typing import Any

import torch
from monai.data import MetaTensor


def plain(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` without MONAI metadata: a network fed a MetaTensor pays for metadata tracking in every op
    (measured: DenseNet121 forward + backward 1.7x slower on CPU)."""
    return tensor.as_tensor() if isinstance(tensor, MetaTensor) else tensor


def batch_to_device(batch: dict[str, Any], device: torch.device | str, non_blocking: bool = False) -> dict[str, Any]:
    """Tensors (and lists of tensors) of ``batch`` moved to ``device``; other values unchanged."""
    moved: dict[str, Any] = {}
    for key, value in batch.items():
        if isinstance(value, torch.Tensor):
            moved[key] = value.to(device, non_blocking=non_blocking)
        elif isinstance(value, list) and value and isinstance(value[0], torch.Tensor):
            moved[key] = [v.to(device, non_blocking=non_blocking) for v in value]
        else:
            moved[key] = value
    return moved


def loss_terms(output: dict[str, Any]) -> dict[str, float]:
    """The scalar loss terms of a trainer output, for StatsHandler / TensorBoardStatsHandler."""
    return {k: float(v) for k, v in output.items() if isinstance(v, torch.Tensor) and v.numel() == 1}
