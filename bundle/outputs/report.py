"""The report of the inputs of an inference run that failed (``errors.json``): file, stage, problem, action."""

from __future__ import annotations

import json
import logging
from pathlib import Path

from bundle.fileio import atomic_write

log = logging.getLogger("bundle.outputs")

#: What to do, by kind of failure (the ``action`` of an item).
UNREADABLE = "fix or replace the file (the problem says what is wrong), then rerun: finished files are skipped"
NOT_AN_IMAGE = "nothing to do if it is not a radiograph; otherwise give it an image suffix or DICOM header"
RUN_FAILED = "the image was read but the network failed on it: check its size and content, then rerun"
OUTPUT_FAILED = "the other outputs of this image were written; see the problem for this one"
#: Stages at which a failure means the image got no outputs at all.
FATAL_STAGES: frozenset[str] = frozenset({"input", "inference"})


class ErrorReport:
    """Problems of one run, per input file: each is logged as an error and kept in a JSON list at ``path``.

    The file is (re)written empty when the report is made, so a report never shows an earlier run's errors.
    Each item is ``{"file": path, "stage": "input" | "inference" | output format, "problem": message,
    "action": what to do}``; ``files`` are the inputs that got no outputs (a failure at input or inference).
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.errors: list[dict[str, str]] = []
        self.files: set[str] = set()
        self._save()

    def add(self, file: str | Path, stage: str, problem: str, action: str = OUTPUT_FAILED) -> None:
        """Record (log and save) that ``stage`` failed for ``file``."""
        log.error("%s: %s failed: %s", file, stage, problem.splitlines()[0])
        self.errors.append({"file": str(file), "stage": stage, "problem": problem, "action": action})
        if stage in FATAL_STAGES:
            self.files.add(str(file))
        self._save()

    def _save(self) -> None:
        atomic_write(self.path, json.dumps(self.errors, indent=2).encode())
