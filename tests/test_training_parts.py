"""Training parts: extra loss terms and steps composed into the trainer's iteration, switched by phase."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from ignite.engine import Events
from torch import Tensor

from bundle.detection import CheXDetector
from bundle.engines import MultiTaskTrainer, TrainingPart
from bundle.engines.phases import PhaseSchedule, total_epochs
from bundle.losses import MultiTaskLoss
from bundle.networks import MultiCheXNet

from .test_phases import _loader


class MaskShrinkage(TrainingPart):
    """A weighted penalty on the mask logits' size, counting the optimiser steps it has seen."""

    def __init__(self, weight: float) -> None:
        self.weight = weight
        self.steps = 0
        self.params_at_step: list[Tensor] = []

    def loss(self, engine: Any, batch: Mapping[str, Any], pred: Mapping[str, Tensor]) -> dict[str, Tensor]:
        penalty = pred["seg"].pow(2).mean()
        return {"loss": self.weight * penalty, "penalty": penalty}

    def after_step(self, engine: Any, batch: Mapping[str, Any], pred: Mapping[str, Tensor]) -> None:
        self.steps += 1
        self.params_at_step.append(engine.network.seg_head.head[0].weight.detach().clone())

    def state_dict(self) -> dict[str, Any]:
        return {"steps": self.steps}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.steps = int(state["steps"])


def _trainer(phases: list[dict], part: TrainingPart) -> MultiTaskTrainer:
    detector = CheXDetector()
    net = MultiCheXNet(backbone="resnet18", num_anchors=detector.num_anchors)
    return MultiTaskTrainer(
        device=torch.device("cpu"), max_epochs=total_epochs(phases), train_data_loader=phases[0]["data"],
        network=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.01), loss_function=MultiTaskLoss(detector),
        tasks=["seg"], parts={"shrink": part},
    )


def test_training_part_term_joins_the_loss_and_its_step_follows_the_optimiser(tmp_path: Path) -> None:
    part = MaskShrinkage(weight=3.0)
    phases = [{"name": "seg", "data": _loader("seg"), "epochs": 1, "tasks": ["seg"]}]
    trainer = _trainer(phases, part)
    outputs: list[dict] = []
    weights: list[Tensor] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append(dict(e.state.output)))
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: weights.append(e.network.seg_head.head[0].weight.detach().clone())
    )
    PhaseSchedule(phases, str(tmp_path)).attach(trainer)
    trainer.run()
    assert part.steps == 2 == len(outputs)
    for out in outputs:
        assert torch.isclose(out["loss"], out["seg"] + 3.0 * out["shrink_penalty"])
    for seen_by_part, after_iteration in zip(part.params_at_step, weights):
        assert torch.equal(seen_by_part, after_iteration)  # after_step runs once the optimiser has stepped


def test_training_parts_switch_by_phase(tmp_path: Path) -> None:
    part = MaskShrinkage(weight=1.0)
    phases = [
        {"name": "plain", "data": _loader("seg"), "epochs": 1, "tasks": ["seg"], "parts": []},
        {"name": "shrunk", "data": _loader("seg"), "epochs": 1, "tasks": ["seg"]},
    ]
    trainer = _trainer(phases, part)
    logged: list[tuple[str, bool]] = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED, lambda e: logged.append((e.state.phase, "shrink_penalty" in e.state.output))
    )
    PhaseSchedule(phases, str(tmp_path)).attach(trainer)
    trainer.run()
    assert logged == [("plain", False), ("plain", False), ("shrunk", True), ("shrunk", True)]
    assert part.steps == 2


def test_training_parts_unknown_name_is_named(tmp_path: Path) -> None:
    phases = [{"name": "seg", "data": _loader("seg"), "epochs": 1, "tasks": ["seg"], "parts": ["fixmatch"]}]
    trainer = _trainer(phases, MaskShrinkage(1.0))
    PhaseSchedule(phases, str(tmp_path)).attach(trainer)
    with pytest.raises(ValueError, match=r"\['fixmatch'\] are not configured; configured: \['shrink'\]"):
        trainer.run()
