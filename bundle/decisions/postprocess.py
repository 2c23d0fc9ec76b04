"""Mask and box post-processing, declared by parameters and computed with NumPy / SciPy only, so that every
runtime gets the same mask and boxes from the same probabilities.

Arrays follow the project's convention: a probability map or mask is (W, H), indexed ``[x, y]`` (x = column);
a box is ``[x1, y1, x2, y2]`` in continuous pixel coordinates (pixel ``i`` covers ``[i, i + 1)``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from scipy import ndimage

from .serial import from_fields

#: 8-connectivity of mask components (the background's holes are then 4-connected).
EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


@dataclass(frozen=True)
class MaskPostprocessing:
    """How a thresholded mask is cleaned, in this order: fill holes, cut thin necks, drop components smaller than
    the minimum area, keep the ``keep_largest`` largest components.

    Attributes:
        fill_holes: fill background regions not connected to the image border.
        neck_fraction: cut necks narrower than twice this fraction of the map's shorter side: components are
            found on the mask opened by a disk of that radius, and only the mask's pixels within the radius of the
            kept components stay. A region joined to a lung only through a thin bridge (gastric gas under the
            left hemidiaphragm) becomes its own component and goes with ``keep_largest``; 0 turns it off.
        min_area_pixels: minimum component area in pixels of the map being processed.
        min_area_fraction: minimum component area as a fraction of the map's pixels (size-independent, so the
            same at the model's input size and at the original size); the larger of the two minima applies.
        keep_largest: keep only this many largest components (2 for the lungs); None keeps all.
    """

    fill_holes: bool = False
    neck_fraction: float = 0.0
    min_area_pixels: int = 0
    min_area_fraction: float = 0.0
    keep_largest: int | None = None

    def __post_init__(self) -> None:
        if self.min_area_pixels < 0 or not 0.0 <= self.min_area_fraction < 1.0:
            raise ValueError("mask min_area_pixels must be >= 0 and min_area_fraction in [0, 1)")
        if not 0.0 <= self.neck_fraction < 0.5:
            raise ValueError(f"mask neck_fraction must be in [0, 0.5), got {self.neck_fraction}")
        if self.keep_largest is not None and self.keep_largest < 1:
            raise ValueError(f"mask keep_largest must be None or >= 1, got {self.keep_largest}")

    def min_area(self, shape: Sequence[int]) -> int:
        """Minimum component area in pixels for a map of ``shape``."""
        return max(int(self.min_area_pixels), math.ceil(self.min_area_fraction * math.prod(shape) - 1e-9))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "mask post-processing") -> MaskPostprocessing:
        return from_fields(cls, data, where)


@dataclass(frozen=True)
class BoxPostprocessing:
    """Box selection after the score threshold: per-label non-maximum suppression and a cap on the count.

    Attributes:
        nms_iou: a box overlapping a higher-scored box of the same label by more than this IoU is dropped.
        max_boxes: at most this many boxes per image, highest scores first.
    """

    nms_iou: float = 0.3
    max_boxes: int = 20

    def __post_init__(self) -> None:
        if not 0.0 <= self.nms_iou <= 1.0 or self.max_boxes < 0:
            raise ValueError("box nms_iou must be in [0, 1] and max_boxes >= 0")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], where: str = "box post-processing") -> BoxPostprocessing:
        return from_fields(cls, data, where)


def _resize_matrix(size_in: int, size_out: int) -> np.ndarray:
    """(size_out, size_in) linear interpolation weights, half-pixel centres, edges clamped."""
    scale = size_in / size_out
    source = np.maximum((np.arange(size_out) + 0.5) * scale - 0.5, 0.0)
    low = np.minimum(np.floor(source).astype(int), size_in - 1)
    high = np.minimum(low + 1, size_in - 1)
    frac = source - low
    weights = np.zeros((size_out, size_in))
    rows = np.arange(size_out)
    np.add.at(weights, (rows, low), 1.0 - frac)
    np.add.at(weights, (rows, high), frac)
    return weights


def resize_bilinear(prob: np.ndarray, size: Sequence[int]) -> np.ndarray:
    """Bilinear resize of a (W, H) map to ``size`` (float64), with the sampling of
    ``torch.nn.functional.interpolate(mode="bilinear", align_corners=False)``."""
    prob = np.asarray(prob, dtype=np.float64)
    if prob.ndim != 2 or len(size) != 2:
        raise ValueError(f"resize_bilinear expects a (W, H) map and a (W, H) size, got {prob.shape} and {size}")
    if tuple(prob.shape) == tuple(size):
        return prob.copy()
    return _resize_matrix(prob.shape[0], int(size[0])) @ prob @ _resize_matrix(prob.shape[1], int(size[1])).T


def postprocess_mask(
    prob: np.ndarray, threshold: float, params: MaskPostprocessing = MaskPostprocessing()
) -> np.ndarray:
    """Boolean mask of a (W, H) probability map: ``prob > threshold``, then ``params`` (8-connected components)."""
    mask = np.asarray(prob) > threshold
    if mask.ndim != 2:
        raise ValueError(f"postprocess_mask expects one (W, H) map, got shape {mask.shape}")
    if params.fill_holes and mask.any():
        mask = ndimage.binary_fill_holes(mask)
    radius = params.neck_fraction * min(mask.shape)
    if radius >= 1.0 and mask.any():
        core = ndimage.distance_transform_edt(mask) > radius  # erosion by a disk of ``radius``
        if core.any():  # a mask thinner than the neck everywhere is left to the component rules alone
            kept = _components(ndimage.distance_transform_edt(~core) <= radius, params)  # ... then dilation
            return mask & (ndimage.distance_transform_edt(~kept) <= radius)
    return _components(mask, params)


def _components(mask: np.ndarray, params: MaskPostprocessing) -> np.ndarray:
    """``mask`` without components below the minimum area, and with only the ``keep_largest`` largest."""
    min_area = params.min_area(mask.shape)
    if (min_area <= 1 and params.keep_largest is None) or not mask.any():
        return mask
    components, count = ndimage.label(mask, structure=EIGHT_CONNECTED)
    areas = np.bincount(components.ravel(), minlength=count + 1)
    keep = areas >= min_area
    keep[0] = False
    if params.keep_largest is not None:
        ranked = [c for c in np.argsort(-areas[1:], kind="stable") + 1 if keep[c]]  # ties: first labelled first
        keep[:] = False
        keep[ranked[: params.keep_largest]] = True
    return keep[components]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU (len(a), len(b)) of ``[x1, y1, x2, y2]`` boxes (area = width * height; 0 for empty unions)."""
    a, b = np.asarray(a, dtype=np.float64).reshape(-1, 4), np.asarray(b, dtype=np.float64).reshape(-1, 4)
    lo = np.maximum(a[:, None, :2], b[None, :, :2])
    hi = np.minimum(a[:, None, 2:], b[None, :, 2:])
    inter = np.clip(hi - lo, 0, None).prod(-1)
    union = (a[:, 2:] - a[:, :2]).prod(-1)[:, None] + (b[:, 2:] - b[:, :2]).prod(-1)[None, :] - inter
    return np.divide(inter, union, out=np.zeros_like(inter), where=union > 0)


