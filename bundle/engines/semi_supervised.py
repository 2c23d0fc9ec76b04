"""Semi-supervised training parts: FixMatch classification and segmentation consistency on an unlabelled stream
(MultiMix, Haque et al., arXiv:2010.14731; FixMatch, Sohn et al., NeurIPS 2020).

:class:`SemiSupervised` draws one unlabelled batch per iteration (weak view ``image``, pixel-aligned strong view
``image_strong``, :mod:`bundle.data.views`), predicts the weak view without gradient (the network itself, or an
EMA teacher), the strong view with gradient, and adds the weighted unlabelled terms to the iteration's loss,
scaled by a ramp-up. Each term is a loss of :mod:`bundle.losses` on (strong, weak) outputs of one head.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from bundle.data.views import STRONG_KEY, WEAK_KEY

from .batch import batch_to_device, plain
from .distributed import unwrap
from .parts import TrainingPart


def sigmoid_rampup(iteration: int, length: int) -> float:
    """``exp(-5 (1 - t)^2)`` with ``t = iteration / length`` clipped to [0, 1] (Laine & Aila, ICLR 2017); 1 when
    ``length`` is 0."""
    if length <= 0:
        return 1.0
    t = min(max(iteration / length, 0.0), 1.0)
    return math.exp(-5.0 * (1.0 - t) ** 2)


class MeanTeacher:
    """Exponential moving average of a network's weights and buffers (Tarvainen & Valpola, NeurIPS 2017), run in
    eval mode to predict the weak views.

    Args:
        decay: EMA decay per optimiser step (0.99: a horizon of about 100 steps).
    """

    def __init__(self, decay: float = 0.99) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"teacher decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.model: nn.Module | None = None
        self.pending: Mapping[str, Any] | None = None

    def of(self, network: nn.Module) -> nn.Module:
        """The teacher, created as a copy of ``network`` on first use (then restored from a resumed state)."""
        if self.model is None:
            self.model = copy.deepcopy(unwrap(network)).eval()
            for param in self.model.parameters():
                param.requires_grad_(False)
            if self.pending is not None:
                self.model.load_state_dict(self.pending)
                self.pending = None
        return self.model

    @torch.no_grad()
    def update(self, network: nn.Module) -> None:
        """Move the teacher's weights towards ``network``'s (buffers: copied)."""
        teacher = self.of(network)
        student = unwrap(network).state_dict()
        params = {name for name, _ in teacher.named_parameters()}
        for name, value in teacher.state_dict().items():
            if name in params:
                value.mul_(self.decay).add_(student[name].detach(), alpha=1.0 - self.decay)
            else:
                value.copy_(student[name])

    def state_dict(self) -> dict[str, Any]:
        return {} if self.model is None else dict(self.model.state_dict())

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if not state:
            return
        if self.model is None:
            self.pending = dict(state)
        else:
            self.model.load_state_dict(state)


class SemiSupervised(TrainingPart):
    """Unlabelled terms on weak/strong views of an unlabelled stream.

    Logged per iteration: ``<name>_<head>`` (each unweighted term), ``<name>_<head>_confident`` (fraction of
    confident pseudo-labels) and ``<name>_rampup``.

    Args:
        batches: endless unlabelled batches with ``image`` (weak) and ``image_strong`` (:func:`bundle.data.
            unlabelled_loader`); its batch size sets the unlabelled:labelled ratio.
        terms: head (``cls``, ``seg``) to its loss, called ``(strong_logits, weak_logits) -> (loss, confident
            fraction)``: :class:`~bundle.losses.FixMatchLoss`, :class:`~bundle.losses.SegConsistencyLoss`.
        weights: weight of each head's term (MultiMix: cls 0.25).
        rampup_iterations: iterations of the sigmoid ramp-up of the weights (0: none).
        teacher: an EMA teacher for the weak-view predictions; None uses the network itself (FixMatch).
    """

    def __init__(
        self, batches: Iterator[dict[str, Any]], terms: Mapping[str, nn.Module], weights: Mapping[str, float],
        rampup_iterations: int = 0, teacher: MeanTeacher | None = None,
    ) -> None:
        unknown = set(terms) - {"cls", "seg"}
        if unknown or not terms:
            raise ValueError(f"semi-supervised terms are per head, 'cls' and/or 'seg'; got {sorted(terms)}")
        missing = set(terms) - set(weights)
        if missing:
            raise ValueError(f"semi-supervised terms {sorted(missing)} have no weight")
        self.batches, self.terms, self.weights = batches, dict(terms), dict(weights)
        self.rampup_iterations, self.teacher = rampup_iterations, teacher

    def loss(self, engine: Any, batch: Mapping[str, Any], pred: Mapping[str, Tensor]) -> dict[str, Tensor]:
        views = batch_to_device(next(self.batches), engine.state.device, engine.non_blocking)
        weak_image, strong_image = plain(views[WEAK_KEY]), plain(views[STRONG_KEY])
        tasks = list(self.terms)
        autocast = {"device_type": engine.state.device.type, "enabled": engine.amp, **engine.amp_kwargs}
        with torch.no_grad(), torch.autocast(**autocast):
            if self.teacher is None:
                weak = engine.inferer(weak_image, engine.network, tasks)
            else:
                weak = engine.inferer(weak_image, self.teacher.of(engine.network), tasks)
        with torch.autocast(**autocast):
            strong = engine.inferer(strong_image, engine.network, tasks)
        ramp = sigmoid_rampup(engine.state.iteration - 1, self.rampup_iterations)
        out: dict[str, Tensor] = {"rampup": torch.tensor(ramp, device=weak_image.device)}
        total = torch.zeros((), device=weak_image.device)
        for head, term in self.terms.items():
            value, confident = term(strong[head].float(), weak[head].float())
            out[head], out[f"{head}_confident"] = value, confident
            total = total + self.weights[head] * value
        out["loss"] = ramp * total
        return out

    def after_step(self, engine: Any, batch: Mapping[str, Any], pred: Mapping[str, Tensor]) -> None:
        if self.teacher is not None:
            self.teacher.update(engine.network)

    def state_dict(self) -> dict[str, Any]:
        return {"teacher": self.teacher.state_dict()} if self.teacher is not None else {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if self.teacher is not None:
            self.teacher.load_state_dict(state.get("teacher", {}))
