"""Boxes and masks stay aligned with the image through every spatial transform of the training pipeline."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser
from monai.transforms import Affine, Compose
from PIL import Image

from bundle.data import LoadCXRd, PrepareTargetsd, RandAffineBoxd, RandMirrorBoxd, ResizeTargetsd
from bundle.data.augment import affine_matrix, resample, sampling_grid

from .conftest import ROOT

WIDTH, HEIGHT = 96, 64
BOX = (20, 10, 50, 30)  # x1, y1, x2, y2


def _mask_box(mask: torch.Tensor) -> list[int]:
    """Bounding box (xyxy, pixel edges) of a (1, W, H) mask."""
    on = mask[0] > 0.5
    xs, ys = torch.nonzero(on.any(1)).flatten(), torch.nonzero(on.any(0)).flatten()
    return [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]


def _rectangle_files(tmp_path: Path) -> dict:
    """A PNG with a bright rectangle, its mask, and the rectangle as the entry's box (x = column)."""
    x1, y1, x2, y2 = BOX
    pixels = np.full((HEIGHT, WIDTH), 40, dtype=np.uint8)  # rows = y
    pixels[y1:y2, x1:x2] = 220
    Image.fromarray(pixels).save(tmp_path / "image.png")
    Image.fromarray(np.where(pixels > 100, 255, 0).astype(np.uint8)).save(tmp_path / "mask.png")
    return {"image": str(tmp_path / "image.png"), "mask": str(tmp_path / "mask.png"), "patient_id": "p",
            "boxes": [list(BOX)], "box_labels": [0]}


@pytest.fixture
def prepared(tmp_path: Path) -> dict:
    sample = PrepareTargetsd(14)(LoadCXRd()(_rectangle_files(tmp_path)))
    assert sample["image"].shape == (1, WIDTH, HEIGHT) and _mask_box(sample["mask"]) == list(BOX)
    return sample


def test_resize_scales_boxes_with_image_and_mask(prepared: dict) -> None:
    out = ResizeTargetsd((64, 32))(prepared)
    assert out["mask"].shape == (1, 64, 32)
    assert out["boxes"][0].tolist() == pytest.approx([b * s for b, s in zip(BOX, (64 / WIDTH, 0.5) * 2)])
    assert _mask_box(out["mask"]) == pytest.approx(out["boxes"][0].tolist(), abs=1)
    bright = out["image"][0] > 0.5
    assert _mask_box(bright[None].float()) == pytest.approx(out["boxes"][0].tolist(), abs=1)


def test_flip_is_horizontal_and_moves_boxes_with_pixels(prepared: dict) -> None:
    flip = RandMirrorBoxd(["image", "mask"], "boxes", prob=1.0, spatial_axis=0)
    out = flip(prepared)
    x1, y1, x2, y2 = BOX
    assert out["boxes"][0].tolist() == [WIDTH - x2, y1, WIDTH - x1, y2]  # x mirrored, y unchanged
    assert _mask_box(out["mask"]) == out["boxes"][0].int().tolist()
    torch.testing.assert_close(out["image"][0], torch.flip(prepared["image"][0], [0]))
    vertical = RandMirrorBoxd(["image", "mask"], "boxes", prob=1.0, spatial_axis=1)(prepared)
    assert vertical["boxes"][0].tolist() == [x1, HEIGHT - y2, x2, HEIGHT - y1]
    assert _mask_box(vertical["mask"]) == vertical["boxes"][0].int().tolist()
    assert RandMirrorBoxd(prob=0.0)(prepared)["mask"] is prepared["mask"]


@pytest.mark.parametrize("mode", ["bilinear", "nearest"])
def test_resampling_is_monais_affine(prepared: dict, mode: str) -> None:
    """The one-grid resampling of RandAffineBoxd gives what MONAI's Affine gives with the same matrix."""
    matrix = affine_matrix(0.12, (1.06, 0.95), (3.5, -2.0))
    image = prepared["image"] + torch.rand_like(prepared["image"]) if mode == "bilinear" else prepared["mask"]
    expected = Affine(affine=matrix, mode=mode, padding_mode="zeros", image_only=True)(image)
    got = resample(image, sampling_grid(matrix, (WIDTH, HEIGHT)), mode)
    assert type(got) is type(image) and got.dtype == image.dtype
    torch.testing.assert_close(torch.as_tensor(got), torch.as_tensor(expected), atol=1e-4, rtol=0)


