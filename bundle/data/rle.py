"""The SIIM-ACR pneumothorax run-length encoding.

Pixels are numbered down the columns (column-major: the index runs over y first, then x). An encoding is
``"start length start length ..."`` where each start is relative to the end of the previous run (the first
to pixel 0). ``-1`` marks an image without pneumothorax. Masks here are ``(width, height)`` arrays, MONAI's
layout (axis 0 = x), which is exactly the column-major order flattened row-major.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

#: The label file's marker for an image without a mask.
NEGATIVE: str = "-1"


class RLEError(ValueError):
    """An encoding is malformed or does not fit the image."""


def parse_rle(rle: str) -> np.ndarray:
    """The (N, 2) relative (start, length) pairs of ``rle``; empty for the negative marker ``-1``."""
    text = rle.strip()
    if text in ("", NEGATIVE):
        return np.zeros((0, 2), dtype=np.int64)
    try:
        values = np.array(text.split(), dtype=np.int64)
    except ValueError as err:
        raise RLEError(f"RLE has a non-integer value: {err}") from err
    if values.size % 2:
        raise RLEError(f"RLE has an odd number of values ({values.size})")
    pairs = values.reshape(-1, 2)
    if (pairs < 0).any() or (pairs[:, 1] == 0).any():
        raise RLEError("RLE has a negative start or a run of zero length")
    return pairs


def rle_decode(rle: str, shape: tuple[int, int]) -> np.ndarray:
    """Decode one encoding to a uint8 0/1 mask of ``shape`` = (width, height)."""
    pairs = parse_rle(rle)
    flat = np.zeros(shape[0] * shape[1], dtype=np.uint8)
    if len(pairs):
        ends = np.cumsum(pairs.sum(axis=1))
        starts = ends - pairs[:, 1]
        if ends[-1] > flat.size:
            raise RLEError(f"RLE runs end at pixel {ends[-1]}, beyond the {shape[0]}x{shape[1]} image")
        delta = np.zeros(flat.size + 1, dtype=np.int32)
        np.add.at(delta, starts, 1)
        np.add.at(delta, ends, -1)
        flat = (np.cumsum(delta[:-1]) > 0).astype(np.uint8)
    return flat.reshape(shape)


def rle_union(rles: Iterable[str], shape: tuple[int, int]) -> np.ndarray:
    """The union of several encodings of one image (the label file has one row per lesion)."""
    mask = np.zeros(shape, dtype=np.uint8)
    for rle in rles:
        mask |= rle_decode(rle, shape)
    return mask


def rle_encode(mask: np.ndarray) -> str:
    """Encode a (width, height) mask (nonzero = foreground); ``-1`` when it is empty."""
    flat = np.concatenate([[0], (np.asarray(mask).reshape(-1) > 0).astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(flat))
    if not len(edges):
        return NEGATIVE
    starts, ends = edges[0::2], edges[1::2]
    relative = starts - np.concatenate([[0], ends[:-1]])
    return " ".join(f"{s} {n}" for s, n in zip(relative.tolist(), (ends - starts).tolist()))
