"""Unlabelled images for semi-supervised and contrastive training.

A datalist's ``"unlabelled": [{"image": ...}, ...]`` list holds images without labels (written by
``scripts/prepare.py unlabelled``). Training entries that carry no label of a task are unlabelled for that task
too (the partial-label format: an entry without ``mask`` has no segmentation label), so
:func:`unlabelled_entries` joins both. Unlabelled images may not belong to a validation or testing patient.

:class:`UnlabelledDataset` reads images lazily and caches them; an unreadable file is logged with its name and
left out, and training goes on. :class:`EndlessBatches` draws batches from a loader, restarting it when spent, so
that the unlabelled stream runs alongside the labelled epochs with its own batch size.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from monai.data import DataLoader
from torch.utils.data import Dataset

from .datalist import DatalistError, entries_of, read_datalist
from .readers import ImageReadError, LoadCXRd
from .splits import leak_message, patient_keys, split_leaks
from .transforms import ResizeImaged
from .collate import multitask_collate

#: The datalist list of unlabelled images.
UNLABELLED: str = "unlabelled"
#: Entry keys that carry each task's label (``mask_rle`` is a segmentation label too).
TASK_LABEL_KEYS: dict[str, tuple[str, ...]] = {
    "cls": ("cls",), "det": ("boxes",), "seg": ("mask", "mask_rle"), "sal": ("saliency",),
}
log = logging.getLogger("bundle.data")


def unlabelled_entries(
    path: str | Path, tasks: Sequence[str] = ("seg",), include_training: bool = True,
    base_dir: str | Path | None = None, allow_empty: bool = False,
) -> list[dict[str, Any]]:
    """``{"image", "patient_id"}`` of the datalist's ``unlabelled`` list (may be absent) and, with
    ``include_training``, of the training entries lacking a label of one of ``tasks``.

    Raises:
        DatalistError: the datalist or an entry is malformed, nothing is unlabelled (unless ``allow_empty``), or
            an unlabelled image's patient is in the validation or testing split (it would leak into model
            selection or the test).
    """
    unknown = set(tasks) - set(TASK_LABEL_KEYS)
    if unknown:
        raise ValueError(f"unknown tasks {sorted(unknown)}; known: {sorted(TASK_LABEL_KEYS)}")
    content = read_datalist(path)
    found = entries_of(content, path, UNLABELLED, base_dir, allow_empty=True) if UNLABELLED in content else []
    if include_training and "training" in content:
        found += [
            e for e in entries_of(content, path, "training", base_dir, allow_empty=True)
            if any(not any(k in e for k in TASK_LABEL_KEYS[t]) for t in tasks)
        ]
    if not found and not allow_empty:
        raise DatalistError(
            f"{path}: no unlabelled image: add an '{UNLABELLED}' list (scripts/prepare.py unlabelled) or training "
            f"entries without {list(tasks)} labels"
        )
    source = str(content.get("source", ""))
    held_out = [
        (key, f"{key}[{i}]", patient_keys(e, source))
        for key in ("validation", "testing") if key in content
        for i, e in enumerate(entries_of(content, path, key, base_dir, allow_empty=True))
    ]
    unlabelled = [(UNLABELLED, f"{UNLABELLED}[{i}]", patient_keys(e, source)) for i, e in enumerate(found)]
    leaks = [leak for leak in split_leaks(held_out + unlabelled) if f"{UNLABELLED}: " in leak]
    if leaks:
        raise DatalistError(f"{path}: unlabelled images of held-out patients: {leak_message(leaks)}")
    return [{"image": e["image"], "patient_id": str(e.get("patient_id", Path(e["image"]).stem))} for e in found]


def read_error(err: BaseException) -> ImageReadError | None:
    """The :class:`~bundle.data.ImageReadError` that ``err`` is or was raised from, if any."""
    seen: BaseException | None = err
    while seen is not None and not isinstance(seen, ImageReadError):
        seen = seen.__cause__ or seen.__context__
    return seen


class UnlabelledDataset(Dataset):
    """Entries through ``load`` (deterministic: read, resize; cached) and ``views`` (random): the unlabelled
    stream, or the two-view images of contrastive pretraining.

    An entry whose image cannot be read (:class:`~bundle.data.ImageReadError`) is logged once, with the file and
    the reason, and replaced by the next readable one.

    Args:
        data: entries with an ``image`` path.
        load: the deterministic transform (e.g. ``LoadCXRd`` + resize).
        views: the random views (:mod:`bundle.data.views`).
        cache: keep loaded images in memory.
    """

    def __init__(self, data: Sequence[dict[str, Any]], load: Callable, views: Callable, cache: bool = True) -> None:
        if not data:
            raise DatalistError("UnlabelledDataset: no entries")
        self.data, self.load, self.views, self.cache = list(data), load, views, cache
        self.loaded: dict[int, dict[str, Any]] = {}
        self.unreadable: dict[int, str] = {}

    def __len__(self) -> int:
        return len(self.data)

    def _loaded(self, index: int) -> dict[str, Any]:
        if index in self.loaded:
            return self.loaded[index]
        item = self.load(dict(self.data[index]))
        if self.cache:
            self.loaded[index] = item
        return item

    def __getitem__(self, index: int) -> dict[str, Any]:
        for offset in range(len(self.data)):
            i = (index + offset) % len(self.data)
            if i in self.unreadable:
                continue
            try:
                return self.views(dict(self._loaded(i)))
            except Exception as err:  # MONAI's Compose wraps a reader's error: look for it in the chain
                cause = read_error(err)
                if cause is None:
                    raise
                self.unreadable[i] = str(cause)
                log.warning("unlabelled[%d] skipped, training goes on: %s", i, cause)
        raise DatalistError(f"no unlabelled image is readable ({len(self.unreadable)} tried): {self.unreadable[0]}")


class EndlessBatches(Iterator[dict[str, Any]]):
    """Batches of ``loader``, restarted (reshuffled) whenever it is spent."""

    def __init__(self, loader: Iterable[dict[str, Any]]) -> None:
        self.loader = loader
        self.stream: Iterator[dict[str, Any]] | None = None

    def __next__(self) -> dict[str, Any]:
        if self.stream is not None:
            batch = next(self.stream, None)
            if batch is not None:
                return batch
        self.stream = iter(self.loader)
        try:
            return next(self.stream)
        except StopIteration:
            raise DatalistError("the unlabelled loader yields no batch") from None


class LoadUnlabelledd:
    """The deterministic part for :class:`UnlabelledDataset`: read the image (any format the readers take, with
    their errors, not wrapped as MONAI's Compose would) and resize it to ``spatial_size``."""

    def __init__(self, spatial_size: Sequence[int]) -> None:
        self.read, self.resize = LoadCXRd(keys=["image"]), ResizeImaged(spatial_size)

    def __call__(self, entry: dict[str, Any]) -> dict[str, Any]:
        return self.resize(self.read(entry))


def unlabelled_loader(
    entries: Sequence[dict[str, Any]], spatial_size: Sequence[int], views: Callable, batch_size: int,
    num_workers: int = 0,
) -> EndlessBatches:
    """Endless shuffled batches of views of ``entries`` (the unlabelled stream of a training part)."""
    dataset = UnlabelledDataset(entries, LoadUnlabelledd(spatial_size), views)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, drop_last=len(dataset) >= batch_size,
                        num_workers=num_workers, collate_fn=multitask_collate)
    return EndlessBatches(loader)
