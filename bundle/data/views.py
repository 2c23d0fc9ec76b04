"""Augmented views of unlabelled images, built from MONAI transforms.

- :func:`weak_strong_views` (FixMatch, Sohn et al. 2020): one random geometric transform (flip, small affine:
  rotation, zoom-crop, shift) turns ``image`` into the weak view, kept in ``image``; the strong view
  ``image_strong`` is a copy of the weak view changed by RandAugment-style photometric operations (Cubuk et al.,
  "RandAugment", CVPR-W 2020: a few drawn from intensity scale, gamma contrast, sharpening, Gaussian noise,
  posterisation, intensity shift) and a cutout. The strong view has no geometric change of its own, so both views
  are pixel-aligned: the weak view's mask prediction is a target for the strong view's, pixel by pixel.
- :func:`two_views` (SimCLR, Chen et al. 2020): ``image`` and ``image_view``, each with its own geometric and
  photometric draw, for contrastive pretraining.

Images are (1, W, H) in [0, 1] (:mod:`bundle.data.readers`); views leave as plain tensors.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import (
    Compose,
    CopyItemsd,
    EnsureTyped,
    MapTransform,
    RandAdjustContrastd,
    RandAffined,
    RandFlipd,
    RandGaussianNoised,
    RandGaussianSharpend,
    RandomizableTransform,
    RandScaleIntensityd,
    RandShiftIntensityd,
    SomeOf,
)

#: Keys of the views: the weak view stays in ``image``; the strong view and SimCLR's second view.
WEAK_KEY, STRONG_KEY, SECOND_VIEW_KEY = "image", "image_strong", "image_view"
VIEW_KEYS: tuple[str, ...] = (WEAK_KEY, STRONG_KEY, SECOND_VIEW_KEY)


class RandPosterized(RandomizableTransform, MapTransform):
    """Posterise [0, 1] images: quantise to ``2 ** bits`` levels, ``bits`` drawn from ``bits_range``."""

    def __init__(self, keys: Sequence[str], bits_range: tuple[int, int] = (3, 6), prob: float = 1.0) -> None:
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob)
        self.bits_range = bits_range
        self.bits = bits_range[1]

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        self.bits = int(self.R.randint(self.bits_range[0], self.bits_range[1] + 1))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        if self._do_transform:
            levels = 2**self.bits - 1
            for key in self.key_iterator(d):
                d[key] = torch.round(torch.as_tensor(d[key]).clamp(0, 1) * levels) / levels
        return d


def geometric(
    keys: Sequence[str], flip_prob: float = 0.0, rotate_degrees: float = 10.0, scale: float = 0.1,
    translate: float = 8.0, prob: float = 0.8,
) -> list[MapTransform]:
    """Weak geometric augmentation of ``keys`` together: left-right flip (axis 0, off by default: the heart makes
    the lungs differ), rotation in [-r, r] degrees, zoom in [-s, s] (a zoom-in is a crop), shift in [-t, t] px."""
    return [
        RandFlipd(keys, prob=flip_prob, spatial_axis=0),
        RandAffined(
            keys, prob=prob, rotate_range=float(np.deg2rad(rotate_degrees)), scale_range=(scale, scale),
            translate_range=(translate, translate), padding_mode="zeros",
        ),
    ]


def photometric(key: str, num_ops: int = 2, cutout: float = 0.25, noise_std: float = 0.05) -> list[Any]:
    """RandAugment-style strong intensity changes of ``key``: ``num_ops`` drawn from six operations, then one cutout
    square of side ``cutout`` of the image (0: none), filled with the image mean."""
    ops = [
        RandScaleIntensityd(key, factors=0.3, prob=1.0),
        RandAdjustContrastd(key, gamma=(0.5, 2.0), prob=1.0),
        RandGaussianSharpend(key, alpha=(5.0, 20.0), prob=1.0),
        RandGaussianNoised(key, std=noise_std, prob=1.0),
        RandPosterized([key], bits_range=(3, 6), prob=1.0),
        RandShiftIntensityd(key, offsets=0.15, prob=1.0),
    ]
    chosen: list[Any] = [SomeOf(ops, num_transforms=num_ops)]
    if cutout > 0:
        chosen.append(RandCutoutd([key], cutout))
    return chosen


class RandCutoutd(RandomizableTransform, MapTransform):
    """Cutout (DeVries & Taylor, arXiv:1708.04552): one square of side ``fraction`` of the image's smaller side, at
    a random place, set to the image mean."""

    def __init__(self, keys: Sequence[str], fraction: float = 0.25, prob: float = 1.0) -> None:
        MapTransform.__init__(self, keys)
        RandomizableTransform.__init__(self, prob)
        self.fraction = fraction

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform:
            return d
        for key in self.key_iterator(d):
            image = torch.as_tensor(d[key]).clone()
            width, height = image.shape[1:]
            side = max(1, int(min(width, height) * self.fraction))
            x, y = int(self.R.randint(0, width - side + 1)), int(self.R.randint(0, height - side + 1))
            image[:, x : x + side, y : y + side] = image.mean()
            d[key] = image
        return d


def _plain(keys: Sequence[str]) -> EnsureTyped:
    return EnsureTyped(keys, data_type="tensor", dtype=torch.float32, track_meta=False)


def weak_strong_views(
    flip_prob: float = 0.0, rotate_degrees: float = 10.0, scale: float = 0.1, translate: float = 8.0,
    num_ops: int = 2, cutout: float = 0.25,
) -> Compose:
    """Weak view in ``image``, pixel-aligned strong view in ``image_strong`` (see the module docstring)."""
    return Compose([
        *geometric([WEAK_KEY], flip_prob, rotate_degrees, scale, translate),
        _plain([WEAK_KEY]),
        CopyItemsd(WEAK_KEY, names=STRONG_KEY),
        *photometric(STRONG_KEY, num_ops, cutout),
        _plain([WEAK_KEY, STRONG_KEY]),
    ])


def two_views(
    flip_prob: float = 0.0, rotate_degrees: float = 15.0, scale: float = 0.2, translate: float = 16.0,
    num_ops: int = 2, cutout: float = 0.25,
) -> Compose:
    """Two independent strong views ``image`` and ``image_view`` of one image (SimCLR)."""
    transforms: list[Any] = [_plain([WEAK_KEY]), CopyItemsd(WEAK_KEY, names=SECOND_VIEW_KEY)]
    for key in (WEAK_KEY, SECOND_VIEW_KEY):
        transforms += geometric([key], flip_prob, rotate_degrees, scale, translate)
        transforms += photometric(key, num_ops, cutout)
    return Compose([*transforms, _plain([WEAK_KEY, SECOND_VIEW_KEY])])
