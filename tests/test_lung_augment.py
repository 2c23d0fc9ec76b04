"""Mask-aware lung augmentation: synthetic opacities stay inside the lung field, and the mask never moves."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Resized

from bundle.data import LoadCXRd, RandLungOpacityd

from .conftest import SHARED

COVID = SHARED / "data" / "covid"


def _real_cases(count: int = 4) -> list[dict]:
    """(image, mask) samples of real COVID radiographs and lung masks at 256 px, as the recipe's pipeline reads them."""
    if not (COVID / "lung_masks").is_dir():
        pytest.skip(f"real samples not found at {COVID}")
    masks = sorted((COVID / "lung_masks").glob("*.png"))[:count]
    load = LoadCXRd(keys=("image", "mask"))
    resize = Resized(keys=("image", "mask"), spatial_size=(256, 256), mode=("bilinear", "nearest"))
    cases = []
    for mask in masks:
        image = next(p for p in (COVID / "images").glob(mask.stem + ".*"))
        sample = resize(load({"image": str(image), "mask": str(mask)}))
        sample["mask"] = (torch.as_tensor(sample["mask"]) > 0.5).float()
        cases.append(sample)
    return cases


def _drawn_case() -> dict:
    """A 128-px image with two dark lung-shaped ellipses (the mask) on brighter soft tissue."""
    x, y = np.meshgrid(np.arange(128), np.arange(128), indexing="ij")
    lungs = (((x - 40) / 22) ** 2 + ((y - 55) / 40) ** 2 <= 1) | (((x - 88) / 22) ** 2 + ((y - 55) / 40) ** 2 <= 1)
    image = np.where(lungs, 0.2, 0.7).astype(np.float32) + 0.02 * np.random.default_rng(0).random((128, 128), np.float32)
    return {"image": MetaTensor(torch.from_numpy(image)[None]), "mask": torch.from_numpy(lungs.astype(np.float32))[None]}


@pytest.mark.parametrize("make", [_drawn_case, lambda: _real_cases()[0]], ids=["drawn", "real"])
def test_opacity_whitens_inside_the_lungs_only_and_keeps_the_mask(make) -> None:
    sample = make()
    before_image, before_mask = torch.as_tensor(sample["image"]).clone(), torch.as_tensor(sample["mask"]).clone()
    out = RandLungOpacityd(prob=1.0, coverage=(0.5, 0.5), strength=(0.8, 0.8)).set_random_state(0)(sample)
    lungs = before_mask[0] > 0.5
    change = torch.as_tensor(out["image"])[0] - before_image[0]
    assert torch.equal(torch.as_tensor(out["mask"]), before_mask)
    assert torch.equal(change[~lungs], torch.zeros_like(change[~lungs]))
    assert (change[lungs] > 1e-3).float().mean() > 0.2  # a real patch, about half the field with its soft edge
    assert float(change[lungs].mean()) > 0.02
    assert isinstance(out["image"], MetaTensor) and out["image"].shape == before_image.shape
    assert 0.0 <= float(out["image"].min()) and float(out["image"].max()) <= 1.0


def test_samples_without_a_lung_mask_pass_unchanged() -> None:
    transform = RandLungOpacityd(prob=1.0)
    image = torch.rand(1, 64, 64)
    assert torch.equal(transform({"image": image})["image"], image)
    assert torch.equal(transform({"image": image, "mask": torch.zeros(1, 64, 64)})["image"], image)


def test_same_seed_same_augmentation_and_prob_zero_is_identity() -> None:
    first = RandLungOpacityd(prob=1.0).set_random_state(3)(_drawn_case())["image"]
    second = RandLungOpacityd(prob=1.0).set_random_state(3)(_drawn_case())["image"]
    assert torch.equal(first, second)
    sample = _drawn_case()
    assert torch.equal(RandLungOpacityd(prob=0.0)(sample)["image"], sample["image"])

