"""Spatial augmentation that moves image, mask and boxes together."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.apps.detection.transforms.box_ops import flip_boxes
from monai.data import MetaTensor
from monai.data.box_utils import clip_boxes_to_image
from monai.transforms import MapTransform, RandomizableTransform
from monai.utils import convert_to_dst_type


def affine_matrix(angle: float, scale: Sequence[float], shift: Sequence[float]) -> torch.Tensor:
    """3x3 map from output to input pixel coordinates, both centred on the image centre (as MONAI's ``Affine``):
    ``input = rotate(angle) @ diag(scale) @ output + shift``, per spatial axis (d0, d1)."""
    c, s = float(np.cos(angle)), float(np.sin(angle))
    (s0, s1), (t0, t1) = scale, shift
    return torch.tensor([[c * s0, -s * s1, t0], [s * s0, c * s1, t1], [0.0, 0.0, 1.0]], dtype=torch.float32)


def sampling_grid(matrix: torch.Tensor, spatial: Sequence[int]) -> torch.Tensor:
    """``grid_sample`` grid (1, d0, d1, 2) of the input positions that :func:`affine_matrix` ``matrix`` gives every
    output pixel centre of a (d0, d1) image."""
    half = torch.tensor(tuple(spatial), dtype=torch.float32) / 2
    normalised = matrix[:2, :2] * half[None, :] / half[:, None]  # align_corners=False: coordinate / half size
    theta = torch.cat([normalised, (matrix[:2, 2] / half)[:, None]], 1)
    theta = theta[[1, 0]][:, [1, 0, 2]]  # grid_sample's x is the last axis (d1)
    return F.affine_grid(theta[None], [1, 1, *spatial], align_corners=False)


def resample(image: torch.Tensor, grid: torch.Tensor, mode: str) -> torch.Tensor:
    """A (C, d0, d1) image sampled on ``grid`` (:func:`sampling_grid`), zeros outside; ``mode`` "bilinear" or
    "nearest". Keeps the input's type (MetaTensor or tensor) and dtype."""
    data = image.as_tensor() if isinstance(image, MetaTensor) else torch.as_tensor(image)
    out = F.grid_sample(data[None].float(), grid, mode=mode, padding_mode="zeros", align_corners=False)[0]
    return convert_to_dst_type(out.to(data.dtype), image)[0]


class RandAffineBoxd(RandomizableTransform, MapTransform):
    """Small random affine (rotation, scale, translation) of ``image`` and ``mask`` with matching ``boxes``.

    One matrix and one sampling grid per sample move every image key present (of the first one's size): bilinear
    resampling (``mask``: nearest neighbour), zero padding. Each box becomes the bounding box of its four
    transformed corners, clipped to the image; boxes left with no area are dropped with their labels.

    Args:
        rotate_degrees: rotation drawn from [-r, r] degrees.
        scale: per-axis scale offsets drawn from [-s, s] (0.05 = up to 5 %).
        translate: shift drawn from [-t, t] pixels per axis.
        prob: probability of applying the transform.
    """

    def __init__(
        self,
        image_keys: Sequence[str] = ("image", "mask"),
        box_key: str = "boxes",
        label_key: str = "box_labels",
        rotate_degrees: float = 5.0,
        scale: float = 0.05,
        translate: float = 4.0,
        prob: float = 0.5,
    ) -> None:
        MapTransform.__init__(self, [*image_keys, box_key], allow_missing_keys=True)
        RandomizableTransform.__init__(self, prob)
        self.image_keys, self.box_key, self.label_key = tuple(image_keys), box_key, label_key
        self.rotate, self.scale, self.translate = float(np.deg2rad(rotate_degrees)), float(scale), float(translate)
        self.matrix = torch.eye(3)

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        if self._do_transform:
            angle = self.R.uniform(-self.rotate, self.rotate)
            scale = 1.0 + self.R.uniform(-self.scale, self.scale, size=2)
            self.matrix = affine_matrix(angle, scale, self.R.uniform(-self.translate, self.translate, size=2))

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        self.randomize()
        return self.apply(data, self.matrix) if self._do_transform else dict(data)

    def apply(self, data: Mapping[Hashable, Any], matrix: torch.Tensor) -> dict[Hashable, Any]:
        """``data`` with every image key resampled at ``matrix`` and its boxes moved to match."""
        d = dict(data)
        present = [key for key in self.image_keys if key in d]
        if not present:
            return d
        spatial = tuple(int(s) for s in d[present[0]].shape[1:])
        grid = sampling_grid(matrix, spatial)
        for key in present:
            d[key] = resample(d[key], grid, "nearest" if key == "mask" else "bilinear")
        if self.box_key in d and len(d[self.box_key]):
            boxes, keep = clip_boxes_to_image(transform_boxes(d[self.box_key], matrix, spatial), spatial)
            d[self.box_key] = boxes
            if self.label_key in d:
                d[self.label_key] = torch.as_tensor(d[self.label_key])[keep]
        return d


class RandMirrorBoxd(RandomizableTransform, MapTransform):
    """Random mirror of the image keys along one spatial axis (0 = x, a left-right flip), boxes mirrored to match
    (MONAI's ``flip_boxes``)."""

    def __init__(
        self, image_keys: Sequence[str] = ("image", "mask"), box_key: str = "boxes", spatial_axis: int = 0,
        prob: float = 0.5,
    ) -> None:
        MapTransform.__init__(self, [*image_keys, box_key], allow_missing_keys=True)
        RandomizableTransform.__init__(self, prob)
        self.image_keys, self.box_key, self.axis = tuple(image_keys), box_key, int(spatial_axis)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize(None)
        present = [key for key in self.image_keys if key in d]
        if not self._do_transform or not present:
            return d
        for key in present:
            d[key] = torch.flip(d[key], [self.axis + 1])
        if self.box_key in d:
            spatial = tuple(int(s) for s in d[present[0]].shape[1:])
            d[self.box_key] = flip_boxes(torch.as_tensor(d[self.box_key], dtype=torch.float32), spatial, self.axis)
        return d


def transform_boxes(boxes: torch.Tensor, matrix: torch.Tensor, spatial: tuple[int, int]) -> torch.Tensor:
    """Boxes under the resampling ``matrix`` (output grid to input, centred coordinates, as MONAI's RandAffine).

    Box coordinates have pixel ``i`` spanning [i, i + 1], so the centred coordinate of ``x`` is ``x - size / 2``.
    """
    boxes = torch.as_tensor(boxes, dtype=torch.float32)
    centre = torch.tensor(spatial, dtype=torch.float32) / 2
    x1, y1, x2, y2 = boxes.unbind(-1)
    corners = torch.stack([torch.stack(c, -1) for c in ((x1, y1), (x1, y2), (x2, y1), (x2, y2))], 1)  # (N, 4, 2)
    homogeneous = torch.cat([corners - centre, torch.ones(*corners.shape[:2], 1)], -1)
    moved = (homogeneous @ torch.linalg.inv(matrix).T)[..., :2] + centre
    return torch.cat([moved.amin(1), moved.amax(1)], -1)
