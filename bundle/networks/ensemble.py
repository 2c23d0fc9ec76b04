"""A deep ensemble of MultiCheXNets of one architecture (Lakshminarayanan et al., NeurIPS 2017, arXiv:1612.01474).

The members differ only in their initialisation. In training mode ``forward`` returns every member's outputs
(keys ``<key>/<member>``), so that each member is trained on its own loss (:class:`bundle.losses.EnsembleLoss`);
in evaluation mode it returns the ensemble's outputs under ``MultiCheXNet.forward``'s keys: the members' mean
probability for each logit output (as a logit), their mean box regression and their mean saliency distribution.
"""

import math
from typing import Any, Dict, List, Optional

import torch
from torch import nn

from .multichexnet import MultiCheXNet, gate_outputs

#: Joins an output key and a member index in training mode: ``seg/0``.
MEMBER_SEPARATOR = "/"


def average_outputs(outputs: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    """The ensemble output of the members' ``outputs`` (each a ``MultiCheXNet.forward`` dict with the same keys):
    box regressions (``det_box``) averaged as they are, saliency log-distributions (``sal``) as distributions, every
    other output (a logit) as a probability, bounded to [1e-6, 1 - 1e-6] before it is turned back into a logit."""
    averaged: Dict[str, torch.Tensor] = {}
    for key in outputs[0].keys():
        values = torch.stack([out[key].float() for out in outputs])
        if key == "det_box":
            averaged[key] = values.mean(0)
        elif key == "sal":
            averaged[key] = torch.logsumexp(values, 0) - math.log(len(outputs))
        else:
            averaged[key] = torch.logit(torch.sigmoid(values).mean(0), eps=1e-6)
    return averaged


class MultiCheXNetEnsemble(nn.Module):
    """``members`` MultiCheXNets built with the same ``network_args``, called like one MultiCheXNet.

    ``init_args`` holds the members' arguments and ``members``, so a model file rebuilds it
    (:func:`build_network`). Each member runs its own encoder pass: an ensemble of two costs two networks.
    """

    def __init__(self, members: int = 2, **network_args: Any) -> None:
        super().__init__()
        if members < 2:
            raise ValueError(f"an ensemble needs at least 2 members, got {members}; use MultiCheXNet for one")
        self.members = nn.ModuleList([MultiCheXNet(**network_args) for _ in range(members)])
        self.init_args: Dict[str, Any] = {**self.members[0].init_args, "members": members}
        self.negative_logit = self.members[0].negative_logit

    def forward(self, image: torch.Tensor, tasks: Optional[List[str]] = None) -> Dict[str, torch.Tensor]:
        outputs: List[Dict[str, torch.Tensor]] = []
        for member in self.members:
            outputs.append(member(image, tasks))
        if self.training:
            return self._separate(outputs)
        return average_outputs(outputs)

    @torch.jit.unused
    def _separate(self, outputs: List[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
        """Every member's outputs, keyed ``<key>/<member>``."""
        return {key + MEMBER_SEPARATOR + str(i): value for i, out in enumerate(outputs) for key, value in out.items()}

    @torch.jit.export
    def forward_gated(
        self, image: torch.Tensor, det_threshold: float = 0.5, seg_threshold: float = 0.5
    ) -> Dict[str, torch.Tensor]:
        """The ensemble's outputs gated by its averaged gates (``MultiCheXNet.forward_gated``'s keys); every member
        runs every head, so gating saves no time here."""
        return gate_outputs(self.forward(image, None), det_threshold, seg_threshold, self.negative_logit)


def member_outputs(pred: Dict[str, torch.Tensor], members: int) -> List[Dict[str, torch.Tensor]]:
    """Training-mode ensemble outputs split per member, under ``MultiCheXNet.forward``'s keys."""
    split: List[Dict[str, torch.Tensor]] = [{} for _ in range(members)]
    for key, value in pred.items():
        name, _, index = key.rpartition(MEMBER_SEPARATOR)
        if not name or not index.isdigit() or int(index) >= members:
            raise KeyError(f"{key!r} is not an output of member 0-{members - 1} ('<output>{MEMBER_SEPARATOR}<member>')")
        split[int(index)][name] = value
    return split


def build_network(members: int = 1, **network_args: Any) -> nn.Module:
    """The network a model file's arguments describe: a MultiCheXNet, or an ensemble when ``members`` > 1."""
    if members < 1:
        raise ValueError(f"members must be 1 (one network) or more (an ensemble), got {members}")
    return MultiCheXNet(**network_args) if members == 1 else MultiCheXNetEnsemble(members, **network_args)
