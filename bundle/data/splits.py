"""Patient-level splits: every image of a patient lands in the same split."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

SPLITS: tuple[str, ...] = ("training", "validation", "testing")


def split_by_patient(
    entries: Sequence[dict[str, Any]], fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0
) -> dict[str, list[dict[str, Any]]]:
    """Split ``entries`` into training/validation/testing by ``patient_id`` with a seeded shuffle of patients.

    ``fractions`` (training, validation, testing) are of patients and must sum to 1; a fraction of 0 gives an
    empty split. Entry order within a split follows the input order.
    """
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != len(SPLITS) or min(fractions) < 0 or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be 3 non-negative numbers summing to 1, got {fractions}")
    patients = sorted({str(e["patient_id"]) for e in entries})
    order = np.random.default_rng(seed).permutation(len(patients))
    bounds = np.round(np.cumsum(fractions) * len(patients)).astype(int)
    split_of: dict[str, str] = {}
    for rank, index in enumerate(order):
        split_of[patients[index]] = SPLITS[int(np.searchsorted(bounds, rank, side="right"))]
    result: dict[str, list[dict[str, Any]]] = {name: [] for name in SPLITS}
    for entry in entries:
        result[split_of[str(entry["patient_id"])]].append(entry)
    return result


def split_with_test_list(
    entries: Sequence[dict[str, Any]], test_images: Iterable[str], val_fraction: float = 0.1, seed: int = 0
) -> dict[str, list[dict[str, Any]]]:
    """Official test set by image name (e.g. NIH ``test_list.txt``); the rest split by patient into train/val.

    Raises:
        ValueError: a patient has images both in the test list and outside it.
    """
    test_names = set(test_images)
    is_test = [Path(entry["image"]).name in test_names for entry in entries]
    test = [e for e, t in zip(entries, is_test) if t]
    rest = [e for e, t in zip(entries, is_test) if not t]
    shared = {str(e["patient_id"]) for e in test} & {str(e["patient_id"]) for e in rest}
    if shared:
        raise ValueError(f"{len(shared)} patients have images in and out of the test list, e.g. {sorted(shared)[:5]}")
    result = split_by_patient(rest, (1.0 - val_fraction, val_fraction, 0.0), seed)
    result["testing"] = test
    return result


def patients_per_split(splits: dict[str, list[dict[str, Any]]]) -> dict[str, set[str]]:
    """The set of patient ids in each split."""
    return {name: {str(e["patient_id"]) for e in items} for name, items in splits.items()}
