"""Mask-aware intensity augmentation for lung fields: synthetic opacities inside, synthetic gas below.

Lung-field masks include consolidated lung, and the commonest lung-segmentation failures on COVID-19 radiographs
are (1) a whitened lung left out of the mask and (2) a mask running into the dark gastric air bubble under the left
hemidiaphragm. With a few dozen training masks the model sees few of either, so these transforms make them:
``RandLungOpacityd`` whitens smooth random patches *inside* the mask (the mask is unchanged: it is still lung),
``RandSubdiaphragmGasd`` darkens ellipses just *below* the mask (still not lung). Both act on (1, W, H) images in
[0, 1] (the readers' layout: axis 1 runs left to right, axis 2 top to bottom) and leave samples without a mask alone.
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


class _MaskGuided(RandomizableTransform, MapTransform):
    """Shared key handling: acts when both ``image`` and a non-empty ``mask`` are present."""

    def __init__(self, image_key: str, mask_key: str, prob: float) -> None:
        MapTransform.__init__(self, [image_key, mask_key], allow_missing_keys=True)
        RandomizableTransform.__init__(self, prob)
        self.image_key, self.mask_key = image_key, mask_key

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
        raise NotImplementedError


def _replace(original: Any, values: torch.Tensor) -> Any:
    """``values`` in the container type of ``original`` (a MetaTensor keeps its metadata)."""
    if isinstance(original, torch.Tensor):
        out = original.clone()
        out.copy_(values.to(original.dtype))
        return out
    return values.numpy().astype(np.asarray(original).dtype)


class RandLungOpacityd(_MaskGuided):
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
        super().__init__(image_key, mask_key, prob)
        self.coverage, self.strength, self.cells, self.tissue_percentile = coverage, strength, cells, tissue_percentile

    def apply(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
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


class RandSubdiaphragmGasd(_MaskGuided):
    """Darken an ellipse just below a lung's lowest point towards the lung field's dark level (synthetic gas).

    One lung (the mask's left or right half, by column) is drawn; an ellipse of ``size`` (fraction of the image
    side) is centred under its lowest rows, moved down until it does not touch the mask, cut flat at a random level
    of its lower half (an air-fluid level) and blended towards a low percentile of the lung pixels with strength
    drawn from ``strength``.

    Args:
        size: range of the ellipse's semi-axes, as fractions of the image side.
        strength: range of the blend weight at the ellipse's centre.
        lung_percentile: percentile of the lung pixels taken as the gas grey.
    """

    def __init__(
        self,
        image_key: str = "image",
        mask_key: str = "mask",
        prob: float = 0.3,
        size: tuple[float, float] = (0.04, 0.1),
        strength: tuple[float, float] = (0.5, 1.0),
        lung_percentile: float = 20.0,
    ) -> None:
        super().__init__(image_key, mask_key, prob)
        self.size, self.strength, self.lung_percentile = size, strength, lung_percentile

    def apply(self, image: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        width, height = image.shape
        columns = torch.nonzero(mask.any(dim=1)).flatten()
        middle = int(columns.float().mean())
        half = mask.clone()
        if self.R.random_sample() < 0.5:
            half[middle:] = False
        else:
            half[:middle] = False
        if not half.any():
            half = mask
        xs, ys = torch.nonzero(half, as_tuple=True)
        bottom = int(ys.max())
        low_x = xs[ys >= bottom - max(2, height // 20)].float()
        cx = float(low_x.mean()) + self.R.uniform(-1.0, 1.0) * float(low_x.std(unbiased=False) if low_x.numel() > 1 else 0)
        ax, ay = (self.R.uniform(*self.size) * s for s in (width, height))
        gx = torch.arange(width, dtype=torch.float32)[:, None]
        gy = torch.arange(height, dtype=torch.float32)[None, :]
        cy = bottom + ay
        for _ in range(8):
            radius = ((gx - cx) / ax) ** 2 + ((gy - cy) / ay) ** 2
            if not (mask & (radius <= 1.0)).any():
                break
            cy += 0.5 * ay
        else:
            return image
        level = cy + self.R.uniform(0.0, 1.0) * ay
        weight = (1.0 - radius).clamp(0.0, 1.0).sqrt() * (gy <= level)
        grey = torch.quantile(image[mask], self.lung_percentile / 100.0)
        alpha = self.R.uniform(*self.strength)
        return image + alpha * weight * (grey - image)
