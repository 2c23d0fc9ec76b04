"""TrainingCheckpoint: full-state checkpoints at epoch ends, and an exact resume from the newest good one."""

from __future__ import annotations

import io
import logging
import pickle
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from ignite.engine import Engine, Events
from torch import nn

from bundle.fileio import TEMP_SUFFIX, atomic_write

from .random_state import data_random_state, global_random_state, set_data_random_state, set_global_random_state

_EPOCH = re.compile(r"_epoch=(\d+)\.pt$")
#: Entries the handler writes itself; ``objects`` may not use these names.
_OWN = ("trainer", "scaler", "random", "best_model")
_FIX = "resume with the configuration that wrote it, or start afresh with --resume False or another --ckpt_dir"


class CheckpointError(ValueError):
    """A checkpoint that cannot be resumed from; the message names the file, what is wrong and what to do."""


class UnreadableCheckpointError(CheckpointError):
    """A checkpoint file that does not load at all (truncated, empty, not a checkpoint)."""


def _bare(obj: Any) -> Any:
    """The module inside a DDP / DataParallel wrapper (checkpoints hold the bare network), else ``obj``."""
    return obj.module if isinstance(obj, (nn.parallel.DistributedDataParallel, nn.DataParallel)) else obj


def _world() -> tuple[int, int]:
    """(rank, world size) of this process (0, 1 when not distributed)."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _first_line(error: BaseException, limit: int = 120) -> str:
    """The first sentence of ``error``'s message on one line (its type when it has none)."""
    lines = str(error).strip().splitlines()
    line = lines[0].split(". ")[0] if lines else type(error).__name__
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _module_mismatch(module: nn.Module, saved: Mapping[str, Any]) -> str | None:
    """What keeps ``saved`` from loading into ``module`` strictly (missing or unexpected keys, other shapes)."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in saved]
    unexpected = [k for k in saved if k not in expected]
    shapes = [
        f"{k} saved {tuple(saved[k].shape)}, configured {tuple(v.shape)}"
        for k, v in expected.items()
        if k in saved
        and isinstance(v, torch.Tensor)
        and isinstance(saved[k], torch.Tensor)
        and saved[k].shape != v.shape
    ]
    problems = [
        f"{len(items)} {what} (first: {items[0]})"
        for what, items in (("missing keys", missing), ("unexpected keys", unexpected), ("other shapes", shapes))
        if items
    ]
    return "; ".join(problems) or None


class TrainingCheckpoint:
    """Save the whole training state every ``interval`` epochs; resume exactly from the newest good save.

    A checkpoint ``<prefix>_epoch=N.pt`` in ``ckpt_dir`` holds each of ``objects``' ``state_dict`` (a DDP network
    unwrapped), the trainer's epoch and iteration counters, its AMP grad scaler, and the random states: Python,
    NumPy, torch CPU and CUDA, and every generator reachable from the training data (the ``RandomState`` of each
    random transform, sampler and loader generators of the data the run starts with; phase loaders built on the
    same transforms share them), one set per rank. It is written by rank 0 through a
    temporary file and a rename, as the last handler of the epoch end (it is registered when the run starts),
    so it holds the state that the next epoch starts from; then only the last ``n_saved`` checkpoints of this
    run stay (older ones, and later-epoch ones left by an earlier run, are deleted). Resuming thus repeats the
    epochs after the save bit for bit on CPU, whatever point the run was killed at.

    When the run starts, temporary files left by a killed save are deleted, and with ``resume`` the newest
    checkpoint that loads is restored (``torch.load(weights_only=True)``); an unreadable one (truncated, empty,
    not a checkpoint) is named in a one-line warning and the one before it is used. When checkpoints exist but
    none loads, or the newest readable one does not fit ``objects`` (another configuration wrote it), the run
    stops with a one-line :class:`CheckpointError` naming the file and the fix. ``max_epochs`` is the current
    run's, so a finished run can be extended.

    Args:
        ckpt_dir: folder of the checkpoints.
        objects: what to save besides the trainer, each with ``state_dict`` / ``load_state_dict``, e.g.
            ``{"network": ..., "optimizer": ..., "lr_scheduler": ...}``.
        interval: epochs between saves.
        n_saved: checkpoints kept (two by default, so that a damaged newest file has a predecessor).
        prefix: file name prefix.
        resume: whether to resume from the newest checkpoint (False: start afresh, still saving).
        best_model: the best-model saver's memory (:class:`bundle.handlers.best_model.BestModelState`), saved and
            restored with the rest, so that a resumed run replaces ``model.pt`` only with a better model. A
            checkpoint written without it resumes with a warning that the best score starts afresh.
    """

    def __init__(
        self,
        ckpt_dir: str,
        objects: dict[str, Any],
        interval: int = 1,
        n_saved: int = 2,
        prefix: str = "checkpoint",
        resume: bool = True,
        best_model: Any | None = None,
    ) -> None:
        reserved = sorted(set(objects) & set(_OWN))
        if reserved:
            raise ValueError(f"TrainingCheckpoint objects may not be named {reserved}: the handler saves those itself")
        if interval < 1 or n_saved < 1:
            raise ValueError(f"TrainingCheckpoint needs interval >= 1 and n_saved >= 1, got {interval} and {n_saved}")
        self.ckpt_dir = Path(ckpt_dir)
        self.objects = dict(objects)
        self.interval = interval
        self.n_saved = n_saved
        self.prefix = prefix
        self.resume = resume
        self.best_model = best_model
        self.data: dict[str, Any] = {}
        self.logger = logging.getLogger(__name__)

    def checkpoints(self) -> list[tuple[int, Path]]:
        """(epoch, path) of the checkpoints in ``ckpt_dir``, oldest first."""
        found = [
            (int(m.group(1)), p)
            for p in self.ckpt_dir.glob(f"{self.prefix}_epoch=*.pt")
            if (m := _EPOCH.search(p.name))
        ]
        return sorted(found)

    def latest(self) -> Path | None:
        """The checkpoint of the highest epoch in ``ckpt_dir``, if any."""
        found = self.checkpoints()
        return found[-1][1] if found else None

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, self._start)

    def _start(self, engine: Engine) -> None:
        self.data = {"data": engine.state.dataloader}
        if _world()[0] == 0:
            self._remove_temporary_files()
        if self.resume:
            self._resume(engine)
        if not engine.has_event_handler(self._save, Events.EPOCH_COMPLETED):
            engine.add_event_handler(Events.EPOCH_COMPLETED, self._save)

    def _remove_temporary_files(self) -> None:
        stale = sorted(self.ckpt_dir.glob(f".{self.prefix}_epoch=*.pt.*{TEMP_SUFFIX}"))
        for path in stale:
            path.unlink(missing_ok=True)
        if stale:
            self.logger.warning("removed %d temporary file(s) of an interrupted save in %s", len(stale), self.ckpt_dir)

    def _random_states(self) -> list[dict[str, Any]]:
        """This process's random states, or every rank's (gathered on all ranks) when distributed."""
        own = {**global_random_state(), "data": data_random_state(self.data)}
        _, world = _world()
        if world == 1:
            return [own]
        gathered: list[Any] = [None] * world
        dist.all_gather_object(gathered, own)
        return gathered

    def _save(self, engine: Engine) -> None:
        if engine.state.epoch % self.interval:
            return
        random_states = self._random_states()  # a collective: every rank takes part
        if _world()[0] != 0:
            return
        state = {name: _bare(obj).state_dict() for name, obj in self.objects.items()}
        state["trainer"] = {
            "epoch": engine.state.epoch,
            "iteration": engine.state.iteration,
            "epoch_length": engine.state.epoch_length,
        }
        scaler = getattr(engine, "scaler", None)
        if scaler is not None:
            state["scaler"] = scaler.state_dict()
        state["random"] = random_states
        if self.best_model is not None:
            state["best_model"] = self.best_model.state_dict()
        buffer = io.BytesIO()
        torch.save(state, buffer)
        path = self.ckpt_dir / f"{self.prefix}_epoch={engine.state.epoch}.pt"
        atomic_write(path, buffer.getvalue())
        kept = [p for epoch, p in self.checkpoints() if epoch <= engine.state.epoch][-self.n_saved :]
        for _, old in self.checkpoints():
            if old not in kept:
                old.unlink(missing_ok=True)

    def _read(self, path: Path) -> dict[str, Any]:
        """The checkpoint at ``path``, checked to hold every entry :meth:`_load` needs; :class:`CheckpointError`
        (naming the file) when it lacks entries, :class:`UnreadableCheckpointError` when it does not load."""
        if path.stat().st_size == 0:
            raise UnreadableCheckpointError(f"{path}: not a readable checkpoint (empty file)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            if "weights only" not in str(error).lower():
                raise UnreadableCheckpointError(
                    f"{path}: not a readable checkpoint (corrupt: {_first_line(error)})"
                ) from error
            raise UnreadableCheckpointError(
                f"{path}: not a readable checkpoint (it holds Python objects that torch.load(weights_only=True) refuses)"
            ) from error
        except Exception as error:  # torch.load raises many kinds (EOFError, RuntimeError, OSError...)
            raise UnreadableCheckpointError(
                f"{path}: not a readable checkpoint (truncated or corrupt: {_first_line(error)})"
            ) from error
        if not isinstance(state, dict):
            raise UnreadableCheckpointError(
                f"{path}: not a training checkpoint (holds a {type(state).__name__}, not a dict)"
            )
        missing = [name for name in (*self.objects, "trainer") if name not in state]
        if missing:
            raise CheckpointError(f"{path}: no {missing} in it (it holds {sorted(state)}); {_FIX}")
        return state

    def _load(self, engine: Engine, path: Path, state: Mapping[str, Any]) -> None:
        """Restore ``objects``, the trainer counters, the grad scaler and the random states from ``state``
        (read from ``path``); :class:`CheckpointError` when it does not fit them."""
        for name, obj in self.objects.items():
            if isinstance(_bare(obj), nn.Module):
                mismatch = _module_mismatch(_bare(obj), state[name])
                if mismatch:
                    raise CheckpointError(f"{path}: '{name}' does not fit the configured one: {mismatch}; {_FIX}")
        for name, obj in self.objects.items():
            try:
                _bare(obj).load_state_dict(state[name])
            except (ValueError, KeyError, RuntimeError, TypeError) as error:
                raise CheckpointError(f"{path}: '{name}' does not load: {_first_line(error)}; {_FIX}") from error
        try:
            counters = state["trainer"]
            engine.state.epoch, engine.state.iteration = int(counters["epoch"]), int(counters["iteration"])
            engine.state.epoch_length = counters.get("epoch_length", engine.state.epoch_length)
            scaler = getattr(engine, "scaler", None)
            if scaler is not None and state.get("scaler"):
                scaler.load_state_dict(state["scaler"])
            self._load_random(path, state.get("random"))
            self._load_best_model(path, state.get("best_model"))
        except (ValueError, KeyError, RuntimeError, TypeError, IndexError) as error:
            raise CheckpointError(
                f"{path}: its trainer, scaler or random states do not load ({error!r}); {_FIX}"
            ) from error

    def _load_best_model(self, path: Path, saved: Mapping[str, Any] | None) -> None:
        if self.best_model is None:
            return
        if saved is None:
            self.logger.warning("%s holds no best-model score: the next validation's model becomes model.pt whatever "
                                "its score", path)
            return
        self.best_model.load_state_dict(saved)

    def _load_random(self, path: Path, saved: list[dict[str, Any]] | None) -> None:
        if not saved:
            self.logger.warning("%s holds no random states: the resumed run will not repeat an uninterrupted one", path)
            return
        rank, world = _world()
        if len(saved) != world:
            self.logger.warning(
                "%s was written by %d process(es), this run has %d: random states reused", path, len(saved), world
            )
        own = saved[rank % len(saved)]
        set_global_random_state(own)
        unmatched = set_data_random_state(self.data, own["data"])
        if unmatched:
            self.logger.warning(
                "%s: %d data generator(s) do not match this data configuration (first: %s); they keep their seeds",
                path,
                len(unmatched),
                unmatched[0],
            )

    def _resume(self, engine: Engine) -> None:
        unreadable: list[str] = []
        for _, path in reversed(self.checkpoints()):
            try:
                state = self._read(path)
            except FileNotFoundError:
                continue
            except UnreadableCheckpointError as error:
                self.logger.warning("%s; trying an older one", error)
                unreadable.append(path.name)
                continue
            max_epochs = engine.state.max_epochs
            self._load(engine, path, state)
            engine.state.max_epochs = max_epochs
            self.logger.warning("resumed from %s at epoch %d of %s", path, engine.state.epoch, max_epochs)
            return
        if unreadable:
            raise CheckpointError(
                f"no checkpoint in {self.ckpt_dir} loads ({', '.join(unreadable)} unreadable): delete them to start "
                "afresh, or run with --resume False"
            )
