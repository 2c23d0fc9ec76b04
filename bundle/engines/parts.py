"""Training parts: pieces a config adds to the training step (a loss term on another batch, an extra optimiser
step) without a new branch in :class:`~bundle.engines.MultiTaskTrainer`.

A part sees the step's labelled batch and the network outputs on it. ``loss`` returns named terms; its ``loss``
entry (already weighted) is added to the step's total before the backward pass, the others are logged as
``<part name>_<term>``. ``after_step`` runs once the network's optimiser has stepped (a discriminator's own
step, an EMA teacher's update). A part with state (weights, an optimiser, a step counter) gives
``state_dict`` / ``load_state_dict``, so that listing it among the training checkpoint's ``objects`` resumes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor


class TrainingPart:
    """One composable piece of a training iteration; the base does nothing."""

    def loss(self, engine: Any, batch: Mapping[str, Any], pred: Mapping[str, Tensor]) -> dict[str, Tensor]:
        """Terms to add: ``loss`` (weighted, with gradient) joins the total; other entries are logged."""
        return {}

    def after_step(self, engine: Any, batch: Mapping[str, Any], pred: Mapping[str, Tensor]) -> None:
        """Called after the network's optimiser step of the iteration."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


def active_parts(parts: Mapping[str, TrainingPart], names: list[str] | None) -> dict[str, TrainingPart]:
    """The parts of ``parts`` named in ``names`` (None: all), in ``parts``' order.

    Raises:
        ValueError: ``names`` names a part that is not configured.
    """
    if names is None:
        return dict(parts)
    unknown = sorted(set(names) - set(parts))
    if unknown:
        raise ValueError(f"training parts {unknown} are not configured; configured: {sorted(parts)}")
    return {name: part for name, part in parts.items() if name in names}
