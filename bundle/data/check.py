"""Whole-datalist checks before training: fail at start (default) or leave bad entries out with a report."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, Literal

from .datalist import DatalistError, read_entries
from .labels import NIH_FINDINGS
from .readers import ImageReadError, LoadCXRd
from .rle import RLEError
from .transforms import PrepareTargetsd

OnError = Literal["raise", "skip"]
log = logging.getLogger("bundle.data")


def entry_problems(entry: dict[str, Any], num_classes: int = len(NIH_FINDINGS)) -> list[str]:
    """Every problem of one entry: image/mask missing or undecodable, mask size, boxes outside, bad labels."""
    try:
        loaded = LoadCXRd()(entry)
    except (ImageReadError, RLEError) as err:
        return [str(err)]
    return PrepareTargetsd(num_classes).problems(loaded)


def check_datalist(
    path: str | Path,
    key: str = "training",
    on_error: OnError = "raise",
    num_classes: int = len(NIH_FINDINGS),
    base_dir: str | Path | None = None,
) -> list[dict[str, Any]]:
    """Decode and check every entry of ``key``; return the good ones.

    Args:
        on_error: "raise" stops with one :class:`DatalistError` listing every bad entry (its index, file and
            problem); "skip" logs that same report as a warning and returns only the good entries.
    """
    if on_error not in ("raise", "skip"):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    entries = read_entries(path, key, base_dir)
    good, report = [], []
    for index, entry in enumerate(entries):
        problems = entry_problems(entry, num_classes)
        if problems:
            report.extend(f"{key}[{index}] {entry['image']}: {problem}" for problem in problems)
        else:
            good.append(entry)
    if report:
        bad = len(entries) - len(good)
        message = f"{path}: {bad} of {len(entries)} '{key}' entries are bad:\n  " + "\n  ".join(report)
        if on_error == "raise":
            raise DatalistError(message + "\n(set bad_entries to 'skip' to train without them)")
        log.warning("skipping %s", message)
    return good
