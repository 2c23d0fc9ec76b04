"""Data-parallel helpers for the engines: the bare network behind a DDP wrapper, rank-0-only handlers."""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial
from typing import Any

import torch.distributed as dist
from torch import nn


def unwrap(network: nn.Module) -> nn.Module:
    """The module inside a ``DistributedDataParallel`` / ``DataParallel`` wrapper, else ``network`` itself."""
    return network.module if isinstance(network, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else network


def rank() -> int:
    """This process's rank in the default process group (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def on_rank_zero(handlers: Sequence[Any], every_rank: Sequence[type] = ()) -> list[Any]:
    """The handlers this rank attaches. Rank 0: all of ``handlers``, where a ``functools.partial`` (a config item
    with ``"_mode_": "callable"``) is constructed now, so that a handler which opens files in its constructor
    (TensorBoard) does so on rank 0 only. Other ranks: only the instances of ``every_rank`` (e.g. the
    learning-rate schedule and the resume logic, which every rank needs)."""
    if rank() == 0:
        return [h() if isinstance(h, partial) else h for h in handlers]
    return [h for h in handlers if isinstance(h, tuple(every_rank))]
