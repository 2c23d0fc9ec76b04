"""TrainingCheckpoint: an interrupted run resumes at the saved epoch with the saved weights."""

from __future__ import annotations

from pathlib import Path

import torch
from ignite.engine import Engine, Events

from bundle.handlers.checkpoint import TrainingCheckpoint


def _trainer(net: torch.nn.Module, optimizer: torch.optim.Optimizer, seen: list[int]) -> Engine:
    def step(engine: Engine, batch: torch.Tensor) -> float:
        optimizer.zero_grad()
        loss = net(batch).pow(2).mean()
        loss.backward()
        optimizer.step()
        seen.append(engine.state.epoch)
        return loss.item()

    return Engine(step)


def test_resume_continues_from_latest(tmp_path: Path) -> None:
    data = [torch.randn(4, 3) for _ in range(2)]
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1)
    seen: list[int] = []
    first = _trainer(net, optimizer, seen)
    TrainingCheckpoint(str(tmp_path), {"network": net, "optimizer": optimizer}).attach(first)
    first.run(data, max_epochs=2)
    saved = {k: v.clone() for k, v in net.state_dict().items()}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_epoch=1.pt", "checkpoint_epoch=2.pt"]  # last two

    fresh = torch.nn.Linear(3, 1)
    fresh_optimizer = torch.optim.SGD(fresh.parameters(), lr=0.1)
    resumed_seen: list[int] = []
    second = _trainer(fresh, fresh_optimizer, resumed_seen)
    checkpoint = TrainingCheckpoint(str(tmp_path), {"network": fresh, "optimizer": fresh_optimizer})
    checkpoint.attach(second)
    loaded: dict[str, torch.Tensor] = {}
    second.add_event_handler(Events.STARTED, lambda e: loaded.update({k: v.clone() for k, v in fresh.state_dict().items()}))
    second.run(data, max_epochs=3)
    for key in saved:
        torch.testing.assert_close(loaded[key], saved[key])
    assert resumed_seen == [3, 3]  # only the missing epoch ran
    assert checkpoint.latest() == tmp_path / "checkpoint_epoch=3.pt"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_epoch=2.pt", "checkpoint_epoch=3.pt"]
