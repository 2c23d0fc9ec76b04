"""Exact resume: a training killed with ``kill -9`` and restarted ends with the same weights, bit for bit on CPU,
as one that ran without interruption; so does an in-process run stopped and resumed with fresh objects."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from ignite.engine import Engine, Events
from monai.data import DataLoader
from monai.transforms import Compose, RandGaussianNoise, Randomizable

from bundle.data import make_demo_dataset
from bundle.handlers.checkpoint import TrainingCheckpoint
from bundle.losses import TeacherForcing

from .conftest import ROOT

EPOCHS = 4
#: One thread per run, so the uninterrupted and the killed run share the two cores without changing any result.
ENV = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")


def _training(work: Path, datalist: Path) -> list[str]:
    return [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "training",
        "--config_file",
        "configs/train.json",
        "--datalist_file",
        str(datalist),
        "--image_size",
        "[64,64]",
        "--batch_size",
        "4",
        "--epochs",
        str(EPOCHS),
        "--val_interval",
        "1",
        "--network_def#backbone",
        "resnet18",
        "--ckpt_dir",
        str(work / "models"),
        "--output_dir",
        str(work / "eval"),
    ]


def _kill_in_epoch_3(cmd: list[str]) -> str:
    """Start ``cmd``, SIGKILL it once the first iteration of epoch 3 is logged; return its output until then."""
    process = subprocess.Popen(cmd, cwd=ROOT, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert process.stdout is not None
    seen = []
    for line in process.stdout:
        seen.append(line)
        if f"Epoch: 3/{EPOCHS}, Iter: 1/" in line:
            os.kill(process.pid, signal.SIGKILL)
            break
    process.wait(timeout=60)
    assert process.returncode == -signal.SIGKILL, "".join(seen)[-3000:]
    return "".join(seen)


def _tensors(state: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor in a nested checkpoint, by path."""
    found: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if isinstance(value, torch.Tensor):
            found[f"{prefix}{key}"] = value
        elif isinstance(value, dict):
            found.update(_tensors(value, f"{prefix}{key}."))
    return found


@pytest.fixture(scope="module")
def datalist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 64-pixel synthetic set small enough for four epochs in seconds: 16 training, 4 validation images."""
    return make_demo_dataset(tmp_path_factory.mktemp("resume_data"), num_train=16, num_val=4, num_test=0, size=64)


def test_kill_9_in_epoch_3_then_resume_gives_bitwise_equal_weights(tmp_path: Path, datalist: Path) -> None:
    straight, killed = tmp_path / "straight", tmp_path / "killed"
    log = tmp_path / "uninterrupted.log"
    with log.open("w") as out:  # a file, not a pipe nobody reads while the other runs go on
        uninterrupted = subprocess.Popen(_training(straight, datalist), cwd=ROOT, env=ENV, stdout=out, stderr=out)
    _kill_in_epoch_3(_training(killed, datalist))
    assert sorted(p.name for p in (killed / "models").glob("checkpoint_epoch=*.pt")) == [
        "checkpoint_epoch=1.pt",
        "checkpoint_epoch=2.pt",
    ]

    resumed = subprocess.run(
        _training(killed, datalist), cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600, check=False
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert (
        f"resumed from {killed / 'models' / 'checkpoint_epoch=2.pt'} at epoch 2 of {EPOCHS}"
        in resumed.stdout + resumed.stderr
    )
    assert uninterrupted.wait(timeout=600) == 0, log.read_text()[-3000:]

    final = f"checkpoint_epoch={EPOCHS}.pt"
    a = torch.load(straight / "models" / final, map_location="cpu", weights_only=True)
    b = torch.load(killed / "models" / final, map_location="cpu", weights_only=True)
    for part in ("network", "optimizer"):
        ta, tb = _tensors(a[part]), _tensors(b[part])
        assert ta.keys() == tb.keys() and ta
        worst = max(float((ta[k].double() - tb[k].double()).abs().max()) for k in ta if ta[k].numel())
        assert worst == 0.0, f"{part}: max abs difference {worst}"
        assert all(torch.equal(ta[k], tb[k]) for k in ta), part
    assert a["optimizer"]["param_groups"] == b["optimizer"]["param_groups"]
    assert a["lr_scheduler"] == b["lr_scheduler"]
    assert a["trainer"] == b["trainer"]
    # the best-model saver's memory resumed too: same best score, same model.pt as the uninterrupted run
    assert a["best_model"] == b["best_model"] and a["best_model"]["best_metric"] > -1
    best = [torch.load(run / "models" / "model.pt", map_location="cpu", weights_only=True)["model"]
            for run in (straight, killed)]
    assert all(torch.equal(best[0][k], best[1][k]) for k in best[0])
    # only this run's last two checkpoints, no temporary file left by the kill
    names = sorted(p.name for p in (killed / "models").iterdir() if "checkpoint" in p.name)
    assert names == [f"checkpoint_epoch={EPOCHS - 1}.pt", final]


class _Scale(Randomizable):
    """A transform drawing from its own RandomState, as MONAI's random transforms do."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.R.uniform(0.5, 1.5)


