"""PhaseSchedule: phases switch data, heads, weights and frozen modules; resume lands in the right phase."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from monai.data import DataLoader

from bundle.data import multitask_collate
from bundle.data.mixing import AlternatingLoader, BoxesFromMaskd, restrict_labels
from bundle.detection import CheXDetector
from bundle.engines import MultiTaskTrainer
from bundle.engines.phases import PhaseSchedule, total_epochs
from bundle.handlers.checkpoint import TrainingCheckpoint
from bundle.losses import MultiTaskLoss
from bundle.networks import MultiCheXNet


def _sample(kind: str, index: int) -> dict:
    mask = torch.zeros(1, 64, 64)
    mask[0, 10:30, 20:40] = 1
    return {
        "image": torch.rand(1, 64, 64),
        "cls": torch.zeros(14),
        "cls_known": torch.ones(14, dtype=torch.bool) if kind == "cls" else torch.zeros(14, dtype=torch.bool),
        "has_cls": kind == "cls",
        "mask": mask if kind == "seg" else torch.zeros(1, 64, 64),
        "has_seg": kind == "seg",
        "boxes": torch.tensor([[8.0, 8.0, 40.0, 40.0]]) if kind == "det" else torch.zeros(0, 4),
        "box_labels": torch.zeros(1 if kind == "det" else 0, dtype=torch.int64),
        "has_det": kind == "det",
        "patient_id": f"{kind}{index}",
    }


def _loader(kind: str, n: int = 4) -> DataLoader:
    return DataLoader([_sample(kind, i) for i in range(n)], batch_size=2, collate_fn=multitask_collate)


def _trainer(phases: list[dict], ckpt: Path) -> tuple[MultiTaskTrainer, list[tuple]]:
    detector = CheXDetector()
    net = MultiCheXNet(backbone="resnet18", num_anchors=detector.num_anchors)
    trainer = MultiTaskTrainer(
        device=torch.device("cpu"), max_epochs=total_epochs(phases), train_data_loader=phases[0]["data"],
        network=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.01), loss_function=MultiTaskLoss(detector),
    )
    seen: list[tuple] = []
    trainer.add_event_handler(
        Events.ITERATION_COMPLETED,
        lambda e: seen.append((e.state.epoch, e.state.phase, tuple(sorted(k for k in e.state.output if k != "loss")))),
    )
    PhaseSchedule(phases, str(ckpt)).attach(trainer)
    return trainer, seen


def test_phases_switch_heads_data_and_freezing(tmp_path: Path) -> None:
    phases = [
        {"name": "cls", "data": _loader("cls"), "epochs": 1, "tasks": ["cls"], "weights": {"cls": 1.0}},
        {"name": "det", "data": _loader("det"), "epochs": 1, "tasks": ["det", "det_gate"], "freeze": ["encoder"]},
        {"name": "mtl", "data": AlternatingLoader([_loader("det"), _loader("seg", 2)]), "epochs": 1},
    ]
    trainer, seen = _trainer(phases, tmp_path)
    encoder_before = [p.detach().clone() for p in trainer.network.encoder.parameters()]
    gate_frozen: list[bool] = []
    trainer.add_event_handler(
        Events.EPOCH_COMPLETED, lambda e: gate_frozen.append(e.network.encoder.body.conv1.weight.requires_grad)
    )
    trainer.run()
    assert [s[:2] for s in seen] == [(1, "cls")] * 2 + [(2, "det")] * 2 + [(3, "mtl")] * 4
    assert seen[0][2] == ("cls",)
    assert seen[2][2] == ("det_box", "det_cls", "det_gate")
    assert gate_frozen == [True, False, True]
    assert sorted(p.name for p in tmp_path.glob("phase_*.pt")) == ["phase_cls.pt", "phase_det.pt", "phase_mtl.pt"]
    state = torch.load(tmp_path / "phase_det.pt", weights_only=True)
    det_phase_encoder = [state[f"encoder.{n}"] for n, _ in trainer.network.encoder.named_parameters()]
    cls_state = torch.load(tmp_path / "phase_cls.pt", weights_only=True)
    for name, _ in trainer.network.encoder.named_parameters():
        torch.testing.assert_close(state[f"encoder.{name}"], cls_state[f"encoder.{name}"])  # frozen in 'det'
    assert any(not torch.equal(a, b) for a, b in zip(encoder_before, det_phase_encoder))  # trained in 'cls'


def test_phases_of_different_lengths_all_run(tmp_path: Path) -> None:
    """A long first phase must not end the run early when later phases have shorter epochs."""
    phases = [
        {"name": "long", "data": _loader("cls", 8), "epochs": 1, "tasks": ["cls"]},
        {"name": "short", "data": _loader("seg", 2), "epochs": 4, "tasks": ["seg"]},
    ]
    trainer, seen = _trainer(phases, tmp_path)
    trainer.run()
    assert [s[:2] for s in seen] == [(1, "long")] * 4 + [(e, "short") for e in range(2, 6)]


def test_alternating_loader_order() -> None:
    loader = AlternatingLoader([_loader("det", 4), _loader("seg", 2)])
    kinds = [b["patient_id"][0][:3] for b in loader]
    assert kinds == ["det", "seg", "det", "seg"] and len(loader) == 4


def test_resume_lands_in_the_right_phase(tmp_path: Path) -> None:
    def phases() -> list[dict]:
        return [
            {"name": "a", "data": _loader("cls"), "epochs": 1, "tasks": ["cls"]},
            {"name": "b", "data": _loader("seg"), "epochs": 2, "tasks": ["seg"]},
        ]

    first, _ = _trainer(phases(), tmp_path)
    objects = {"network": first.network, "optimizer": first.optimizer}
    TrainingCheckpoint(str(tmp_path), objects).attach(first)
    first.add_event_handler(Events.EPOCH_COMPLETED(once=2), lambda e: e.terminate())  # stop inside phase b
    first.run()
    second, seen = _trainer(phases(), tmp_path)
    TrainingCheckpoint(str(tmp_path), {"network": second.network, "optimizer": second.optimizer}).attach(second)
    second.run()
    assert [s[:2] for s in seen] == [(3, "b")] * 2


def test_max_epochs_must_match(tmp_path: Path) -> None:
    detector = CheXDetector()
    net = MultiCheXNet(backbone="resnet18", num_anchors=detector.num_anchors)
    trainer = MultiTaskTrainer(
        device=torch.device("cpu"), max_epochs=5, train_data_loader=_loader("cls"), network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.01), loss_function=MultiTaskLoss(detector),
    )
    with pytest.raises(ValueError, match="max_epochs"):
        PhaseSchedule([{"name": "a", "data": _loader("cls"), "epochs": 1}], str(tmp_path)).attach(trainer)


def test_restrict_labels_and_boxes_from_mask() -> None:
    entry = {"image": "x.png", "cls": [0] * 14, "boxes": [], "box_labels": [], "mask": "m.png"}
    assert set(restrict_labels([entry], ["seg"])[0]) == {"image", "mask"}
    sample = _sample("seg", 0)
    sample["mask"][0, 50:60, 5:9] = 1
    derived = BoxesFromMaskd()(sample)
    assert derived["has_det"] and derived["boxes"].tolist() == [[10, 20, 30, 40], [50, 5, 60, 9]]


def test_label_by_finding() -> None:
    from bundle.data.mixing import label_by_finding

    entries = [{"image": "a", "finding": "Pneumonia/Viral/COVID-19"}, {"image": "b", "finding": "No Finding"}]
    assert [e["cls"] for e in label_by_finding(entries, "COVID-19")] == [[1], [0]]
    with pytest.raises(ValueError, match="no 'finding'"):
        label_by_finding([{"image": "c"}], "COVID-19")
