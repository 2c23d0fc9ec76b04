"""Batching of multi-task samples: fixed-size tensors are stacked, per-image box sets stay lists."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from monai.data import list_data_collate

from .views import SECOND_VIEW_KEY, STRONG_KEY

#: Keys whose per-sample tensors differ in length (boxes per image).
LIST_KEYS: tuple[str, ...] = ("boxes", "box_labels")
#: Keys of the sample format that are batched (with the augmented views of :mod:`bundle.data.views`); others
#: (strings, ids) are kept as lists.
TENSOR_KEYS: tuple[str, ...] = ("image", "mask", "cls", "cls_known", "saliency", "fixation_map", STRONG_KEY, SECOND_VIEW_KEY)
FLAG_KEYS: tuple[str, ...] = ("has_cls", "has_det", "has_seg", "has_sal", "has_fix")


def multitask_collate(samples: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Collate samples of the format of :mod:`bundle.data.transforms` (or images and their views alone: inference,
    unlabelled batches)."""
    first = samples[0]
    stacked = [k for k in TENSOR_KEYS if k in first]
    batch: dict[str, Any] = dict(list_data_collate([{k: s[k] for k in stacked} for s in samples]))
    for key in FLAG_KEYS:
        if key in first:
            batch[key] = torch.tensor([bool(s[key]) for s in samples])
    for key in LIST_KEYS:
        if key in first:
            batch[key] = [torch.as_tensor(s[key]) for s in samples]
    batch["patient_id"] = [str(s.get("patient_id", "")) for s in samples]
    return batch
