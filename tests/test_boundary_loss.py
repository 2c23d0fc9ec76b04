"""DistanceWeightedDiceBCELoss: a false positive far from the true mask costs more than one on its border."""

from __future__ import annotations

import pytest
import torch

from bundle.losses import DiceBCELoss, DistanceWeightedDiceBCELoss, distance_outside


def _lungs(size: int = 64) -> torch.Tensor:
    mask = torch.zeros(2, 1, size, size)
    mask[:, :, 10:40, 8:28] = 1
    mask[:, :, 10:44, 36:56] = 1
    return mask


def test_distance_outside_is_the_euclidean_distance_to_the_nearest_mask_pixel() -> None:
    mask = torch.zeros(1, 2, 9, 11)
    mask[0, 0, 4, 5] = 1
    rows, cols = torch.meshgrid(torch.arange(9.0), torch.arange(11.0), indexing="ij")
    distance = distance_outside(mask)
    assert distance.shape == mask.shape and distance.dtype == torch.float32
    assert torch.allclose(distance[0, 0], torch.hypot(rows - 4, cols - 5))
    assert torch.equal(distance[0, 1], torch.zeros(9, 11)), "an empty mask has no distance to weigh by"


def test_without_false_positives_the_loss_is_dice_bce() -> None:
    mask = _lungs()
    logits = torch.where(mask > 0, -0.3 + 0.2 * torch.randn_like(mask), -16.0)  # misses inside, no false positive
    assert torch.allclose(DistanceWeightedDiceBCELoss()(logits, mask), DiceBCELoss()(logits, mask), atol=1e-5)


def test_a_leak_far_below_the_lungs_costs_more_than_the_same_area_on_their_border() -> None:
    mask = _lungs()
    clean = torch.where(mask > 0, 8.0, -8.0)
    border, leak = clean.clone(), clean.clone()
    border[:, :, 44:47, 36:56] = 8.0  # 3 rows just under the left lung
    leak[:, :, 58:61, 36:56] = 8.0  # the same 60 pixels 14-16 px under it, as a gastric-bubble leak
    plain, weighted = DiceBCELoss(), DistanceWeightedDiceBCELoss(scale=0.05)
    assert torch.isclose(plain(border, mask), plain(leak, mask), atol=1e-5), "plain Dice + BCE prices both alike"
    assert weighted(leak, mask) > weighted(border, mask) + 0.05

    both = torch.maximum(border, leak).requires_grad_(True)
    weighted(both, mask).backward()
    gained = both.grad.clone()
    both.grad = None
    plain(both, mask).backward()
    gained -= both.grad  # the distance weight's extra BCE gradient, (w - 1) (p - t) / N
    near, far = gained[0, 0, 44, 40], gained[0, 0, 60, 40]  # 1 px and 17 px under the lung
    assert near > 0, "a false positive's extra gradient pushes its logit down"
    assert far / near == pytest.approx(17.0, rel=1e-3), "the extra weight grows with the distance"


def test_scale_must_be_positive() -> None:
    with pytest.raises(ValueError, match="scale must be positive"):
        DistanceWeightedDiceBCELoss(scale=0.0)
