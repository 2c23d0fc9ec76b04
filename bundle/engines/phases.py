"""PhaseSchedule: the MultiCheXNet training protocol as consecutive phases of one Ignite run.

A phase names its data (a loader, or an :class:`~bundle.data.mixing.AlternatingLoader`), the heads it runs,
the loss weights, the modules it freezes, its length in epochs and its learning rate. Configs give the phases as
a mapping from a step name to the phase (``"phases": {"cls": {...}, "det_gate": {...}, ...}``), run in the
mapping's order, so that an overlay changes a step by name (``"phases#mtl#data"``). The schedule switches
phases when an epoch starts, so a run resumed from a checkpoint (:class:`~bundle.handlers.checkpoint.
TrainingCheckpoint`) continues in the right phase, and saves the network at the end of every phase.
"""

from __future__ import annotations

import io
import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from bundle.fileio import atomic_write

from .distributed import rank, unwrap


@dataclass
class Phase:
    """One phase of the protocol.

    Args:
        name: used in logs and in the phase-end checkpoint ``phase_<name>.pt``.
        data: the batches of the phase.
        epochs: passes over ``data``.
        tasks: heads computed (None: all).
        weights: loss weights (None: the loss's defaults).
        freeze: network module name prefixes whose parameters are frozen (and kept in eval mode).
        lr: learning rate of the phase (None: unchanged).
        parts: names of the trainer's training parts in use (None: all).
    """

    name: str
    data: Iterable
    epochs: int
    tasks: list[str] | None = None
    weights: dict[str, float] | None = None
    freeze: list[str] = field(default_factory=list)
    lr: float | None = None
    parts: list[str] | None = None


#: Phases in order: a sequence, or a mapping from step name to phase (the step name is the phase's default name).
Phases = Sequence[Phase | dict[str, Any]] | Mapping[str, Phase | dict[str, Any]]


class PhaseSchedule:
    """Run ``phases`` one after another on a :class:`~bundle.engines.MultiTaskTrainer`.

    The trainer's ``max_epochs`` must equal the phases' total epochs (:func:`total_epochs`).

    Args:
        phases: the phases in order (see :func:`as_phases`).
        ckpt_dir: where the phase-end checkpoints go.
    """

    def __init__(self, phases: Phases, ckpt_dir: str) -> None:
        self.phases = as_phases(phases)
        if not self.phases:
            raise ValueError("PhaseSchedule needs at least one phase")
        self.ckpt_dir = Path(ckpt_dir)
        self.ends = [sum(p.epochs for p in self.phases[: i + 1]) for i in range(len(self.phases))]
        self.logger = logging.getLogger(__name__)

    def phase_at(self, epoch: int) -> Phase:
        """The phase that runs epoch ``epoch`` (1-based)."""
        for phase, end in zip(self.phases, self.ends):
            if epoch <= end:
                return phase
        raise ValueError(f"epoch {epoch} is past the last phase (total {self.ends[-1]} epochs)")

    def attach(self, engine: Engine) -> None:
        if engine.state.max_epochs is not None and engine.state.max_epochs != self.ends[-1]:
            raise ValueError(f"trainer max_epochs {engine.state.max_epochs} != phases' total {self.ends[-1]}")
        engine.add_event_handler(Events.EPOCH_STARTED, self._start)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._end)

    def _start(self, engine: Engine) -> None:
        phase = self.phase_at(engine.state.epoch)
        engine.set_data(phase.data)
        engine.state.epoch_length = len(phase.data)  # type: ignore[arg-type]
        engine.tasks = phase.tasks
        engine.frozen = list(phase.freeze)
        engine.active = None if phase.parts is None else list(phase.parts)
        loss = engine.loss_function
        loss.weights = dict(phase.weights) if phase.weights is not None else dict(loss.default_weights)
        for name, param in unwrap(engine.network).named_parameters():
            param.requires_grad_(not any(name.startswith(prefix) for prefix in phase.freeze))
        if phase.lr is not None:
            for group in engine.optimizer.param_groups:
                group["lr"] = phase.lr
        engine.state.phase = phase.name
        self.logger.info("epoch %d: phase '%s' (tasks %s, frozen %s)", engine.state.epoch, phase.name, phase.tasks, phase.freeze)

    def _end(self, engine: Engine) -> None:
        if engine.state.epoch not in self.ends:
            return
        name = self.phases[self.ends.index(engine.state.epoch)].name
        if rank() != 0:
            return
        buffer = io.BytesIO()
        torch.save(unwrap(engine.network).state_dict(), buffer)
        atomic_write(self.ckpt_dir / f"phase_{name}.pt", buffer.getvalue())
        self.logger.info("phase '%s' done; saved %s", name, self.ckpt_dir / f"phase_{name}.pt")


def as_phases(phases: Phases) -> list[Phase]:
    """``phases`` as a list of :class:`Phase`, in order. In a mapping, a phase without ``name`` takes its key."""
    if isinstance(phases, Mapping):
        return [p if isinstance(p, Phase) else Phase(**{"name": step, **p}) for step, p in phases.items()]
    return [p if isinstance(p, Phase) else Phase(**p) for p in phases]


def total_epochs(phases: Phases) -> int:
    """Total epochs of ``phases``, the trainer's ``max_epochs``."""
    return sum(p.epochs for p in as_phases(phases))


def ssl_pretrain(data: Iterable, epochs: int, part: str = "contrastive", lr: float | None = None) -> Phase:
    """The contrastive pretraining phase: no head runs (``tasks: []``, so the network's forward does nothing),
    only the training part ``part`` (:class:`~bundle.engines.contrastive.ContrastivePretraining`) trains the
    encoder on ``data``, batches of two views per image (:func:`bundle.data.two_views`)."""
    return Phase(name="ssl_pretrain", data=data, epochs=epochs, tasks=[], parts=[part], lr=lr)