def nms(boxes: np.ndarray, scores: np.ndarray, iou_threshold: float) -> np.ndarray:
    """Indices kept by greedy non-maximum suppression, highest score first (ties: lower index first)."""
    order = np.argsort(-np.asarray(scores, dtype=np.float64), kind="stable")
    iou = box_iou(boxes, boxes)
    suppressed = np.zeros(len(order), dtype=bool)
    kept = []
    for i in order:
        if suppressed[i]:
            continue
        kept.append(i)
        suppressed |= iou[i] > iou_threshold
    return np.asarray(kept, dtype=int)


def postprocess_boxes(
    boxes: np.ndarray,
    scores: np.ndarray,
    labels: np.ndarray,
    score_threshold: float,
    params: BoxPostprocessing = BoxPostprocessing(),
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boxes (k, 4), scores (k,) and labels (k,) whose score reaches ``score_threshold``, after per-label NMS,
    the ``max_boxes`` highest scored, in decreasing score order."""
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    labels = np.asarray(labels).reshape(-1).astype(np.int64)
    if not len(boxes) == len(scores) == len(labels):
        raise ValueError(f"{len(boxes)} boxes, {len(scores)} scores and {len(labels)} labels: they must match")
    passing = np.flatnonzero(scores >= score_threshold)
    kept = []
    for label in np.unique(labels[passing]):
        same = passing[labels[passing] == label]
        kept.append(same[nms(boxes[same], scores[same], params.nms_iou)])
    index = np.concatenate(kept) if kept else np.zeros(0, dtype=int)
    index = index[np.lexsort((index, -scores[index]))][: params.max_boxes]
    return boxes[index], scores[index], labels[index]


def scale_boxes(boxes: np.ndarray, from_size: Sequence[int], to_size: Sequence[int]) -> np.ndarray:
    """``[x1, y1, x2, y2]`` boxes of a (W, H) = ``from_size`` image in the pixels of a ``to_size`` image."""
    sx, sy = (float(t) / float(f) for f, t in zip(from_size, to_size))
    return np.asarray(boxes, dtype=np.float64).reshape(-1, 4) * np.array([sx, sy, sx, sy])
