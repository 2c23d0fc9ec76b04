"""Bad training checkpoints: an unreadable newest one falls back to the one before with a one-line warning naming
it; none readable, or one written for another configuration, stops with a one-line error naming the file; stale
temporary files and checkpoints of an earlier run are cleaned up."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events

from bundle.fileio import TEMP_SUFFIX
from bundle.handlers.checkpoint import CheckpointError, TrainingCheckpoint


class _NotAllowed:
    """A class ``torch.load(weights_only=True)`` refuses to unpickle."""


def _net() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))


def _train(
    ckpt: Path, max_epochs: int, net: torch.nn.Module | None = None, **kwargs
) -> tuple[list[int], torch.nn.Module]:
    """Train a small network to ``max_epochs`` with a TrainingCheckpoint in ``ckpt``; the epochs that ran."""
    net = net if net is not None else _net()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.1, momentum=0.9)
    seen: list[int] = []

    def step(engine: Engine, batch: torch.Tensor) -> float:
        optimizer.zero_grad()
        loss = net(batch).pow(2).mean()
        loss.backward()
        optimizer.step()
        return loss.item()

    engine = Engine(step)
    TrainingCheckpoint(str(ckpt), {"network": net, "optimizer": optimizer}, **kwargs).attach(engine)
    engine.add_event_handler(Events.EPOCH_STARTED, lambda e: seen.append(e.state.epoch))
    engine.run([torch.randn(2, 3) for _ in range(2)], max_epochs=max_epochs)
    return seen, net


def _one_line_naming(records: list[logging.LogRecord], path: Path) -> list[str]:
    lines = [r.getMessage() for r in records if str(path) in r.getMessage()]
    assert lines and all("\n" not in line for line in lines), lines
    return lines


@pytest.fixture
def ckpt(tmp_path: Path) -> Path:
    """A folder with a finished two-epoch run: ``checkpoint_epoch=1.pt`` and ``checkpoint_epoch=2.pt``."""
    _train(tmp_path, 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_epoch=1.pt", "checkpoint_epoch=2.pt"]
    return tmp_path


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


def _rewrite(change: Callable[[dict], object]) -> Callable[[Path], None]:
    """A corruption that loads the checkpoint, changes it and saves the result."""

    def apply(path: Path) -> None:
        state = torch.load(path, weights_only=True)
        torch.save(change(state), path)

    return apply


UNREADABLE: dict[str, Callable[[Path], None]] = {
    "truncated": _truncate,
    "zero_bytes": lambda p: p.write_bytes(b""),
    "text_file": lambda p: p.write_text("this is not a checkpoint\n"),
    "zip_header_then_garbage": lambda p: p.write_bytes(b"PK\x03\x04" + bytes(range(256)) * 4),
    "pickled_class_refused_by_weights_only": lambda p: torch.save({"network": _NotAllowed()}, p),
    "not_a_dict": lambda p: torch.save([torch.zeros(3)], p),
}


@pytest.mark.parametrize("damage", UNREADABLE.values(), ids=UNREADABLE.keys())
def test_unreadable_newest_checkpoint_falls_back_to_previous(ckpt: Path, damage, caplog) -> None:
    newest = ckpt / "checkpoint_epoch=2.pt"
    damage(newest)
    with caplog.at_level(logging.WARNING):
        seen, _ = _train(ckpt, 3)
    assert seen == [2, 3]  # resumed from epoch 1: epoch 2 is redone
    assert any(
        "resumed from" in line and "checkpoint_epoch=1.pt" in line
        for line in _one_line_naming(caplog.records, ckpt / "checkpoint_epoch=1.pt")
    )
    assert any("not a" in line for line in _one_line_naming(caplog.records, newest))
    assert torch.load(newest, weights_only=True)["trainer"]["epoch"] == 2  # replaced by the redone epoch


@pytest.mark.parametrize("damage", UNREADABLE.values(), ids=UNREADABLE.keys())
def test_no_readable_checkpoint_is_a_one_line_error(tmp_path: Path, damage) -> None:
    _train(tmp_path, 1)
    only = tmp_path / "checkpoint_epoch=1.pt"
    damage(only)
    with pytest.raises(CheckpointError) as error:
        _train(tmp_path, 2)
    message = str(error.value)
    assert "\n" not in message and str(tmp_path) in message and only.name in message and "--resume False" in message


INCOMPATIBLE: dict[str, tuple[Callable[[dict], object], str]] = {
    "no_optimizer": (lambda s: {k: v for k, v in s.items() if k != "optimizer"}, "optimizer"),
    "no_trainer_counters": (lambda s: {k: v for k, v in s.items() if k != "trainer"}, "trainer"),
    "network_missing_key": (
        lambda s: {**s, "network": {k: v for k, v in s["network"].items() if k != "1.bias"}},
        "1.bias",
    ),
    "network_unexpected_key": (lambda s: {**s, "network": {**s["network"], "2.weight": torch.zeros(1)}}, "2.weight"),
    "network_wrong_shape": (
        lambda s: {**s, "network": {**s["network"], "0.weight": torch.zeros(5, 3)}},
        "0.weight saved (5, 3), configured (4, 3)",
    ),
    "trainer_counters_without_epoch": (lambda s: {**s, "trainer": {"iteration": 4}}, "trainer, scaler or random"),
    "random_states_malformed": (lambda s: {**s, "random": [{"python": [3]}]}, "trainer, scaler or random"),
    "optimizer_other_groups": (
        lambda s: {**s, "optimizer": {**s["optimizer"], "param_groups": s["optimizer"]["param_groups"] * 2}},
        "'optimizer' does not load",
    ),
}


@pytest.mark.parametrize("change, named", INCOMPATIBLE.values(), ids=INCOMPATIBLE.keys())
def test_checkpoint_of_another_configuration_is_a_one_line_error(ckpt: Path, change, named: str) -> None:
    newest = ckpt / "checkpoint_epoch=2.pt"
    _rewrite(change)(newest)
    with pytest.raises(CheckpointError) as error:
        _train(ckpt, 3)
    message = str(error.value)
    assert "\n" not in message and str(newest) in message and named in message and "--resume False" in message


def test_network_of_another_shape_is_refused_before_anything_loads(ckpt: Path) -> None:
    wider = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Linear(5, 1))
    before = {k: v.clone() for k, v in wider.state_dict().items()}
    with pytest.raises(
        CheckpointError,
        match=r"'network' does not fit .* 3 other shapes \(first: 0.weight saved \(4, 3\), configured \(5, 3\)\)",
    ):
        _train(ckpt, 3, net=wider)
    assert all(torch.equal(before[k], v) for k, v in wider.state_dict().items())


def test_stale_temporary_files_are_removed_on_start(ckpt: Path, caplog) -> None:
    stale = [ckpt / f".checkpoint_epoch=3.pt.k2j4{TEMP_SUFFIX}", ckpt / f".checkpoint_epoch=2.pt.zz{TEMP_SUFFIX}"]
    for path in stale:
        path.write_bytes(b"half a checkpoint")
    others = [ckpt / f".model.pt.x1{TEMP_SUFFIX}", ckpt / "model.pt", ckpt / "thresholds.json"]  # not this handler's
    for path in others:
        path.write_text("{}")
    with caplog.at_level(logging.WARNING):
        seen, _ = _train(ckpt, 3)
    assert seen == [3]
    assert not any(p.exists() for p in stale) and all(p.exists() for p in others)
    assert any("removed 2 temporary file(s)" in line for line in _one_line_naming(caplog.records, ckpt))


def test_checkpoint_without_random_states_resumes_with_a_warning(ckpt: Path, caplog) -> None:
    newest = ckpt / "checkpoint_epoch=2.pt"
    _rewrite(lambda s: {k: v for k, v in s.items() if k != "random"})(newest)
    with caplog.at_level(logging.WARNING):
        seen, _ = _train(ckpt, 3)
    assert seen == [3]
    assert any("no random states" in line for line in _one_line_naming(caplog.records, newest))


def test_resumed_run_keeps_only_its_last_checkpoints(tmp_path: Path) -> None:
    """An earlier run that kept five checkpoints, resumed with the default of two: the older ones go."""
    _train(tmp_path, 5, n_saved=5)
    assert len(list(tmp_path.glob("checkpoint_epoch=*.pt"))) == 5
    seen, _ = _train(tmp_path, 6)
    assert seen == [6]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_epoch=5.pt", "checkpoint_epoch=6.pt"]


def test_fresh_run_replaces_an_earlier_runs_checkpoints_once_it_has_saved(tmp_path: Path) -> None:
    """``resume=False``: the earlier run's later-epoch checkpoints would shadow this run's; they are deleted
    after this run's first save (not before, so a mistaken start loses nothing until then)."""
    _train(tmp_path, 4)
    seen, net = _train(tmp_path, 1, resume=False)
    assert seen == [1]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_epoch=1.pt"]
    saved = torch.load(tmp_path / "checkpoint_epoch=1.pt", weights_only=True)["network"]
    assert all(torch.equal(saved[k], v) for k, v in net.state_dict().items())


