"""Readers of the public lung-field segmentation sets in their published layouts, each returning datalist entries.

- JSRT with the SCR lung masks: ``All247images/JPCLN001.IMG`` (raw 2048 x 2048, 16-bit big-endian words holding
  12-bit values, 0 = white, no header) and ``scratch/fold1|fold2/masks/left lung|right lung/JPCLN001.gif``
  (1024 x 1024, 0/255). The images are converted to 1024 x 1024 16-bit PNGs (2 x 2 means, inverted so bone is
  bright as in every other source) and the two lungs to one 0/255 PNG, under ``converted_dir``.
- Montgomery County: ``MontgomerySet/CXR_png/MCUCXR_0001_0.png`` with ``ManualMask/leftMask`` and
  ``ManualMask/rightMask`` PNGs of the same name; their union is written under ``converted_dir``.
- Shenzhen: ``CXR_png/CHNCXR_0001_0.png`` with masks ``CHNCXR_0001_0_mask.png`` in a separate folder (the
  published mask set covers most, not all, images: the rest carry no mask label).

Each image is one patient in these sets, so the patient id is the file stem.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from .sources import SourceError, SourceResult

JSRT_SHAPE: tuple[int, int] = (2048, 2048)
JSRT_BYTES = JSRT_SHAPE[0] * JSRT_SHAPE[1] * 2
JSRT_MAX = 4095
SCR_LUNGS: tuple[str, ...] = ("left lung", "right lung")
MONTGOMERY_LUNGS: tuple[str, ...] = ("leftMask", "rightMask")


def read_jsrt_image(path: str | Path) -> np.ndarray:
    """A JSRT ``.IMG`` as a (2048, 2048) uint16 array (rows, columns), inverted so that bone is bright.

    Raises:
        SourceError: the file does not have a JSRT image's size or holds values above 12 bits.
    """
    path = Path(path)
    size = path.stat().st_size
    if size != JSRT_BYTES:
        raise SourceError(
            f"{path}: {size} bytes; a JSRT .IMG is {JSRT_SHAPE[0]}x{JSRT_SHAPE[1]} 16-bit big-endian without header "
            f"({JSRT_BYTES} bytes): re-download the file"
        )
    raw = np.fromfile(path, dtype=">u2").reshape(JSRT_SHAPE)
    if int(raw.max()) > JSRT_MAX:
        raise SourceError(f"{path}: values up to {int(raw.max())}, not 12-bit JSRT data (is it little-endian?)")
    return (JSRT_MAX - raw).astype(np.uint16)


def read_binary_mask(path: str | Path, shape: tuple[int, int] | None = None) -> np.ndarray:
    """A mask file (GIF / PNG, any nonzero value = inside) as a (rows, columns) bool array.

    Raises:
        SourceError: unreadable, or not of ``shape`` (rows, columns) when given.
    """
    try:
        with Image.open(path) as image:
            mask = np.asarray(image.convert("L")) > 0
    except Exception as err:
        raise SourceError(f"{path}: cannot read the mask ({type(err).__name__}: {err})") from err
    if shape is not None and mask.shape != tuple(shape):
        raise SourceError(f"{path}: mask is {mask.shape[1]}x{mask.shape[0]}, the image is {shape[1]}x{shape[0]}")
    return mask


def _image_shape(path: Path) -> tuple[int, int]:
    """(rows, columns) of an image file."""
    try:
        with Image.open(path) as image:
            return image.size[1], image.size[0]
    except Exception as err:
        raise SourceError(f"{path}: cannot read the image ({type(err).__name__}: {err})") from err


def _write_mask(mask: np.ndarray, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask.astype(np.uint8) * 255).save(path)
    return path


def _files(folder: Path, suffix: str, what: str) -> list[Path]:
    if not folder.is_dir():
        raise SourceError(f"{folder}: {what} folder not found")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() == suffix)
    if not files:
        raise SourceError(f"{folder}: no {suffix} files ({what})")
    return files


def _lung_union(paths: list[Path], shape: tuple[int, int] | None) -> np.ndarray:
    masks = [read_binary_mask(p, shape) for p in paths]
    shapes = {m.shape for m in masks}
    if len(shapes) > 1:
        raise SourceError(f"{paths[0]}: the lung masks of one image differ in size ({sorted(shapes)})")
    return np.logical_or.reduce(masks)


def jsrt(images_dir: str | Path, masks_dir: str | Path, converted_dir: str | Path) -> SourceResult:
    """JSRT images (``*.IMG``) with the SCR lung masks found anywhere under ``masks_dir`` (``left lung`` and
    ``right lung`` folders of GIFs named by the image stem); PNGs written under ``converted_dir``.

    An image with neither lung mask has no mask label; one with only one of the two is an error.
    """
    converted = Path(converted_dir)
    lungs: dict[str, dict[str, Path]] = {}
    for lung in SCR_LUNGS:
        for path in Path(masks_dir).rglob(f"{lung}/*.gif"):
            lungs.setdefault(path.stem, {})[lung] = path
    if not lungs:
        raise SourceError(f"{masks_dir}: no SCR masks ('left lung/*.gif', 'right lung/*.gif' in any subfolder)")
    entries: list[dict[str, Any]] = []
    for path in _files(Path(images_dir), ".img", "JSRT images"):
        pixels = read_jsrt_image(path)
        half = pixels.reshape(1024, 2, 1024, 2).mean(axis=(1, 3)).round().astype(np.uint16)
        image = converted / "images" / f"{path.stem}.png"
        image.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(half).save(image)
        entry: dict[str, Any] = {"image": str(image), "patient_id": path.stem, "source_image": str(path)}
        found = lungs.get(path.stem, {})
        if found:
            missing = [lung for lung in SCR_LUNGS if lung not in found]
            if missing:
                raise SourceError(f"{path}: SCR has {sorted(found)} but no {missing} mask for it under {masks_dir}")
            union = _lung_union([found[lung] for lung in SCR_LUNGS], half.shape)
            entry["mask"] = str(_write_mask(union, converted / "masks" / f"{path.stem}.png"))
        entries.append(entry)
    return SourceResult(entries)


def montgomery(root: str | Path, converted_dir: str | Path) -> SourceResult:
    """Montgomery County set at ``root`` (``CXR_png``, ``ManualMask/leftMask``, ``ManualMask/rightMask``); the
    union of the two lungs is written to ``converted_dir/masks``. Every image must have both masks."""
    root, converted = Path(root), Path(converted_dir)
    entries: list[dict[str, Any]] = []
    for path in _files(root / "CXR_png", ".png", "Montgomery images"):
        lungs = [root / "ManualMask" / lung / path.name for lung in MONTGOMERY_LUNGS]
        missing = [str(p) for p in lungs if not p.is_file()]
        if missing:
            raise SourceError(f"{path}: lung mask(s) missing: {', '.join(missing)}")
        union = _lung_union(lungs, _image_shape(path))
        mask = _write_mask(union, converted / "masks" / path.name)
        entries.append({"image": str(path), "patient_id": path.stem, "mask": str(mask)})
    return SourceResult(entries)


def shenzhen(images_dir: str | Path, masks_dir: str | Path) -> SourceResult:
    """Shenzhen images (``CXR_png``) with ``<stem>_mask.png`` lung masks from ``masks_dir``, used in place
    (each checked to be a readable mask of the image's size)."""
    masks = {p.stem[: -len("_mask")]: p for p in _files(Path(masks_dir), ".png", "Shenzhen masks")
             if p.stem.endswith("_mask")}
    if not masks:
        raise SourceError(f"{masks_dir}: no '<image stem>_mask.png' files (Shenzhen mask naming)")
    entries: list[dict[str, Any]] = []
    images = _files(Path(images_dir), ".png", "Shenzhen images")
    names = {p.stem for p in images}
    orphans = sorted(set(masks) - names)
    if orphans:
        raise SourceError(f"{masks[orphans[0]]}: mask without an image in {images_dir} ({len(orphans)} such masks)")
    for path in images:
        entry: dict[str, Any] = {"image": str(path), "patient_id": path.stem}
        if path.stem in masks:
            read_binary_mask(masks[path.stem], _image_shape(path))
            entry["mask"] = str(masks[path.stem])
        entries.append(entry)
    return SourceResult(entries)
