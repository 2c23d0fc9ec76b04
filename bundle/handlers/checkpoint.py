"""TrainingCheckpoint: periodic, atomic full-state checkpoints and automatic resume from the newest one."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events
from ignite.handlers import Checkpoint, DiskSaver

_EPOCH = re.compile(r"_epoch=(\d+)\.pt$")


class TrainingCheckpoint:
    """Save ``objects`` and the trainer's own state every ``interval`` epochs; resume from the newest save.

    Files are ``<prefix>_epoch=N.pt`` in ``ckpt_dir``, written through a temporary file and a rename (Ignite's
    atomic ``DiskSaver``), the last ``n_saved`` kept. When training starts and such a file exists, every
    object and the trainer's epoch/iteration counters are restored from it (``torch.load(weights_only=True)``),
    so an interrupted run continues where it stopped.

    Args:
        ckpt_dir: folder of the checkpoints.
        objects: what to save besides the trainer, e.g. ``{"network": ..., "optimizer": ..., "lr_scheduler": ...}``.
        interval: epochs between saves.
        n_saved: checkpoints kept.
        prefix: file name prefix.
        resume: whether to resume from the newest checkpoint (False: start afresh, still saving).
    """

    def __init__(
        self,
        ckpt_dir: str,
        objects: dict[str, Any],
        interval: int = 1,
        n_saved: int = 1,
        prefix: str = "checkpoint",
        resume: bool = True,
    ) -> None:
        self.ckpt_dir = Path(ckpt_dir)
        self.objects = dict(objects)
        self.interval = interval
        self.n_saved = n_saved
        self.prefix = prefix
        self.resume = resume
        self.logger = logging.getLogger(__name__)

    def latest(self) -> Path | None:
        """The checkpoint of the highest epoch in ``ckpt_dir``, if any."""
        found = [(int(m.group(1)), p) for p in self.ckpt_dir.glob(f"{self.prefix}_epoch=*.pt") if (m := _EPOCH.search(p.name))]
        return max(found)[1] if found else None

    def attach(self, engine: Engine) -> None:
        to_save = {**self.objects, "trainer": engine}
        saver = Checkpoint(
            to_save,
            DiskSaver(str(self.ckpt_dir), require_empty=False, atomic=True),
            filename_prefix=self.prefix,
            n_saved=self.n_saved,
            global_step_transform=lambda eng, _: eng.state.epoch,
            filename_pattern="{filename_prefix}_epoch={global_step}.{ext}",
        )
        engine.add_event_handler(Events.EPOCH_COMPLETED(every=self.interval), saver)
        if self.resume:
            engine.add_event_handler(Events.STARTED, self._resume, to_save)

    def _resume(self, engine: Engine, to_load: dict[str, Any]) -> None:
        path = self.latest()
        if path is None:
            return
        max_epochs = engine.state.max_epochs
        state = torch.load(path, map_location="cpu", weights_only=True)
        Checkpoint.load_objects(to_load=to_load, checkpoint=state)
        engine.state.max_epochs = max_epochs
        self.logger.warning("resumed from %s at epoch %d of %d", path, engine.state.epoch, max_epochs)
