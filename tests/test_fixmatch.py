"""FixMatch pseudo-labels, segmentation consistency, ramp-up, mean teacher, and a short semi-supervised run."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from ignite.engine import Events
from monai.data import DataLoader

from bundle.data import EndlessBatches, multitask_collate, weak_strong_views
from bundle.detection import CheXDetector
from bundle.engines import MeanTeacher, MultiTaskTrainer, SemiSupervised, sigmoid_rampup
from bundle.losses import FixMatchLoss, MultiTaskLoss, SegConsistencyLoss, confident_targets
from bundle.metrics.segmentation import dice_per_image
from bundle.networks import MultiCheXNet


def test_fixmatch_pseudo_labels_respect_the_threshold_per_finding() -> None:
    probs = torch.tensor([[0.95, 0.7, 0.69, 0.5, 0.31, 0.3, 0.05]])
    targets, confident = confident_targets(probs, 0.7)
    assert confident.tolist() == [[True, True, False, False, False, True, True]]
    assert targets[confident].tolist() == [1.0, 1.0, 0.0, 0.0]


def test_fixmatch_loss_trains_only_confident_findings() -> None:
    weak = torch.logit(torch.tensor([[0.9, 0.6, 0.1, 0.45]]))
    strong = torch.zeros(1, 4, requires_grad=True)
    loss, fraction = FixMatchLoss(threshold=0.7)(strong, weak)
    loss.backward()
    assert fraction.item() == pytest.approx(0.5)
    grad = strong.grad[0]
    assert grad[0] < 0 and grad[2] > 0  # pushed towards 1 and 0
    assert grad[1] == 0 and grad[3] == 0  # unconfident findings get nothing
    assert loss.item() == pytest.approx(2 * math.log(2) / 4)  # BCE(0.5) on 2 of 4 findings, over all 4


def test_fixmatch_seg_pseudo_mask_leaves_out_unconfident_pixels() -> None:
    weak = torch.full((1, 1, 4, 4), 0.5)
    weak[..., :2, :] = 0.95
    weak[..., 3, :] = 0.02
    strong = torch.zeros(1, 1, 4, 4, requires_grad=True)
    loss, fraction = SegConsistencyLoss("dice", threshold=0.8)(strong, torch.logit(weak))
    loss.backward()
    assert fraction.item() == pytest.approx(12 / 16)
    assert torch.all(strong.grad[..., 2, :] == 0)  # p = 0.5 row: no target
    assert torch.all(strong.grad[..., :2, :] < 0) and torch.all(strong.grad[..., 3, :] > 0)


def test_fixmatch_seg_kl_is_zero_for_equal_views_and_grows_apart() -> None:
    weak = torch.randn(2, 1, 8, 8)
    kl = SegConsistencyLoss("kl")
    assert kl(weak.clone(), weak)[0].item() == pytest.approx(0.0, abs=1e-6)
    assert kl(weak + 1.0, weak)[0] < kl(weak + 3.0, weak)[0]


def test_fixmatch_rampup_rises_from_small_to_one() -> None:
    values = [sigmoid_rampup(i, 100) for i in (0, 50, 100, 1000)]
    assert values[0] == pytest.approx(math.exp(-5)) and values[0] < values[1] < values[2] == values[3] == 1.0
    assert sigmoid_rampup(0, 0) == 1.0


def test_fixmatch_mean_teacher_follows_the_student_and_resumes() -> None:
    student = torch.nn.Sequential(torch.nn.Linear(3, 2), torch.nn.BatchNorm1d(2))
    teacher = MeanTeacher(decay=0.9)
    start = teacher.of(student)[0].weight.clone()
    with torch.no_grad():
        student[0].weight.add_(1.0)
    teacher.update(student)
    assert torch.allclose(teacher.model[0].weight, start + 0.1)
    resumed = MeanTeacher(decay=0.9)
    resumed.load_state_dict(teacher.state_dict())
    assert torch.equal(resumed.of(student)[0].weight, teacher.model[0].weight)


def _disc(size: int, centre: tuple[float, float], radius: float) -> torch.Tensor:
    x, y = torch.meshgrid(torch.arange(size).float(), torch.arange(size).float(), indexing="ij")
    return (((x - centre[0]) ** 2 + (y - centre[1]) ** 2) <= radius**2).float()[None]


def _sample(generator: torch.Generator, size: int = 64) -> dict:
    centre = tuple((torch.rand(2, generator=generator) * 24 + 20).tolist())
    mask = _disc(size, centre, 12.0)
    image = (0.25 + 0.5 * mask + 0.05 * torch.randn(1, size, size, generator=generator)).clamp(0, 1)
    return {"image": image, "mask": mask}


def _labelled(sample: dict) -> dict:
    return {**sample, "cls": torch.zeros(14), "cls_known": torch.zeros(14, dtype=torch.bool), "has_cls": False,
            "has_seg": True, "boxes": torch.zeros(0, 4), "box_labels": torch.zeros(0, dtype=torch.int64),
            "has_det": False}


def _val_dice(net: MultiCheXNet, samples: list[dict]) -> float:
    net.eval()
    with torch.no_grad():
        images = torch.stack([s["image"] for s in samples])
        pred = (torch.sigmoid(net(images, ["seg"])["seg"]) > 0.5).float()
    return float(dice_per_image(pred, torch.stack([s["mask"] for s in samples])).mean())


def test_fixmatch_short_semi_supervised_run_moves_the_metric(tmp_path: Path) -> None:
    torch.manual_seed(0)
    generator = torch.Generator().manual_seed(0)
    labelled = [_labelled(_sample(generator)) for _ in range(4)]
    views = weak_strong_views(rotate_degrees=5.0, translate=2.0)
    views.set_random_state(0)
    unlabelled = [views({"image": _sample(generator)["image"]}) for _ in range(16)]
    held_out = [_sample(generator) for _ in range(6)]
    net = MultiCheXNet(backbone="resnet18", seg_channels=(32, 16, 16, 8, 8))
    before = _val_dice(net, held_out)
    part = SemiSupervised(
        EndlessBatches(DataLoader(unlabelled, batch_size=8, shuffle=True, collate_fn=multitask_collate)),
        terms={"seg": SegConsistencyLoss("kl")}, weights={"seg": 1.0}, rampup_iterations=10,
        teacher=MeanTeacher(0.9),
    )
    seen: list[dict] = []
    trainer = MultiTaskTrainer(
        device=torch.device("cpu"), max_epochs=8, network=net, tasks=["seg"],
        train_data_loader=DataLoader(labelled, batch_size=4, shuffle=True, collate_fn=multitask_collate),
        optimizer=torch.optim.AdamW(net.parameters(), lr=3e-3), loss_function=MultiTaskLoss(CheXDetector()),
        parts={"semi": part}, amp=False,
    )
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(dict(e.state.output)))
    trainer.run()
    after = _val_dice(net, held_out)
    assert after > before + 0.2, (before, after)
    assert {"semi_seg", "semi_seg_confident", "semi_rampup"} <= set(seen[-1])
    assert seen[0]["semi_rampup"] < seen[-1]["semi_rampup"]
    assert part.teacher is not None and not torch.equal(
        part.teacher.model.seg_head.head[0].weight, net.seg_head.head[0].weight
    )
