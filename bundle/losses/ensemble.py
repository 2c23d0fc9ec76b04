"""Training loss of a :class:`bundle.networks.MultiCheXNetEnsemble`: each member on its own loss."""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import Tensor, nn

from bundle.networks.ensemble import member_outputs


class EnsembleLoss(nn.Module):
    """Mean over the members of ``loss(member outputs, batch)``, term by term.

    The members share no weights, so each one's gradient is its own loss's (divided by ``members``): they train as
    independent networks on the same batches.

    Args:
        loss: a per-network loss returning a dict of terms with ``loss`` (e.g. :class:`MultiTaskLoss`).
        members: the ensemble's members.
    """

    def __init__(self, loss: Callable[[Mapping[str, Tensor], Mapping[str, object]], dict[str, Tensor]], members: int):
        super().__init__()
        self.loss = loss
        self.members = members

    def forward(self, pred: Mapping[str, Tensor], batch: Mapping[str, object]) -> dict[str, Tensor]:
        terms = [self.loss(member, batch) for member in member_outputs(dict(pred), self.members)]
        return {key: torch.stack([t[key] for t in terms]).mean() for key in terms[0]}
