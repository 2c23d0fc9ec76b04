"""Dictionary transforms that turn a datalist entry into the multi-task sample format.

Sample format (after :class:`PrepareTargetsd`), the contract between data, losses and metrics:

- ``image``: (1, W, H) float image (MONAI's reader layout: array axis 0 is the image x axis);
- ``cls`` (C,) float 0/1 and ``cls_known`` (C,) bool; ``has_cls``: whether the entry grades findings;
- ``boxes`` (N, 4) float xyxy in pixels and ``box_labels`` (N,) int64; ``has_det``: whether boxes are annotated
  (an annotated image without boxes is a negative);
- ``mask`` (1, W, H) float 0/1; ``has_seg``: whether a mask is annotated.

A label kind an entry does not carry gets zeros and a False presence flag, so datasets with different labels
can share a batch and each loss uses only the samples that carry its labels.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.data import MetaTensor
from monai.transforms import MapTransform

from .gaze import load_fixation_map, load_saliency_map
from .labels import UNKNOWN_LABEL


class LabelError(ValueError):
    """A label in a datalist entry is malformed; the message names the image and the field."""


def _entry_name(data: Mapping[Hashable, Any]) -> str:
    image = data.get("image")
    meta = getattr(image, "meta", None)
    return str(meta.get("filename_or_obj")) if meta else str(image)


class PrepareTargetsd(MapTransform):
    """Validate an entry's labels and write the multi-task targets and presence flags.

    Args:
        num_classes: length of the ``cls`` vector.
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__(keys=["image"])
        self.num_classes = num_classes

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        name = _entry_name(d)
        image = d["image"]
        spatial = tuple(int(s) for s in image.shape[1:])
        d["has_cls"], d["cls"], d["cls_known"] = self._classes(d.get("cls"), name)
        d["has_det"], d["boxes"], d["box_labels"] = self._boxes(d.get("boxes"), d.get("box_labels"), spatial, name)
        d["has_seg"], d["mask"] = self._mask(d.get("mask"), spatial, name)
        return d

    def problems(self, data: Mapping[Hashable, Any]) -> list[str]:
        """Every label problem of a loaded entry (cls, boxes, mask), instead of raising at the first."""
        name = _entry_name(data)
        spatial = tuple(int(s) for s in data["image"].shape[1:])
        checks = (
            lambda: self._classes(data.get("cls"), name),
            lambda: self._boxes(data.get("boxes"), data.get("box_labels"), spatial, name),
            lambda: self._mask(data.get("mask"), spatial, name),
        )
        found = []
        for check in checks:
            try:
                check()
            except LabelError as err:
                found.append(str(err))
        return found

    def _classes(self, raw: Any, name: str) -> tuple[bool, torch.Tensor, torch.Tensor]:
        if raw is None:
            return False, torch.zeros(self.num_classes), torch.zeros(self.num_classes, dtype=torch.bool)
        try:
            values = np.asarray(raw, dtype=np.float64)
        except (TypeError, ValueError):
            raise LabelError(f"{name}: 'cls' must be a list of numbers, got {raw!r}") from None
        if values.shape != (self.num_classes,):
            raise LabelError(f"{name}: 'cls' must have {self.num_classes} values, got shape {values.shape}")
        if np.isnan(values).any():
            raise LabelError(f"{name}: 'cls' has NaN at positions {np.flatnonzero(np.isnan(values)).tolist()}")
        bad = ~np.isin(values, (0, 1, UNKNOWN_LABEL))
        if bad.any():
            raise LabelError(f"{name}: 'cls' values must be 0, 1 or {UNKNOWN_LABEL}, got {values[bad].tolist()}")
        known = values != UNKNOWN_LABEL
        return True, torch.as_tensor(np.where(known, values, 0.0), dtype=torch.float32), torch.as_tensor(known)

    @staticmethod
    def _boxes(raw: Any, labels: Any, spatial: tuple[int, ...], name: str) -> tuple[bool, torch.Tensor, torch.Tensor]:
        if raw is None:
            return False, torch.zeros((0, 4)), torch.zeros(0, dtype=torch.int64)
        try:
            boxes = np.asarray(raw, dtype=np.float64) if len(raw) else np.zeros((0, 4))
            labels = np.zeros(len(boxes), dtype=np.int64) if labels is None else np.asarray(labels, dtype=np.int64)
        except (TypeError, ValueError):
            boxes = np.zeros(0)
        if boxes.ndim != 2 or boxes.shape[1] != 4:
            raise LabelError(f"{name}: 'boxes' must be [[x1, y1, x2, y2], ...] with integer 'box_labels', got {raw!r}")
        if labels.shape != (len(boxes),):
            raise LabelError(f"{name}: {len(boxes)} boxes but {labels.size} box_labels")
        if not np.isfinite(boxes).all():
            raise LabelError(f"{name}: 'boxes' has NaN or infinite coordinates")
        for i, (x1, y1, x2, y2) in enumerate(boxes):
            if not (0 <= x1 < x2 <= spatial[0] and 0 <= y1 < y2 <= spatial[1]):
                raise LabelError(
                    f"{name}: box {i} [{x1:g}, {y1:g}, {x2:g}, {y2:g}] is empty or outside the {spatial[0]}x{spatial[1]} image"
                )
        return True, torch.as_tensor(boxes, dtype=torch.float32), torch.as_tensor(labels)

    @staticmethod
    def _mask(raw: Any, spatial: tuple[int, ...], name: str) -> tuple[bool, torch.Tensor]:
        if raw is None:
            return False, torch.zeros((1, *spatial))
        mask = raw.as_tensor() if isinstance(raw, MetaTensor) else torch.as_tensor(raw)  # plain, like a missing mask
        if mask.ndim == 3 and mask.shape[0] > 1:
            mask = mask[:1]
        if tuple(mask.shape[-2:]) != spatial:
            raise LabelError(f"{name}: mask size {tuple(mask.shape[-2:])} differs from image size {spatial}")
        return True, (mask.reshape(1, *spatial) > 0).float()


