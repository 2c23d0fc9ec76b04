"""Whole-datalist checks before training: every entry decodes and is well labelled (fail at start, or leave bad
entries out with a report), and no patient is in more than one split, across datasets too."""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from .datalist import DatalistError, entries_of, read_datalist, resolve_paths, split_list, structure_problems
from .gaze import SaliencyMapError, load_saliency_map
from .labels import NIH_FINDINGS
from .readers import ImageReadError, LoadCXRd
from .rle import RLEError
from .sources import SourceError, read_nih_map
from .splits import SPLITS, PatientKey, leak_message, patient_keys, split_leaks
from .transforms import PrepareTargetsd

OnError = Literal["raise", "skip"]
PathOrPaths = str | Path | Sequence[str | Path]
log = logging.getLogger("bundle.data")


def entry_problems(entry: dict[str, Any], num_classes: int = len(NIH_FINDINGS)) -> list[str]:
    """Every problem of one entry: image/mask missing or undecodable, mask size, boxes outside, bad labels, an
    unusable saliency map (:func:`bundle.data.gaze.load_saliency_map`)."""
    try:
        loaded = LoadCXRd()(entry)
    except ImageReadError as err:
        return [str(err)]
    except RLEError as err:
        return [f"'mask_rle': {err}"]
    problems = PrepareTargetsd(num_classes).problems(loaded)
    if "saliency" in entry:
        try:
            load_saliency_map(entry["saliency"])
        except SaliencyMapError as err:
            problems.append(f"'saliency': {err}")
    return problems


def unlabelled_report(entries: Sequence[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """The unlabelled entries whose image decodes (read as labelled images are), and one line per bad one."""
    good, report = [], []
    for index, entry in enumerate(entries):
        problems = entry_problems(entry)
        report.extend(f"unlabelled[{index}] {entry['image']}: {problem}" for problem in problems)
        if not problems:
            good.append(entry)
    return good, report


def split_report(
    path: str | Path,
    key: str,
    num_classes: int = len(NIH_FINDINGS),
    base_dir: str | Path | None = None,
    allow_empty: bool = False,
) -> tuple[list[dict[str, Any]], list[str], int]:
    """The good entries of ``key``, one report line per problem (``key[index] file: problem``), and the count.

    Problems: malformed fields, a duplicate of an earlier entry (same image file; the first is kept), and every
    :func:`entry_problems`. The datalist or list being unusable raises :class:`DatalistError`.
    """
    path = Path(path)
    items = split_list(read_datalist(path), path, key, allow_empty)
    root = Path(base_dir) if base_dir is not None else path.parent
    good, report, first = [], [], {}
    for index, raw in enumerate(items):
        structure = structure_problems(raw)
        if structure:
            report.extend(f"{key}[{index}]: {problem}" for problem in structure)
            continue
        entry = resolve_paths(raw, root)
        image = entry["image"]
        if image in first:
            report.append(f"{key}[{index}] {image}: duplicate of {key}[{first[image]}] (same image): remove one")
            continue
        first[image] = index
        problems = entry_problems(entry, num_classes)
        report.extend(f"{key}[{index}] {image}: {problem}" for problem in problems)
        if not problems:
            good.append(entry)
    return good, report, len(items)


def check_datalist(
    path: str | Path,
    key: str = "training",
    on_error: OnError = "raise",
    num_classes: int = len(NIH_FINDINGS),
    base_dir: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Decode and check every entry of ``key`` (:func:`split_report`); return the good ones.

    Args:
        on_error: "raise" stops with one :class:`DatalistError` listing every bad entry (its index, file and
            problem); "skip" logs that same report as a warning and returns only the good entries.

    Raises:
        DatalistError: the datalist is missing or not JSON, ``key`` is absent, not a list or empty, or (with
            "raise") an entry is bad; with "skip", also when no entry is good.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    good, report, total = split_report(path, key, num_classes, base_dir)
    if report:
        message = f"{path}: {total - len(good)} of {total} '{key}' entries are bad:\n  " + "\n  ".join(report)
        if on_error == "raise":
            raise DatalistError(message + "\n(set bad_entries to 'skip' to train without them)")
        if not good:
            raise DatalistError(message + "\n(no good entry is left)")
        log.warning("skipping %s", message)
    return good


def _as_paths(paths: PathOrPaths) -> list[Path]:
    return [Path(paths)] if isinstance(paths, (str, Path)) else [Path(p) for p in paths]


def _nih_maps(mappings: PathOrPaths) -> dict[str, str]:
    """The union of the id-to-NIH-Image-Index CSVs (:func:`bundle.data.sources.read_nih_map`)."""
    to_nih: dict[str, str] = {}
    for mapping in _as_paths(mappings):
        try:
            to_nih.update(read_nih_map(mapping))
        except SourceError as err:
            raise DatalistError(str(err)) from err
    return to_nih


def split_rows(
    paths: PathOrPaths, to_nih: dict[str, str] | None = None, keys: Sequence[str] = SPLITS
) -> Iterator[tuple[str, str, set[PatientKey]]]:
    """(split, "datalist split[index]", :func:`patient_keys`) of every entry of ``keys`` in the datalists."""
    for path in _as_paths(paths):
        content = read_datalist(path)
        source = str(content.get("source", ""))
        for key in (k for k in keys if k in content):
            for index, entry in enumerate(entries_of(content, path, key, allow_empty=True)):
                yield key, f"{path.name} {key}[{index}]", patient_keys(entry, source, to_nih)


def check_splits(paths: PathOrPaths, mappings: PathOrPaths = (), keys: Sequence[str] = SPLITS) -> int:
    """Refuse a patient (or image) in more than one of the ``keys`` splits of the datalists at ``paths`` together.

    Patients are matched by :func:`bundle.data.splits.patient_keys`: ``patient_id`` within each datalist's
    ``source``, the NIH patient behind NIH images (file name, ``nih_image``, or one of the ``mappings`` CSVs of
    RSNA patientId / SIIM ImageId to NIH Image Index), and the image file. Returns the number of entries checked.

    Raises:
        DatalistError: one line naming the shared patients, where each one is, and the fix.
    """
    rows = list(split_rows(paths, _nih_maps(mappings), keys))
    leaks = split_leaks(rows)
    if leaks:
        names = ", ".join(str(p) for p in _as_paths(paths))
        raise DatalistError(f"{names}: {leak_message(leaks)}")
    log.info("split check: %d entries of %s, no patient in two splits", len(rows), [str(p) for p in _as_paths(paths)])
    return len(rows)
