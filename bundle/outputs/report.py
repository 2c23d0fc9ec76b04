"""The inputs of an inference run: which can be read, and the report of those that cannot (``errors.json``)."""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from pathlib import Path

from bundle.data.readers import ImageReadError, load_cxr
from bundle.handlers.files import atomic_write

log = logging.getLogger("bundle.outputs")

#: Image suffixes that output names drop (``a.dcm`` -> ``a_pred.json``); other dots are kept (DICOM UIDs).
IMAGE_SUFFIXES: tuple[str, ...] = (
    ".nii.gz", ".nii", ".dcm", ".dicom", ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"
)


def output_stem(source: str | Path) -> str:
    """The prefix of the output files of ``source``: its file name without its image suffix."""
    name = Path(source).name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


class ErrorReport:
    """Problems of one run, per input file: each is logged as an error and kept in a JSON list at ``path``.

    The file is (re)written empty when the report is made, so a report never shows an earlier run's errors.
    Each item is ``{"file": path, "stage": "input" | output format, "problem": message}``.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.errors: list[dict[str, str]] = []
        self._save()

    def add(self, file: str | Path, stage: str, problem: str) -> None:
        """Record (log and save) that ``stage`` failed for ``file``."""
        log.error("%s: %s failed: %s (all problems: %s)", file, stage, problem.splitlines()[0], self.path)
        self.errors.append({"file": str(file), "stage": stage, "problem": problem})
        self._save()

    def _save(self) -> None:
        atomic_write(self.path, json.dumps(self.errors, indent=2).encode())


def readable_inputs(files: Sequence[str | Path], report: ErrorReport) -> list[dict[str, str]]:
    """Datalist entries of the ``files`` that decode; the others go to ``report``, so the run goes on without them.

    A file whose output stem (:func:`output_stem`) an earlier file already has is reported too, rather than
    overwriting that file's outputs.

    Raises:
        ValueError: no file can be read.
    """
    entries: list[dict[str, str]] = []
    stems: dict[str, str] = {}
    for file in map(str, files):
        stem = output_stem(file)
        if stem in stems:
            report.add(file, "input", f"its outputs would overwrite those of {stems[stem]} (same name '{stem}')")
            continue
        try:
            load_cxr(file)
        except ImageReadError as err:
            report.add(file, "input", str(err))
            continue
        stems[stem] = file
        entries.append({"image": file})
    log.info("%d of %d input images can be read", len(entries), len(files))
    if not entries:
        raise ValueError(f"none of the {len(files)} input images can be read (see {report.path})")
    return entries
