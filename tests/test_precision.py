"""Mixed precision: CPU autocast only where the CPU has bfloat16 instructions."""

from __future__ import annotations

import logging

import pytest
import torch

from bundle.engines import MultiTaskEvaluator, MultiTaskTrainer, precision
from bundle.detection import CheXDetector
from bundle.losses import MultiTaskLoss
from bundle.networks import MultiCheXNet


@pytest.mark.parametrize("native", [True, False])
def test_amp_on_cpu_follows_native_bfloat16(monkeypatch, caplog, native: bool) -> None:
    monkeypatch.setattr(precision, "native_bfloat16_cpu", lambda: native)
    detector = CheXDetector()
    network = MultiCheXNet(backbone="resnet18", num_anchors=detector.num_anchors)
    loader = [{"image": torch.rand(1, 1, 64, 64)}]
    with caplog.at_level(logging.WARNING):
        trainer = MultiTaskTrainer(
            device=torch.device("cpu"), max_epochs=1, train_data_loader=loader, network=network,
            optimizer=torch.optim.SGD(network.parameters(), lr=0.1), loss_function=MultiTaskLoss(detector=detector),
            amp=True,
        )
        evaluator = MultiTaskEvaluator(torch.device("cpu"), loader, network, detector=detector, amp=True)
    assert trainer.amp is native and evaluator.amp is native
    assert ("no native bfloat16" in caplog.text) is not native
    # asked for float32, float32 it stays, with nothing logged
    caplog.clear()
    assert precision.effective_amp(False, "cpu") is False and not caplog.text


def test_amp_is_left_alone_off_the_cpu(monkeypatch) -> None:
    monkeypatch.setattr(precision, "native_bfloat16_cpu", lambda: False)
    assert precision.effective_amp(True, torch.device("cuda", 0)) is True