@pytest.mark.parametrize("seed", range(6))
def test_affine_keeps_boxes_on_the_transformed_mask(prepared: dict, seed: int) -> None:
    affine = RandAffineBoxd(rotate_degrees=8, scale=0.1, translate=8, prob=1.0).set_random_state(seed)
    out = affine(prepared)
    assert out["image"].shape == out["mask"].shape == (1, WIDTH, HEIGHT)
    assert not torch.equal(out["mask"], prepared["mask"])
    assert _mask_box(out["mask"]) == pytest.approx(out["boxes"][0].tolist(), abs=1.5)
    assert _mask_box((out["image"] > 0.5).float()) == pytest.approx(out["boxes"][0].tolist(), abs=1.5)


def test_affine_drops_boxes_moved_out_of_the_image(prepared: dict) -> None:
    prepared["boxes"] = torch.tensor([[0.0, 0.0, 3.0, 3.0], list(BOX)])
    prepared["box_labels"] = torch.tensor([1, 0])
    out = RandAffineBoxd().apply(prepared, affine_matrix(0.0, (1.0, 1.0), (10.0, 10.0)))  # content moves -10 px
    assert out["box_labels"].tolist() == [0]
    assert out["boxes"][0].tolist() == pytest.approx([b - 10 for b in BOX], abs=1e-4)
    assert _mask_box(out["mask"]) == [b - 10 for b in BOX]


def test_train_config_pipeline_keeps_alignment(tmp_path: Path) -> None:
    """The preprocessing + augmentation lists of configs/train.json, run many times on the rectangle."""
    parser = ConfigParser()
    parser.read_config(ROOT / "configs" / "train.json")
    parser["image_size"] = [64, 64]
    transforms = Compose(parser.get_parsed_content("preprocessing") + parser.get_parsed_content("train#augmentation"))
    entry = _rectangle_files(tmp_path)
    for seed in range(8):
        transforms.set_random_state(seed)
        out = transforms(dict(entry))
        assert out["image"].shape == out["mask"].shape == (1, 64, 64)
        assert _mask_box(out["mask"]) == pytest.approx(out["boxes"][0].tolist(), abs=1.5)
        assert out["has_det"] and out["has_seg"]


def test_batch_mixes_samples_with_and_without_masks(tmp_path: Path) -> None:
    """A mask loaded from file and a missing mask collate together, whichever comes first."""
    from monai.data import MetaTensor

    from bundle.data import PrepareTargetsd, multitask_collate

    image = MetaTensor(torch.rand(1, 32, 32))
    with_mask = PrepareTargetsd(num_classes=14)({"image": image, "mask": MetaTensor(torch.ones(1, 32, 32))})
    without = PrepareTargetsd(num_classes=14)({"image": image.clone()})
    for order in ([with_mask, without], [without, with_mask]):
        batch = multitask_collate(order)
        assert batch["mask"].shape == (2, 1, 32, 32) and batch["has_seg"].tolist() == [s["has_seg"] for s in order]


def test_spatial_augmentation_moves_whichever_image_keys_a_sample_has(prepared: dict) -> None:
    """An image without mask or boxes (an unlabelled radiograph) is moved; a sample with none of the keys passes."""
    image_only = {"image": prepared["image"]}
    mirrored = RandMirrorBoxd(prob=1.0)(image_only)
    torch.testing.assert_close(mirrored["image"], torch.flip(prepared["image"], [1]))
    shifted = RandAffineBoxd().apply(image_only, affine_matrix(0.0, (1.0, 1.0), (10.0, 0.0)))
    torch.testing.assert_close(shifted["image"][0, :-10], prepared["image"][0, 10:])
    assert set(shifted) == {"image"}
    assert RandAffineBoxd(prob=1.0)({"cls": prepared["cls"]}).keys() == {"cls"}
    no_boxes = RandMirrorBoxd(prob=1.0)({**prepared, "boxes": torch.zeros(0, 4)})
    assert no_boxes["boxes"].shape == (0, 4)
