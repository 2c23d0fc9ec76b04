"""WeightAverage: an EMA of the trained network's weights, updated after each optimiser step, resumable."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from ignite.engine import Events
from torch import Tensor

from bundle.detection import CheXDetector
from bundle.engines import MultiTaskTrainer, WeightAverage
from bundle.engines.phases import PhaseSchedule
from bundle.losses import MultiTaskLoss
from bundle.networks import MultiCheXNet

from .test_phases import _loader


def _params(net: torch.nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in net.named_parameters()}


def test_average_follows_the_closed_form_and_copies_buffers(tmp_path: Path) -> None:
    torch.manual_seed(0)
    detector = CheXDetector()
    net = MultiCheXNet(backbone="resnet18", num_anchors=detector.num_anchors)
    average = WeightAverage(net, decay=0.15)
    expected = _params(net)
    trainer = MultiTaskTrainer(
        device=torch.device("cpu"), max_epochs=2, train_data_loader=_loader("seg"), network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.05), loss_function=MultiTaskLoss(detector),
        tasks=["seg"], parts={"weight_average": average},
    )
    decays: list[float] = []

    @trainer.on(Events.ITERATION_COMPLETED)
    def _follow(engine: MultiTaskTrainer) -> None:
        step = len(decays)
        decay = min(0.15, (1 + step) / (10 + step))  # 0.1, then the 0.15 cap
        decays.append(decay)
        for name, value in _params(engine.network).items():
            expected[name] = decay * expected[name] + (1 - decay) * value

    PhaseSchedule([{"name": "seg", "data": _loader("seg"), "epochs": 2, "tasks": ["seg"]}], str(tmp_path)).attach(trainer)
    trainer.run()
    assert average.updates == 4 and decays == pytest.approx([0.1, 0.15, 0.15, 0.15])
    averaged, trained = _params(average.model), _params(net)
    moved = [k for k in trained if not torch.equal(trained[k], expected[k])]
    assert moved  # the network left its average behind
    for name, value in averaged.items():
        torch.testing.assert_close(value, expected[name])
    buffers = dict(net.named_buffers())
    for name, value in average.model.named_buffers():
        assert torch.equal(value, buffers[name])
    assert not average.model.training and not any(p.requires_grad for p in average.model.parameters())


def test_state_round_trip_resumes_the_average_and_its_decay() -> None:
    torch.manual_seed(0)
    net = MultiCheXNet(backbone="resnet18", num_anchors=4)
    average = WeightAverage(net, decay=0.99)
    with torch.no_grad():
        for param in net.parameters():
            param.add_(1.0)
    for _ in range(3):
        average.after_step(SimpleNamespace(network=net), {}, {})
    resumed = WeightAverage(MultiCheXNet(backbone="resnet18", num_anchors=4), decay=0.99)
    resumed.load_state_dict(average.state_dict())
    assert resumed.updates == 3 and resumed.step_decay() == average.step_decay() == pytest.approx(4 / 13)
    for (name, value), other in zip(average.model.state_dict().items(), resumed.model.state_dict().values()):
        assert torch.equal(value, other), name
