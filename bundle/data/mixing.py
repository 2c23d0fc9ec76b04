"""Combining datasets with different labels: label restriction, alternating batches, boxes from masks."""

from __future__ import annotations

import itertools
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.transforms import MapTransform
from scipy import ndimage

#: The datalist keys of each label kind.
LABEL_KINDS: dict[str, tuple[str, ...]] = {"cls": ("cls",), "det": ("boxes", "box_labels"), "seg": ("mask",)}


def restrict_labels(entries: Sequence[dict[str, Any]], keep: Sequence[str]) -> list[dict[str, Any]]:
    """Copies of ``entries`` carrying only the label kinds in ``keep`` (``cls``, ``det``, ``seg``), as if they
    came from a dataset annotated for those tasks alone."""
    unknown = set(keep) - set(LABEL_KINDS)
    if unknown:
        raise ValueError(f"unknown label kinds {sorted(unknown)}; known: {sorted(LABEL_KINDS)}")
    dropped = [key for kind, keys in LABEL_KINDS.items() if kind not in keep for key in keys]
    return [{k: v for k, v in entry.items() if k not in dropped} for entry in entries]


class AlternatingLoader:
    """One batch from each loader in turn (MultiCheXNet's Algorithm 1: a detection batch, then a segmentation
    batch, ...). Shorter loaders restart, so a pass yields ``len(loaders) * max(len(loader))`` batches."""

    def __init__(self, loaders: Sequence[Iterable]) -> None:
        if not loaders:
            raise ValueError("AlternatingLoader needs at least one loader")
        self.loaders = list(loaders)

    def __len__(self) -> int:
        return len(self.loaders) * max(len(loader) for loader in self.loaders)  # type: ignore[arg-type]

    def __iter__(self) -> Iterator:
        longest = max(len(loader) for loader in self.loaders)  # type: ignore[arg-type]
        streams = [itertools.chain.from_iterable(itertools.repeat(loader)) for loader in self.loaders]
        for _ in range(longest):
            for stream in streams:
                yield next(stream)


class BoxesFromMaskd(MapTransform):
    """Derive ``boxes`` (one per connected component of ``mask``, xyxy pixels) and ``box_labels`` from the mask,
    for joint multi-task training where every sample carries all labels (MultiCheXNet, equation 8).

    Args:
        min_area: components with fewer pixels are ignored.
        label: box class given to every derived box.
    """

    def __init__(self, min_area: int = 4, label: int = 0) -> None:
        super().__init__(keys=["mask"])
        self.min_area = min_area
        self.label = label

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        if not d.get("has_seg", False):
            return d
        mask = np.asarray(d["mask"])[0] > 0
        components, count = ndimage.label(mask)
        boxes = []
        for index, found in enumerate(ndimage.find_objects(components), start=1):
            if found is not None and (components[found] == index).sum() >= self.min_area:
                boxes.append([found[0].start, found[1].start, found[0].stop, found[1].stop])
        d["boxes"] = torch.tensor(boxes, dtype=torch.float32).reshape(-1, 4)
        d["box_labels"] = torch.full((len(boxes),), self.label, dtype=torch.int64)
        d["has_det"] = True
        return d


def label_by_finding(entries: Sequence[dict[str, Any]], finding: str) -> list[dict[str, Any]]:
    """Copies of ``entries`` whose ``cls`` is one binary label: 1 when the entry's raw ``finding`` string (kept
    by the COVID-19 reader) names ``finding``, else 0. Used to transfer CheXCls to a new disease."""
    relabelled = []
    for index, entry in enumerate(entries):
        if "finding" not in entry:
            raise ValueError(f"entry {index} ({entry.get('image')}) has no 'finding' to label from")
        relabelled.append({**entry, "cls": [int(finding.lower() in str(entry["finding"]).lower())]})
    return relabelled