class _Augmented(torch.utils.data.Dataset):
    def __init__(self, items: list[torch.Tensor]) -> None:
        self.items = items
        self.transform = Compose([_Scale(), RandGaussianNoise(prob=0.5, std=0.1)])

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.transform(self.items[index])


def _run(ckpt: Path, stop_after: int | None = None, strip_random: bool = False) -> dict[str, torch.Tensor]:
    """Four epochs of a dropout network on shuffled, augmented data, with teacher-forcing draws and steps scaled
    by Python's and NumPy's global generators; a checkpoint each epoch, then another loader iterated (as
    validation does, drawing from torch's generator). ``stop_after`` ends the run early; the next call resumes."""
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    loader = DataLoader(_Augmented([torch.randn(3) for _ in range(12)]), batch_size=4, shuffle=True)
    other = DataLoader(list(range(4)), batch_size=2)
    net = torch.nn.Sequential(torch.nn.Linear(3, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 1))
    optimizer = torch.optim.Adam(net.parameters(), lr=0.01)
    forcing = TeacherForcing(p=0.5)

    def step(engine: Engine, batch: torch.Tensor) -> float:
        optimizer.zero_grad()
        forced = bool(forcing.select(torch.zeros(1), torch.ones(1, dtype=torch.bool))[0])
        scale = (2.0 if forced else 1.0) * (1.0 + np.random.rand()) * (1.0 + random.random())
        loss = scale * net(batch).pow(2).mean()
        loss.backward()
        optimizer.step()
        return loss.item()

    trainer = Engine(step)
    checkpoint = TrainingCheckpoint(str(ckpt), {"network": net, "optimizer": optimizer, "teacher_forcing": forcing})
    checkpoint.attach(trainer)
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: list(other))  # attached after the checkpoint
    if stop_after is not None:
        trainer.add_event_handler(Events.EPOCH_COMPLETED(once=stop_after), lambda e: e.terminate())
    if strip_random:
        for _, path in checkpoint.checkpoints():
            state = torch.load(path, weights_only=True)
            del state["random"]
            torch.save(state, path)
    trainer.run(loader, max_epochs=EPOCHS)
    return {k: v.clone() for k, v in net.state_dict().items()}


def test_stopped_and_resumed_run_matches_uninterrupted_one(tmp_path: Path) -> None:
    straight = _run(tmp_path / "straight", None)
    _run(tmp_path / "stopped", 2)
    resumed = _run(tmp_path / "stopped", None)
    assert all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_resume_without_random_states_differs(tmp_path: Path) -> None:
    """The control: the same resume with the random states taken out of the checkpoint does not match."""
    straight = _run(tmp_path / "straight", None)
    _run(tmp_path / "stopped", 2)
    resumed = _run(tmp_path / "stopped", None, strip_random=True)
    assert not all(torch.equal(straight[k], resumed[k]) for k in straight)


def test_teacher_forcing_continues_its_draws_after_load(tmp_path: Path) -> None:
    truth, gate = torch.tensor([True, False]), torch.tensor([-3.0, 3.0])
    first = TeacherForcing(p=0.5, seed=3)
    for _ in range(7):
        first.select(gate, truth)
    counts = (first.forced, first.draws)
    torch.save(first.state_dict(), tmp_path / "tf.pt")
    expected = [first.select(gate, truth).tolist() for _ in range(20)]
    second = TeacherForcing(p=0.5, seed=0)
    second.load_state_dict(torch.load(tmp_path / "tf.pt", weights_only=True))
    assert (second.forced, second.draws) == counts
    assert [second.select(gate, truth).tolist() for _ in range(20)] == expected


def test_frozen_module_stays_put_under_adamw(tmp_path: Path) -> None:
    """Gradients are set to None between steps: a module frozen in the second phase, after training in the
    first, is not moved by AdamW's momentum and weight decay (nor by whether it once had a gradient)."""
    from bundle.detection import CheXDetector
    from bundle.engines import MultiTaskTrainer
    from bundle.engines.phases import PhaseSchedule, total_epochs
    from bundle.losses import MultiTaskLoss
    from bundle.networks import MultiCheXNet

    from .test_phases import _loader

    phases = [
        {"name": "cls", "data": _loader("cls", 2), "epochs": 1, "tasks": ["cls"]},
        {"name": "seg", "data": _loader("seg", 2), "epochs": 1, "tasks": ["seg"], "freeze": ["encoder"]},
    ]
    detector = CheXDetector()
    net = MultiCheXNet(backbone="resnet18", num_anchors=detector.num_anchors)
    trainer = MultiTaskTrainer(
        device=torch.device("cpu"), max_epochs=total_epochs(phases), train_data_loader=phases[0]["data"], network=net,
        optimizer=torch.optim.AdamW(net.parameters(), lr=0.01, weight_decay=0.1), loss_function=MultiTaskLoss(detector),
    )  # fmt: skip
    PhaseSchedule(phases, str(tmp_path)).attach(trainer)
    encoder: list[list[torch.Tensor]] = []
    trainer.add_event_handler(
        Events.EPOCH_COMPLETED, lambda e: encoder.append([p.clone() for p in net.encoder.parameters()])
    )
    trainer.run()
    assert all(torch.equal(a, b) for a, b in zip(*encoder))
