"""Per-file reading for folder inference: a file that cannot be read becomes a failure record, never an exception.

Each file is loaded and checked in :class:`InferenceDataset` (so in the data-loader workers, one file at a time);
:func:`inference_collate` stacks the good samples and passes the failures through, so one bad file cannot take the
others of its batch down.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from monai.data import Dataset
from monai.transforms import apply_transform
from monai.utils import convert_to_tensor

from .inputs import InputFile
from .readers import ImageReadError


def failure_message(err: BaseException) -> str:
    """The most telling message of ``err``: the innermost :class:`ImageReadError` it wraps (MONAI wraps
    transform errors in RuntimeErrors, the loaders add the datalist entry), else the innermost cause."""
    chain = [err]
    while chain[-1].__cause__ is not None and len(chain) < 20:
        chain.append(chain[-1].__cause__)
    for item in reversed(chain):
        if isinstance(item, ImageReadError):
            return str(item)
    root = chain[-1]
    return f"{type(root).__name__}: {root}"


class InferenceDataset(Dataset):
    """The :class:`InputFile` s of a run, each read with ``transform`` on its own.

    A sample is ``{"image": (1, W, H) float tensor at the network size, "source": path, "name": output name,
    "original_size": (W, H)}``; a file that fails is ``{"source", "name", "error": message}`` instead.
    """

    def __init__(self, inputs: Sequence[InputFile], transform: Callable[[dict[str, Any]], dict[str, Any]]) -> None:
        super().__init__(data=list(inputs), transform=transform)

    def _transform(self, index: int) -> dict[str, Any]:
        item: InputFile = self.data[index]
        base = {"source": str(item.path), "name": item.name}
        try:
            loaded = apply_transform(self.transform, {"image": str(item.path)})
            image = loaded["image"]
            original = tuple(int(s) for s in image.meta["spatial_shape"])
            return {**base, "image": convert_to_tensor(image, dtype=torch.float32, track_meta=False), "original_size": original}
        except Exception as err:  # every failure is reported with its file, the run goes on
            return {**base, "error": failure_message(err)}


def inference_collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """``image`` (B, 1, W, H) of the good samples (None when there is none) with their ``source``, ``name`` and
    ``original_size`` lists, and ``failed``: the failure records (a sample whose network-size image differs from
    the batch's first is one too, rather than a stacking error for all)."""
    good = [s for s in samples if "error" not in s]
    failed = [s for s in samples if "error" in s]
    if good:
        shape = good[0]["image"].shape
        failed += [
            {"source": s["source"], "name": s["name"], "error": f"image of shape {tuple(s['image'].shape)} after "
             f"preprocessing, expected {tuple(shape)} like the rest of its batch"}
            for s in good if s["image"].shape != shape
        ]
        good = [s for s in good if s["image"].shape == shape]
    return {
        "image": torch.stack([s["image"] for s in good]) if good else None,
        "source": [s["source"] for s in good],
        "name": [s["name"] for s in good],
        "original_size": [s["original_size"] for s in good],
        "failed": failed,
    }
