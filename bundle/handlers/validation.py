"""Validation every few epochs and after the last one."""

from __future__ import annotations

from ignite.engine import Engine, Events
from monai.engines import Evaluator
from monai.handlers import ValidationHandler


class EpochValidation(ValidationHandler):
    """MONAI's epoch-level :class:`~monai.handlers.ValidationHandler` that also validates after the last epoch.

    Every ``interval`` epochs alone would leave the epochs after the last multiple of ``interval`` (epoch 7 of 7
    with an interval of 2) unvalidated, so the best-model checkpoint could never be the trained model.

    Args:
        interval: validate every ``interval`` epochs, and after epoch ``max_epochs``.
        validator: the evaluator to run.
        exec_at_start: also validate before the first epoch.
    """

    def __init__(self, interval: int, validator: Evaluator | None = None, exec_at_start: bool = False) -> None:
        if interval < 1:
            raise ValueError(f"the validation interval must be at least 1 epoch, got {interval}")
        super().__init__(interval, validator, epoch_level=True, exec_at_start=exec_at_start)

    def attach(self, engine: Engine) -> None:
        def due(engine: Engine, epoch: int) -> bool:
            return epoch % self.interval == 0 or epoch == engine.state.max_epochs

        engine.add_event_handler(Events.EPOCH_COMPLETED(event_filter=due), self)
        if self.exec_at_start:
            engine.add_event_handler(Events.STARTED, self)
