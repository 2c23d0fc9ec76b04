"""Patient-level splits: every image of a patient lands in the same split, and leaks between splits are found.

A patient is known by several keys (:func:`patient_keys`): the entry's ``patient_id`` within its datalist's
``source``, the NIH ChestX-ray14 patient behind an NIH image (RSNA and SIIM images are NIH images: the entry's
``nih_image``, a mapping to NIH ``Image Index``, or the file name itself), and the image file. Two entries in
different splits that share a key are a leak.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

SPLITS: tuple[str, ...] = ("training", "validation", "testing")
#: NIH ChestX-ray14 ``Image Index``: 8-digit patient number, 3-digit follow-up (``00000001_000.png``).
NIH_IMAGE_INDEX = re.compile(r"^(\d{8})_\d{3}\.png$", re.IGNORECASE)
#: (namespace, id): ("nih", "1") for an NIH patient, (source, patient_id), or ("image", absolute path).
PatientKey = tuple[str, str]
#: How many leaking patients a message shows.
SHOWN = 10


def nih_patient(image_index: str) -> str | None:
    """The NIH patient of an NIH ``Image Index`` (``00000001_000.png`` -> ``"1"``, as Data_Entry's "Patient ID",
    which equals it on all 112,120 rows); None for any other name."""
    match = NIH_IMAGE_INDEX.match(Path(image_index).name)
    return str(int(match.group(1))) if match else None


def patient_keys(
    entry: Mapping[str, Any], source: str = "", to_nih: Mapping[str, str] | None = None
) -> set[PatientKey]:
    """The keys the patient of ``entry`` (with an absolute ``image``) is known by.

    ``to_nih`` maps an entry's ``patient_id``, image name or image stem (RSNA patientId, SIIM ImageId, ...) to an
    NIH ``Image Index``, for datalists whose entries do not carry ``nih_image``.
    """
    image = Path(entry["image"])
    keys: set[PatientKey] = {("image", str(image))}
    names = [image.name, image.stem]
    if "patient_id" in entry:
        keys.add((source, str(entry["patient_id"])))
        names.append(str(entry["patient_id"]))
    indices = [image.name, str(entry.get("nih_image", ""))] + [to_nih[n] for n in names if to_nih and n in to_nih]
    keys.update(("nih", patient) for patient in map(nih_patient, indices) if patient)
    return keys


def describe_key(key: PatientKey) -> str:
    """A patient key as a reader would name it: "NIH patient 1", "rsna patient abc", "image /x/a.png"."""
    namespace, value = key
    if namespace == "nih":
        return f"NIH patient {value}"
    if namespace == "image":
        return f"image {value}"
    return f"{namespace or 'datalist'} patient {value}"


def split_leaks(rows: Iterable[tuple[str, str, set[PatientKey]]]) -> list[str]:
    """Every patient key found in more than one split, as "key (split: where; split: where)".

    Args:
        rows: (split, where the entry is, e.g. "nih.json training[3]", its :func:`patient_keys`) per entry.
    """
    places: dict[PatientKey, dict[str, str]] = {}
    for split, where, keys in rows:
        for key in keys:
            places.setdefault(key, {}).setdefault(split, where)
    leaks = [(key, found) for key, found in places.items() if len(found) > 1]
    leaks.sort(key=lambda leak: leak[0][0] == "image")  # patients first, then images
    return [
        f"{describe_key(key)} ({'; '.join(f'{split}: {where}' for split, where in found.items())})"
        for key, found in leaks
    ]


def leak_message(leaks: Sequence[str]) -> str:
    """One line: how many patients are in more than one split, the first :data:`SHOWN`, and the fix."""
    shown = ", ".join(leaks[:SHOWN]) + (f", ... and {len(leaks) - SHOWN} more" if len(leaks) > SHOWN else "")
    return (
        f"{len(leaks)} patient(s) or image(s) are in more than one split: {shown}; every image of a patient must be "
        "in one split: re-split by patient with scripts/prepare.py (--split_like the other datalists when datasets "
        "are mixed); if equal ids in different datasets are different people, give each datalist its own \"source\""
    )


def split_by_patient(
    entries: Sequence[dict[str, Any]], fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0,
    fixed: Mapping[str, str] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Split ``entries`` into training/validation/testing by ``patient_id`` with a seeded shuffle of patients.

    ``fractions`` (training, validation, testing) are of patients and must sum to 1; a fraction of 0 gives an
    empty split. Patients in ``fixed`` (patient_id to split) go to their split; the others are shuffled. Entry
    order within a split follows the input order.
    """
    fractions = tuple(float(f) for f in fractions)
    if len(fractions) != len(SPLITS) or min(fractions) < 0 or not np.isclose(sum(fractions), 1.0):
        raise ValueError(f"fractions must be 3 non-negative numbers summing to 1, got {fractions}")
    split_of: dict[str, str] = dict(fixed or {})
    patients = sorted({str(e["patient_id"]) for e in entries} - set(split_of))
    order = np.random.default_rng(seed).permutation(len(patients))
    bounds = np.round(np.cumsum(fractions) * len(patients)).astype(int)
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


def fixed_splits(
    entries: Sequence[dict[str, Any]], reference: Mapping[PatientKey, str], source: str = "",
    to_nih: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Patient id to split for the patients of ``entries`` that ``reference`` (patient key to split, from other
    datalists) already places, so that a new split keeps them where they are.

    Raises:
        ValueError: a patient is placed in two splits by ``reference`` (the other datalists leak).
    """
    fixed: dict[str, str] = {}
    for entry in entries:
        found = {reference[key] for key in patient_keys(entry, source, to_nih) if key in reference}
        patient = str(entry["patient_id"])
        found |= {fixed[patient]} if patient in fixed else set()
        if len(found) > 1:
            raise ValueError(f"patient {patient} ({entry['image']}) is in {sorted(found)} of the reference datalists")
        if found:
            fixed[patient] = found.pop()
    return fixed
