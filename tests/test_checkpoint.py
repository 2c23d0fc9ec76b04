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


def _scored_run(ckpt: Path, scores: dict[int, float], max_epochs: int, best: bool = True) -> tuple[Engine, Engine]:
    """A trainer whose epoch e sets the network's weight to e and validates with score ``scores[e]``; the
    evaluator's key-metric CheckpointSaver writes ``model.pt``, the TrainingCheckpoint keeps its memory."""
    import logging

    from monai.handlers import CheckpointSaver

    from bundle.handlers.best_model import BestModelState

    logging.getLogger("ignite").setLevel(logging.WARNING)
    net = torch.nn.Linear(1, 1, bias=False)
    trainer, evaluator = Engine(lambda e, b: None), Engine(lambda e, b: None)

    @evaluator.on(Events.EPOCH_COMPLETED)
    def _score(engine: Engine) -> None:
        engine.state.metrics["val"] = scores[trainer.state.epoch]

    @trainer.on(Events.EPOCH_COMPLETED)
    def _validate(engine: Engine) -> None:
        with torch.no_grad():
            net.weight.fill_(engine.state.epoch)
        evaluator.run([0])

    saver = CheckpointSaver(str(ckpt), {"model": net}, save_key_metric=True, key_metric_name="val",
                            key_metric_filename="model.pt")
    saver.attach(evaluator)
    TrainingCheckpoint(str(ckpt), {"network": net}, best_model=BestModelState(saver, evaluator) if best else None
                       ).attach(trainer)
    trainer.run([0], max_epochs=max_epochs)
    return trainer, evaluator


def test_resumed_run_keeps_the_best_model_it_had(tmp_path: Path, caplog) -> None:
    """Epoch 1 scores best; a run stopped after epoch 2 and resumed for epoch 3 (worse than epoch 1) leaves
    epoch 1's model.pt in place, as an uninterrupted run would; a better epoch 4 replaces it."""
    scores = {1: 0.9, 2: 0.5, 3: 0.7, 4: 0.95}

    def best_weight() -> float:
        return float(torch.load(tmp_path / "model.pt", weights_only=True)["weight"])

    _scored_run(tmp_path, scores, 2)
    assert best_weight() == 1.0
    _scored_run(tmp_path, scores, 3)
    assert best_weight() == 1.0 and sorted(p.name for p in tmp_path.glob("model*.pt")) == ["model.pt"]
    _scored_run(tmp_path, scores, 4)
    assert best_weight() == 4.0
    # a checkpoint written without the best-model memory resumes, says so, and the next model wins
    legacy = tmp_path / "legacy"
    _scored_run(legacy, scores, 2, best=False)
    with caplog.at_level("WARNING"):
        _scored_run(legacy, scores, 3)
    assert "holds no best-model score" in caplog.text
    assert float(torch.load(legacy / "model.pt", weights_only=True)["weight"]) == 3.0
