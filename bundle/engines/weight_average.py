"""Averaged weights for validation and the shipped model: an exponential moving average of the network's
weights over the training steps (Polyak & Juditsky, SIAM J. Control Optim. 1992; Tarvainen & Valpola, NeurIPS
2017), which smooths the step-to-step noise of small-data training.

A config validates and saves ``WeightAverage.model`` instead of the trained network::

    "weight_average": {"_target_": "bundle.engines.WeightAverage", "network": "@network", "decay": 0.99},
    "train#parts#weight_average": "@weight_average",
    "validate#evaluator#network": "$@weight_average.model",
    "validate#handler_set#best_model#save_dict#model": "$@weight_average.model"
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch import Tensor, nn

from .parts import TrainingPart
from .semi_supervised import MeanTeacher


class WeightAverage(TrainingPart):
    """Keeps ``model``, an EMA of ``network``'s parameters (buffers copied), updated after every optimiser step.

    The decay of update ``t`` is ``min(decay, (1 + t) / (10 + t))``: early updates follow the network closely, so
    the average does not carry the random initialisation into short runs.

    Args:
        network: the trained network (copied now; the copy is ``model``, in eval mode and without gradients).
        decay: the largest decay per step (0.99: a horizon of about 100 steps).
    """

    def __init__(self, network: nn.Module, decay: float = 0.99) -> None:
        self.average = MeanTeacher(decay)
        self.model = self.average.of(network)
        self.updates = 0

    def step_decay(self) -> float:
        """The decay the next update uses."""
        return min(self.average.decay, (1.0 + self.updates) / (10.0 + self.updates))

    def after_step(self, engine: Any, batch: Mapping[str, Any], pred: Mapping[str, Tensor]) -> None:
        self.average.update(engine.network, self.step_decay())
        self.updates += 1

    def state_dict(self) -> dict[str, Any]:
        return {"model": self.average.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        if "model" in state:
            self.average.load_state_dict(state["model"])
        self.updates = int(state.get("updates", 0))
