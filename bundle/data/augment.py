"""Spatial augmentation that moves image, mask and boxes together."""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.data.box_utils import clip_boxes_to_image
from monai.transforms import MapTransform, RandAffine, RandomizableTransform


class RandAffineBoxd(RandomizableTransform, MapTransform):
    """Small random affine (rotation, scale, translation) of ``image`` and ``mask`` with matching ``boxes``.

    The image is resampled bilinearly and the mask by nearest neighbour with the same matrix (zero padding);
    each box becomes the bounding box of its four transformed corners, clipped to the image. Boxes left with
    no area are dropped with their labels.

    Args:
        rotate_degrees: rotation drawn from [-r, r] degrees.
        scale: isotropic-per-axis scale offsets drawn from [-s, s] (0.05 = up to 5 %).
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
        self.affine = RandAffine(
            prob=1.0,
            rotate_range=np.deg2rad(rotate_degrees),
            scale_range=(scale, scale),
            translate_range=(translate, translate),
            padding_mode="zeros",
        )

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandAffineBoxd:
        super().set_random_state(seed, state)
        self.affine.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:
        super().randomize(None)
        if self._do_transform:
            self.affine.randomize()

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        self.randomize()
        if not self._do_transform:
            return d
        for key in self.image_keys:
            if key in d:
                mode = "nearest" if key == "mask" else "bilinear"
                d[key] = self.affine(d[key], mode=mode, randomize=False)
        if self.box_key in d and len(d[self.box_key]):
            matrix = torch.as_tensor(self.affine.rand_affine_grid.get_transformation_matrix(), dtype=torch.float32)
            spatial = tuple(int(s) for s in d[self.image_keys[0]].shape[1:])
            boxes, keep = clip_boxes_to_image(transform_boxes(d[self.box_key], matrix, spatial), spatial)
            d[self.box_key] = boxes
            if self.label_key in d:
                d[self.label_key] = torch.as_tensor(d[self.label_key])[keep]
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
