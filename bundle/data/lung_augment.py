"""Mask-aware intensity augmentation for lung fields: synthetic opacities inside the mask.

Lung-field masks include consolidated lung, and a whitened lung left out of the mask is a common lung-segmentation
failure on COVID-19 radiographs. ``RandLungOpacityd`` whitens smooth random patches *inside* the mask (the mask is
unchanged: it is still lung), on (1, W, H) images in [0, 1], and leaves samples without a mask alone. It is the
experiment overlay ``configs/lung_synthetic.json`` of the lung recipe (``docs/results/lung.md``: it did not raise
the cross-validated Dice, so the recipe does not use it).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.transforms import MapTransform, RandomizableTransform


def _as_tensor(value: Any) -> torch.Tensor:
    """A plain float tensor (MetaTensor metadata dropped) of ``value``."""
    tensor = value.as_tensor() if isinstance(value, MetaTensor) else torch.as_tensor(value)
    return tensor.float()


def _replace(original: Any, values: torch.Tensor) -> Any:
    """``values`` in the container type of ``original`` (a MetaTensor keeps its metadata)."""
    if isinstance(original, torch.Tensor):
        out = original.clone()
        out.copy_(values.to(original.dtype))
        return out
    return values.numpy().astype(np.asarray(original).dtype)


class RandLungOpacityd(RandomizableTransform, MapTransform):
    """Whiten smooth random patches of the lung field towards the soft-tissue level (synthetic consolidation).

    A coarse uniform noise grid (``cells`` per side) is upsampled bicubically; its top ``coverage`` fraction over
    the mask's pixels, with a soft edge, is the opacity, blended towards a soft-tissue grey (a percentile of the
    pixels outside the mask) with strength drawn from ``strength``.

    Args:
        coverage: range of the fraction of the lung field covered.
        strength: range of the blend weight at the opacity's core (1 = the soft-tissue grey).
        cells: noise grid per side; fewer cells make larger, rounder patches.
        tissue_percentile: percentile of the outside-mask pixels taken as the opacity's grey.
    """

    def __init__(
        self,
        image_key: str = "image",
        mask_key: str = "mask",
        prob: float = 0.3,
        coverage: tuple[float, float] = (0.15, 0.7),
        strength: tuple[float, float] = (0.4, 0.9),
        cells: int = 6,
        tissue_percentile: float = 75.0,
    ) -> None:
        MapTransform.__init__(self, [image_key, mask_key], allow_missing_keys=True)
        RandomizableTransform.__init__(self, prob)
        self.image_key, self.mask_key = image_key, mask_key
        self.coverage, self.strength, self.cells, self.tissue_percentile = coverage, strength, cells, tissue_percentile

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(None)
        if not self._do_transform or self.image_key not in d or self.mask_key not in d:
            return d
        mask = _as_tensor(d[self.mask_key])[0] > 0.5
        if not mask.any():
            return d
        image = d[self.image_key]
        out = self.apply(_as_tensor(image)[0], mask)
        d[self.image_key] = _replace(image, out.clamp(0.0, 1.0)[None])
        return d

    def apply(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The (W, H) ``image`` with an opacity inside the boolean ``mask``."""
        field = torch.as_tensor(self.R.random_sample((self.cells, self.cells)), dtype=torch.float32)
        field = F.interpolate(field[None, None], size=image.shape, mode="bicubic", align_corners=False)[0, 0]
        inside = field[mask]
        threshold = torch.quantile(inside, 1.0 - self.R.uniform(*self.coverage))
        edge = 0.15 * (inside.max() - inside.min()).clamp_min(1e-6)
        weight = ((field - threshold) / edge).clamp(0.0, 1.0) * mask
        outside = image[~mask]
        grey = torch.quantile(outside, self.tissue_percentile / 100.0) if outside.numel() else image.max()
        alpha = self.R.uniform(*self.strength)
        return image + alpha * weight * (grey - image)
