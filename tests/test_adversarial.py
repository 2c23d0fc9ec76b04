"""AdversarialMaskPart: the segmentor's adversarial term, the discriminator's own step, resume from a checkpoint."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from ignite.engine import Events

from bundle.detection import CheXDetector
from bundle.engines import AdversarialMaskPart, MultiTaskTrainer
from bundle.handlers.checkpoint import TrainingCheckpoint
from bundle.losses import MultiTaskLoss
from bundle.networks import MaskDiscriminator, MultiCheXNet

from .test_phases import _loader


def _setup(seed: int = 0) -> tuple[MultiCheXNet, AdversarialMaskPart, torch.optim.Optimizer]:
    torch.manual_seed(seed)
    detector = CheXDetector()
    net = MultiCheXNet(backbone="resnet18", num_anchors=detector.num_anchors)
    part = AdversarialMaskPart(MaskDiscriminator(), weight=0.5, lr=1e-3)
    return net, part, torch.optim.AdamW(net.parameters(), lr=1e-3)


def _trainer(net: torch.nn.Module, part: AdversarialMaskPart, optimizer: Any, epochs: int) -> MultiTaskTrainer:
    return MultiTaskTrainer(
        device=torch.device("cpu"), max_epochs=epochs, train_data_loader=_loader("seg"), network=net, tasks=["seg"],
        optimizer=optimizer, loss_function=MultiTaskLoss(CheXDetector(), weights={"seg": 1.0}),
        parts={"adversarial": part},
    )


def _params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _changed(before: list[torch.Tensor], module: torch.nn.Module) -> bool:
    return all(not torch.equal(b, p) for b, p in zip(before, module.parameters()))


def test_adversarial_step_updates_the_segmentor_then_the_discriminator() -> None:
    net, part, optimizer = _setup()
    trainer = _trainer(net, part, optimizer, epochs=1)
    seen: dict[str, Any] = {}
    loss, after_step = part.loss, part.after_step

    def spy_loss(engine: Any, batch: Any, pred: Any) -> dict:
        seen["disc_at_loss"] = _params(part.discriminator)
        seen["seg_at_loss"] = _params(net.seg_head)
        return loss(engine, batch, pred)

    def spy_after(engine: Any, batch: Any, pred: Any) -> None:
        assert _changed(seen["seg_at_loss"], net.seg_head)  # the segmentor has stepped first, then the critic
        after_step(engine, batch, pred)
        assert _changed(seen["disc_at_loss"], part.discriminator)

    part.loss, part.after_step = spy_loss, spy_after
    outputs: list[dict] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append(dict(e.state.output)))
    trainer.run()
    assert len(outputs) == 2
    for out in outputs:
        torch.testing.assert_close(out["loss"], out["seg"] + 0.5 * out["adversarial_segmentor"])


def test_adversarial_segmentor_term_needs_no_mask_and_the_critic_waits_for_masks() -> None:
    net, part, optimizer = _setup()
    disc = _params(part.discriminator)
    image = torch.rand(2, 1, 64, 64)
    pred = net.train()(image, ["seg"])
    batch = {"image": image, "has_seg": torch.tensor([False, False]), "mask": torch.zeros(2, 1, 64, 64)}
    terms = part.loss(None, batch, pred)
    terms["loss"].backward()
    assert torch.isfinite(terms["segmentor"]) and net.seg_head.head[0].weight.grad.abs().sum() > 0
    part.after_step(None, batch, pred)
    assert all(torch.equal(b, p) for b, p in zip(disc, part.discriminator.parameters()))


def test_adversarial_critic_learns_true_from_predicted_masks() -> None:
    torch.manual_seed(0)
    part = AdversarialMaskPart(MaskDiscriminator(), lr=2e-3)
    image = torch.rand(4, 1, 32, 32)
    mask = torch.zeros(4, 1, 32, 32)
    mask[:, :, 8:24, 6:26] = 1.0
    pred = {"seg": torch.randn(4, 1, 32, 32)}  # blurry, wrong masks
    batch = {"image": image, "mask": mask, "has_seg": torch.ones(4, dtype=torch.bool)}

    def margin() -> float:
        with torch.no_grad():
            return float(part.discriminator(image, mask).mean() - part.discriminator(image, torch.sigmoid(pred["seg"])).mean())

    before = margin()
    for _ in range(15):
        part.after_step(None, batch, pred)
    assert margin() > before + 0.5


class _TinySegmentor(torch.nn.Module):
    """A one-convolution stand-in for MultiCheXNet (the resume test checkpoints it three times)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 1, 3, padding=1)

    def forward(self, image: torch.Tensor, tasks: list[str] | None = None) -> dict[str, torch.Tensor]:
        return {"seg": self.conv(image)}


def _run(ckpt: Path, epochs: int) -> tuple[dict, dict, dict]:
    torch.manual_seed(0)
    net, part = _TinySegmentor(), AdversarialMaskPart(MaskDiscriminator(), weight=0.5, lr=1e-3)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3)
    trainer = _trainer(net, part, optimizer, epochs=epochs)
    TrainingCheckpoint(str(ckpt), {"network": net, "optimizer": optimizer, "adversarial": part}).attach(trainer)
    trainer.run()
    state = part.state_dict()
    return net.state_dict(), state["discriminator"], state["optimizer"]["state"]


def test_adversarial_part_resumes_from_the_training_checkpoint(tmp_path: Path) -> None:
    """Two epochs straight equal one epoch, a new process-like start from the checkpoint, and one more epoch:
    the discriminator's weights and its Adam moments come back with the network's."""
    straight = _run(tmp_path / "straight", 2)
    first = _run(tmp_path / "stopped", 1)
    resumed = _run(tmp_path / "stopped", 2)
    torch.manual_seed(0)
    fresh = MaskDiscriminator().state_dict()
    assert any(not torch.equal(first[1][k], fresh[k]) for k in fresh)  # the first run moved the critic
    for key in straight[0]:
        assert torch.equal(resumed[0][key], straight[0][key]), key
    for key in straight[1]:
        assert torch.equal(resumed[1][key], straight[1][key]), key
    for index, moments in straight[2].items():
        for name, value in moments.items():
            assert torch.equal(resumed[2][index][name], value), (index, name)