def test_missing_folder_starts_afresh(tmp_path: Path) -> None:
    seen, _ = _train(tmp_path / "new" / "models", 2)
    assert seen == [1, 2]
    assert (tmp_path / "new" / "models" / "checkpoint_epoch=2.pt").is_file()


@pytest.mark.parametrize("objects", [{"trainer": torch.nn.Linear(1, 1)}, {"random": torch.nn.Linear(1, 1)}])
def test_reserved_object_names_are_refused(tmp_path: Path, objects: dict) -> None:
    with pytest.raises(ValueError, match="may not be named"):
        TrainingCheckpoint(str(tmp_path), objects)


def test_checkpoints_get_the_permissions_of_a_plain_file_under_the_umask(tmp_path: Path) -> None:
    """Atomic writes go through an owner-only temporary file; the file in place has 0666 less the umask, as
    ``open`` would give, so a group that shares a model folder can read its checkpoints."""
    import os
    import stat

    from bundle.fileio import atomic_write

    ckpt = tmp_path
    previous = os.umask(0o027)
    try:
        _train(ckpt, 1)
        atomic_write(ckpt / "metrics.json", b"{}")
    finally:
        os.umask(previous)
    written = [ckpt / "checkpoint_epoch=1.pt", ckpt / "metrics.json"]
    assert [stat.S_IMODE(p.stat().st_mode) for p in written] == [0o640, 0o640]
    assert not list(ckpt.glob(f".*{TEMP_SUFFIX}"))
