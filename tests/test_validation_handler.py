"""EpochValidation: every ``interval`` epochs and after the last epoch, also when phases end between multiples."""

from __future__ import annotations

import pytest
from ignite.engine import Engine

from bundle.handlers import EpochValidation


class _Recorder:
    def __init__(self) -> None:
        self.epochs: list[int] = []

    def run(self, epoch: int) -> None:
        self.epochs.append(epoch)


@pytest.mark.parametrize(
    ("max_epochs", "interval", "expected"),
    [(7, 2, [2, 4, 6, 7]), (6, 2, [2, 4, 6]), (3, 5, [3]), (4, 1, [1, 2, 3, 4])],
)
def test_validates_every_interval_and_after_the_last_epoch(max_epochs: int, interval: int, expected: list[int]) -> None:
    handler = EpochValidation(interval)
    handler.validator = _Recorder()  # a stand-in evaluator: only its run(epoch) is called
    trainer = Engine(lambda engine, batch: None)
    handler.attach(trainer)
    trainer.run(range(3), max_epochs=max_epochs)
    assert handler.validator.epochs == expected


def test_interval_below_one_is_named() -> None:
    with pytest.raises(ValueError, match="validation interval must be at least 1 epoch, got 0"):
        EpochValidation(0)
