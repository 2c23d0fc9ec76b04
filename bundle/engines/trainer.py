"""MultiTaskTrainer: one encoder pass, the requested heads, and the multi-task loss per iteration."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from monai.engines import SupervisedTrainer
from monai.engines.utils import IterationEvents

from .batch import batch_to_device, plain
from .distributed import unwrap
from .parts import TrainingPart, active_parts
from .precision import effective_amp


class MultiTaskTrainer(SupervisedTrainer):
    """SupervisedTrainer over multi-task batches (see :mod:`bundle.data.transforms`).

    ``loss_function(pred, batch)`` returns a dict of loss terms with the total under ``loss``; the
    iteration output is that dict, detached. ``tasks`` names the heads to run (None: all) and ``frozen`` the
    network module name prefixes kept in eval mode (frozen batch-norm statistics); phase handlers change both
    between epochs.

    Gradients are set to None, not zero, before each step (``optim_set_to_none`` defaults to True): a parameter
    that gets no gradient in an iteration (a head without labels in the batch, a frozen module) is then left
    alone by the optimiser, instead of moving on momentum and weight decay depending on whether an earlier
    iteration happened to give it a gradient, state that no checkpoint holds.

    ``parts`` (:mod:`bundle.engines.parts`) add loss terms and steps to each iteration; ``active`` names those in
    use (None: all), which phases change.

    Args:
        tasks: heads computed each iteration.
        parts: training parts by name, run in this order.
        args, kwargs: as :class:`monai.engines.SupervisedTrainer` (``decollate`` is forced off; ``amp`` is
            turned off on a CPU without native bfloat16, :func:`bundle.engines.precision.effective_amp`).
    """

    def __init__(
        self, *args: Any, tasks: list[str] | None = None, parts: Mapping[str, TrainingPart] | None = None,
        **kwargs: Any,
    ) -> None:
        kwargs["decollate"] = False
        kwargs.setdefault("optim_set_to_none", True)
        kwargs["amp"] = effective_amp(kwargs.get("amp", False), kwargs.get("device", args[0] if args else "cpu"))
        super().__init__(*args, **kwargs)
        self.tasks = tasks
        self.frozen: list[str] = []
        self.parts: dict[str, TrainingPart] = dict(parts or {})
        self.active: list[str] | None = None

    @staticmethod
    def _is_done(state: Any) -> bool:
        """Done after ``max_epochs`` epochs (or ``max_iters``). Ignite also stops once ``iteration`` reaches
        ``epoch_length * max_epochs``, which is wrong when phases change the epoch length."""
        return (state.max_iters is not None and state.iteration >= state.max_iters) or (
            state.max_epochs is not None and state.epoch >= state.max_epochs
        )

    def _iteration(self, engine: MultiTaskTrainer, batchdata: dict[str, Any]) -> dict[str, torch.Tensor]:
        batch = batch_to_device(batchdata, engine.state.device, engine.non_blocking)
        engine.network.train()
        if engine.frozen:
            for name, module in unwrap(engine.network).named_modules():
                if any(name.startswith(prefix) for prefix in engine.frozen):
                    module.eval()
        engine.optimizer.zero_grad(set_to_none=engine.optim_set_to_none)
        with torch.autocast(engine.state.device.type, enabled=engine.amp, **engine.amp_kwargs):
            pred = engine.inferer(plain(batch["image"]), engine.network, engine.tasks)
        engine.fire_event(IterationEvents.FORWARD_COMPLETED)
        pred = {k: v.float() for k, v in pred.items()}  # losses in float32
        terms = engine.loss_function(pred, batch)
        parts = active_parts(engine.parts, engine.active)
        for name, part in parts.items():
            extra = part.loss(engine, batch, pred)
            if "loss" in extra:
                terms["loss"] = terms["loss"] + extra.pop("loss")
            terms.update({f"{name}_{key}": value for key, value in extra.items()})
        engine.fire_event(IterationEvents.LOSS_COMPLETED)
        if engine.amp and engine.scaler is not None:
            engine.scaler.scale(terms["loss"]).backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            engine.scaler.step(engine.optimizer)
            engine.scaler.update()
        else:
            terms["loss"].backward()
            engine.fire_event(IterationEvents.BACKWARD_COMPLETED)
            engine.optimizer.step()
        for part in parts.values():
            part.after_step(engine, batch, pred)
        engine.fire_event(IterationEvents.MODEL_COMPLETED)
        engine.state.output = {k: v.detach() for k, v in terms.items()}
        return engine.state.output
