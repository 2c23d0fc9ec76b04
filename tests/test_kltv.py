"""KLTVLoss (absolute KL + Tversky, Imran & Terzopoulos 2019) and the seg_loss option of MultiTaskLoss."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceLoss

from bundle.detection import CheXDetector
from bundle.engines import MultiTaskTrainer
from bundle.losses import KLTVLoss, MultiTaskLoss
from bundle.metrics.segmentation import dice_per_image
from bundle.networks import MultiCheXNet


def _target(batch: int = 2, side: int = 32, seed: int = 0) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, 1, side, side, generator=generator) > 0.6).float()


def _numpy_kltv(p: np.ndarray, t: np.ndarray, alpha: float, beta: float, smooth: float = 1e-5) -> np.ndarray:
    """Per-sample |mean Bernoulli KL(t || p)| + Tversky loss, written out independently of the module."""
    p = np.clip(p.reshape(len(p), -1).astype(np.float64), 1e-6, 1 - 1e-6)
    t = t.reshape(len(t), -1).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        fg = np.where(t > 0, t * np.log(t / p), 0.0)
        bg = np.where(t < 1, (1 - t) * np.log((1 - t) / (1 - p)), 0.0)
    kl = np.abs((fg + bg).mean(axis=1))
    tp, fp, fn = (p * t).sum(1), (p * (1 - t)).sum(1), ((1 - p) * t).sum(1)
    return kl + 1 - (tp + smooth) / (tp + alpha * fp + beta * fn + smooth)


def test_kltv_near_zero_for_perfect_large_for_inverted_and_in_between_for_half() -> None:
    target = _target()
    loss = KLTVLoss()
    perfect, half, inverted = loss(target, target), loss(torch.full_like(target, 0.5), target), loss(1 - target, target)
    assert float(perfect) < 1e-4
    assert float(inverted) > 10.0  # -log(1e-6) from the KL term, plus a Tversky loss of ~1
    assert float(perfect) < float(half) < float(inverted)
    logits = KLTVLoss(sigmoid=True)
    assert float(logits(20.0 * (2 * target - 1), target)) < 1e-4
    assert float(logits(-20.0 * (2 * target - 1), target)) > 10.0


@pytest.mark.parametrize("alpha, beta", [(0.3, 0.7), (0.7, 0.3), (0.5, 0.5)])
def test_kltv_equals_its_two_parts_computed_with_numpy(alpha: float, beta: float) -> None:
    generator = torch.Generator().manual_seed(1)
    probs = torch.rand(3, 1, 16, 16, generator=generator)
    soft = torch.rand(3, 1, 16, 16, generator=generator)  # soft targets exercise every KL term
    for target in (_target(3, 16), soft):
        expected = _numpy_kltv(probs.numpy(), target.numpy(), alpha, beta)
        per_sample = KLTVLoss(alpha=alpha, beta=beta, reduction="none")(probs, target)
        assert per_sample.shape == (3, 1)
        np.testing.assert_allclose(per_sample[:, 0].double().numpy(), expected, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(float(KLTVLoss(alpha=alpha, beta=beta)(probs, target)), expected.mean(), rtol=1e-5)
        np.testing.assert_allclose(
            float(KLTVLoss(alpha=alpha, beta=beta, reduction="sum")(probs, target)), expected.sum(), rtol=1e-5
        )
    pooled = _numpy_kltv(probs.numpy().reshape(1, -1), soft.numpy().reshape(1, -1), alpha, beta)
    np.testing.assert_allclose(float(KLTVLoss(alpha=alpha, beta=beta, batch=True)(probs, soft)), pooled[0], rtol=1e-5)


def test_kltv_finite_with_gradient_for_empty_target_and_empty_prediction() -> None:
    empty, full = torch.zeros(2, 1, 16, 16), _target(2, 16)
    for logits, target in ((torch.randn(2, 1, 16, 16), empty), (torch.full((2, 1, 16, 16), -30.0), full),
                           (torch.full((2, 1, 16, 16), -30.0), empty)):
        logits.requires_grad_(True)
        loss = KLTVLoss(sigmoid=True)(logits, target)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()
        if target.any() or logits.detach().max() > -30.0:
            assert (logits.grad != 0).all()  # every pixel gets a gradient (the KL term reaches each one)
    probs = torch.zeros(2, 1, 16, 16, requires_grad=True)
    loss = KLTVLoss()(probs, full)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(probs.grad).all() and probs.grad.abs().sum() > 0


def test_kltv_tversky_part_with_alpha_beta_half_is_the_dice_loss() -> None:
    logits, target = torch.randn(3, 1, 16, 16), _target(3, 16)
    tversky = KLTVLoss(sigmoid=True, alpha=0.5, beta=0.5, kl_weight=0.0, batch=True, smooth_nr=0.5e-5, smooth_dr=0.5e-5)
    torch.testing.assert_close(tversky(logits, target), DiceLoss(sigmoid=True, batch=True)(logits, target))
    recall = KLTVLoss(sigmoid=True, alpha=0.3, beta=0.7, kl_weight=0.0)
    under = torch.where(target > 0, torch.zeros_like(logits), torch.full_like(logits, -9.0))  # misses half
    over = torch.where(target > 0, torch.full_like(logits, 9.0), torch.zeros_like(logits))  # spills half
    assert float(recall(under, target)) > float(recall(over, target))  # beta > alpha: false negatives cost more


def _batch(mask: torch.Tensor, has_seg: list[bool]) -> dict:
    return {
        "image": torch.rand(len(mask), 1, *mask.shape[2:]), "mask": mask, "has_seg": torch.tensor(has_seg),
        "boxes": [torch.zeros(0, 4)] * len(mask), "has_det": torch.zeros(len(mask), dtype=torch.bool),
    }


def test_kltv_as_seg_loss_of_multitask_loss_and_default_unchanged() -> None:
    mask, logits = _target(3, 32), torch.randn(3, 1, 32, 32)
    batch = _batch(mask, [True, False, True])
    kltv = KLTVLoss(sigmoid=True, batch=True)
    terms = MultiTaskLoss(CheXDetector(), weights={"seg": 2.0}, seg_loss=kltv)({"seg": logits}, batch)
    labelled = torch.tensor([True, False, True])
    torch.testing.assert_close(terms["seg"], kltv(logits[labelled], mask[labelled]))
    torch.testing.assert_close(terms["loss"], 2.0 * terms["seg"])
    default = MultiTaskLoss(CheXDetector(), weights={"seg": 1.0})({"seg": logits}, batch)["seg"]
    dice_bce = DiceLoss(sigmoid=True, batch=True)(logits[labelled], mask[labelled]) + F.binary_cross_entropy_with_logits(
        logits[labelled], mask[labelled]
    )
    torch.testing.assert_close(default, dice_bce)


def _disc_images(n: int = 8, side: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """Images with one bright disc each (random centre and radius) and the disc as mask."""
    generator = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(side), torch.arange(side), indexing="ij")
    masks = []
    for _ in range(n):
        cy, cx = torch.randint(18, side - 18, (2,), generator=generator).tolist()
        radius = int(torch.randint(8, 15, (1,), generator=generator))
        masks.append(((yy - cy) ** 2 + (xx - cx) ** 2 <= radius**2).float())
    mask = torch.stack(masks)[:, None]
    return 0.3 + 0.5 * mask + 0.05 * torch.randn(mask.shape, generator=generator), mask


def test_kltv_short_training_raises_dice() -> None:
    torch.manual_seed(0)
    image, mask = _disc_images()
    samples = [{"image": i, "mask": m, "has_seg": True, "cls": torch.zeros(14), "cls_known": torch.zeros(14, dtype=torch.bool),
                "has_cls": False, "boxes": torch.zeros(0, 4), "box_labels": torch.zeros(0, dtype=torch.int64),
                "has_det": False} for i, m in zip(image, mask)]
    from bundle.data import multitask_collate

    loader = torch.utils.data.DataLoader(samples, batch_size=4, shuffle=True, collate_fn=multitask_collate)
    detector = CheXDetector()
    net = MultiCheXNet(backbone="resnet18", num_anchors=detector.num_anchors)

    def dice() -> float:
        net.train()  # batch statistics: a few steps leave the running ones behind
        with torch.no_grad():
            return float(dice_per_image(net(image, ["seg"])["seg"] > 0, mask > 0).mean())

    before = dice()
    loss = MultiTaskLoss(detector, weights={"seg": 1.0}, seg_loss=KLTVLoss(sigmoid=True, batch=True))
    MultiTaskTrainer(
        device=torch.device("cpu"), max_epochs=5, train_data_loader=loader, network=net, tasks=["seg"],
        optimizer=torch.optim.AdamW(net.parameters(), lr=0.003), loss_function=loss,
    ).run()
    after = dice()
    assert after > before + 0.3 and after > 0.6, (before, after)