class ResizeTargetsd(MapTransform):
    """Resize ``image`` (area/bilinear) and ``mask`` (nearest) to ``spatial_size`` and scale ``boxes`` to match."""

    def __init__(self, spatial_size: Sequence[int]) -> None:
        super().__init__(keys=["image", "mask", "boxes"])
        self.spatial_size = check_spatial_size(spatial_size)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        image = d["image"]
        old = tuple(int(s) for s in image.shape[1:])
        if old == self.spatial_size:
            return d
        d["image"] = resize_image(image, self.spatial_size)
        d["mask"] = F.interpolate(d["mask"][None], self.spatial_size, mode="nearest")[0]
        scale = torch.tensor([n / o for n, o in zip(self.spatial_size, old)] * 2, dtype=torch.float32)
        d["boxes"] = d["boxes"] * scale
        return d


class LoadSaliencyd(MapTransform):
    """Read an entry's ``saliency`` map (a gaze map or any heat map, PNG or ``.npy``,
    :func:`bundle.data.gaze.load_saliency_map`) at the size of its (already resized) image, as a (1, W, H)
    distribution summing to 1, and flag it in ``has_sal``. An entry without one gets zeros and
    ``has_sal`` False: no saliency label, like the other partial labels. Put after :class:`ResizeTargetsd`.

    With ``fixations`` (for evaluation: the location metrics NSS and AUC-Judd) the entry's ``fixations`` file
    (x, y in the original image's pixels, :func:`bundle.data.gaze.load_fixation_map`) also becomes
    ``fixation_map`` (1, W, H) 0/1 at the image's size, flagged in ``has_fix``. Not for training: augmentation
    does not move it.
    """

    def __init__(self, fixations: bool = False) -> None:
        super().__init__(keys=["saliency"], allow_missing_keys=True)
        self.fixations = fixations

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        size = tuple(int(s) for s in d["image"].shape[1:])
        source = d.get("saliency")
        d["has_sal"] = source is not None
        if source is None:
            d["saliency"] = torch.zeros((1, *size))
        elif _is_path(source):
            d["saliency"] = torch.as_tensor(load_saliency_map(source, size), dtype=torch.float32)[None]
        else:
            raise LabelError(f"{_entry_name(d)}: 'saliency' must be a path to a PNG or .npy map, got {type(source)}")
        if self.fixations:
            self._fixations(d, size)
        return d

    @staticmethod
    def _fixations(d: dict[Hashable, Any], size: tuple[int, ...]) -> None:
        source = d.get("fixations")
        d["has_fix"] = source is not None
        if source is None:
            d["fixation_map"] = torch.zeros((1, *size))
            return
        if not _is_path(source):
            raise LabelError(f"{_entry_name(d)}: 'fixations' must be a path to a .npy file, got {type(source)}")
        meta = getattr(d["image"], "meta", None) or {}
        if "spatial_shape" not in meta:
            raise LabelError(f"{_entry_name(d)}: the image's original size (meta 'spatial_shape') is unknown, so its "
                             "fixations cannot be placed; load it with LoadCXRd")
        original = tuple(int(s) for s in meta["spatial_shape"])
        fixated = load_fixation_map(source, original, size)
        d["fixation_map"] = torch.as_tensor(fixated, dtype=torch.float32)[None]


def _is_path(value: Any) -> bool:
    return isinstance(value, (str, bytes)) or hasattr(value, "__fspath__")


def resize_image(image: Any, spatial_size: tuple[int, ...]) -> torch.Tensor:
    """A (C, W, H) image resized to ``spatial_size``: area averaging when shrinking, bilinear otherwise."""
    old = tuple(int(s) for s in image.shape[1:])
    mode = "area" if all(o >= n for o, n in zip(old, spatial_size)) else "bilinear"
    kwargs = {} if mode == "area" else {"align_corners": False}
    return F.interpolate(torch.as_tensor(image)[None].float(), spatial_size, mode=mode, **kwargs)[0]


class ResizeImaged(MapTransform):
    """Resize ``image`` alone (an unlabelled sample) as :class:`ResizeTargetsd` does."""

    def __init__(self, spatial_size: Sequence[int]) -> None:
        super().__init__(keys=["image"])
        self.spatial_size = check_spatial_size(spatial_size)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if tuple(int(s) for s in d["image"].shape[1:]) != self.spatial_size:
            d["image"] = resize_image(d["image"], self.spatial_size)
        return d


def check_spatial_size(spatial_size: Sequence[int], multiple: int = 32) -> tuple[int, ...]:
    """Return ``spatial_size`` as ints if every side is a positive multiple of ``multiple``."""
    size = tuple(int(s) for s in spatial_size)
    if not size or any(s <= 0 or s % multiple for s in size):
        raise ValueError(f"spatial size must be positive multiples of {multiple}, got {spatial_size}")
    return size
