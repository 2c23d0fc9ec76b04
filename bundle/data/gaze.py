"""Gaze maps: radiologists' fixations drawn as saliency maps, saliency map files, and two baseline maps.

A gaze map is a density over the image: one Gaussian of unit mass per fixation, weighted by the fixation's
duration, summed and normalised to sum 1. This is the fixation map blurred by a Gaussian of about one degree of
visual angle of the MIT saliency benchmark (Bylinskii et al., "What do different evaluation metrics tell us
about saliency models?", IEEE TPAMI 2019), and the heat map of REFLACX (Bigolin Lanfredi et al., Sci Data 2022:
sigma of one degree, weighted by duration, cut to the part of the image on screen).

Arrays follow the bundle's axis convention: axis 0 is x (column), shape ``(W, H)``. Pixel ``i`` covers
``[i, i + 1)`` in image coordinates, so its centre is ``i + 0.5``. Files hold a map as an image does, rows
first: a 16-bit (or 8-bit) grey PNG, or a 2D ``.npy`` of shape ``(H, W)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

import numpy as np
from numpy.typing import ArrayLike
from PIL import Image

from .readers import ImageReadError

#: (width, height) in pixels.
Size = tuple[int, int]
#: Default sigma of the centre-bias baseline, as a fraction of the image's width (x) and height (y).
CENTER_SIGMA_FRACTION: float = 0.25
#: PIL modes of one-channel images (1-bit, 8-bit, 16-bit, 32-bit integer and float).
GREY_MODES: tuple[str, ...] = ("1", "L", "I", "I;16", "I;16B", "I;16L", "F")
UINT16_MAX = 65535


class SaliencyMapError(ImageReadError):
    """A saliency map file is unusable; the message names the file and the problem."""


def _axis_gaussians(
    centre: np.ndarray, sigma: np.ndarray, length: int, low: np.ndarray | None, high: np.ndarray | None
) -> np.ndarray:
    """(N, length) unit-area 1D Gaussians at the pixel centres, zero outside ``[low, high)`` when given."""
    pixels = np.arange(length) + 0.5
    values = np.exp(-0.5 * ((pixels[None] - centre[:, None]) / sigma[:, None]) ** 2)
    values /= np.sqrt(2 * np.pi) * sigma[:, None]
    if low is not None and high is not None:
        values *= (pixels[None] >= low[:, None]) & (pixels[None] < high[:, None])
    return values


def gaze_map(
    x: ArrayLike,
    y: ArrayLike,
    weight: ArrayLike,
    sigma_x: ArrayLike,
    sigma_y: ArrayLike,
    size: Size,
    shown: ArrayLike | None = None,
) -> np.ndarray:
    """A ``(W, H)`` density summing to 1: ``sum_i weight_i N((x_i, y_i), diag(sigma_x_i^2, sigma_y_i^2))``.

    Args:
        x, y: fixation positions in the map's pixel coordinates (one per fixation).
        weight: non-negative weight of each fixation (its duration).
        sigma_x, sigma_y: positive Gaussian sigma of each fixation along x and y, in pixels (scalars broadcast).
        size: (W, H) of the map.
        shown: optional (N, 4) ``x1, y1, x2, y2`` per fixation: the part of the image on screen during it, outside
            of which its Gaussian is zero.

    Raises:
        ValueError: lengths differ, a sigma is not positive, a weight is negative, or the map has no mass.
    """
    x, y, weight, sigma_x, sigma_y = np.broadcast_arrays(
        *(np.atleast_1d(np.asarray(v, dtype=float)) for v in (x, y, weight, sigma_x, sigma_y))
    )
    if x.ndim != 1:
        raise ValueError(f"fixation arrays must be 1D, got shape {x.shape}")
    if (sigma_x <= 0).any() or (sigma_y <= 0).any():
        raise ValueError("every sigma must be positive")
    if (weight < 0).any():
        raise ValueError("fixation weights must be non-negative")
    rect = np.asarray(shown, dtype=float).reshape(-1, 4) if shown is not None else None
    if rect is not None and len(rect) != len(x):
        raise ValueError(f"{len(rect)} shown rectangles for {len(x)} fixations")
    width, height = size
    gx = _axis_gaussians(x, sigma_x, width, *((rect[:, 0], rect[:, 2]) if rect is not None else (None, None)))
    gy = _axis_gaussians(y, sigma_y, height, *((rect[:, 1], rect[:, 3]) if rect is not None else (None, None)))
    density = (gx * weight[:, None]).T @ gy
    total = float(density.sum())
    if not total > 0:
        raise ValueError(f"the gaze map of {len(x)} fixation(s) has no mass inside the {width}x{height} map")
    return density / total


def fixation_map(x: ArrayLike, y: ArrayLike, size: Size) -> np.ndarray:
    """Boolean ``(W, H)`` map, True at the pixels holding a fixation (pixel ``floor(x), floor(y)``).

    Raises:
        ValueError: a fixation lies outside the map.
    """
    col, row = np.floor(np.asarray(x, dtype=float)).astype(int), np.floor(np.asarray(y, dtype=float)).astype(int)
    width, height = size
    outside = (col < 0) | (col >= width) | (row < 0) | (row >= height)
    if outside.any():
        raise ValueError(f"{int(outside.sum())} fixation(s) outside the {width}x{height} map")
    fixated = np.zeros((width, height), dtype=bool)
    fixated[col, row] = True
    return fixated


def load_fixation_map(path: str | Path, original_size: Size, size: Size) -> np.ndarray:
    """A fixations file (``.npy`` of shape (N, 2+): x, y in the pixels of the ``original_size`` image, then
    anything, e.g. duration) as the boolean ``(W, H)`` fixation map of the image resized to ``size``.

    Raises:
        SaliencyMapError: the file is missing or unreadable, not (N, 2+), holds NaN or infinite positions, no
            fixation, or a fixation outside the original image.
    """
    path = Path(path)
    if not path.is_file():
        raise SaliencyMapError(f"{path}: file not found")
    try:
        points = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as err:
        raise SaliencyMapError(f"{path}: not a readable .npy array of fixations ({err})") from err
    if points.ndim != 2 or points.shape[1] < 2 or not np.issubdtype(points.dtype, np.number):
        raise SaliencyMapError(f"{path}: fixations are an (N, 2+) numeric array of x, y; got {points.dtype} "
                               f"of shape {points.shape}")
    if not len(points):
        raise SaliencyMapError(f"{path}: holds no fixation")
    xy = points[:, :2].astype(float)
    if not np.isfinite(xy).all():
        raise SaliencyMapError(f"{path}: holds NaN or infinite fixation positions")
    limit = np.asarray(original_size, dtype=float)
    outside = ((xy < 0) | (xy >= limit)).any(1)
    if outside.any():
        raise SaliencyMapError(f"{path}: {int(outside.sum())} fixation(s) outside the {limit[0]:g}x{limit[1]:g} "
                               "image they were recorded on")
    scaled = np.minimum(xy * (np.asarray(size, dtype=float) / limit), np.asarray(size) - 1e-6)
    return fixation_map(scaled[:, 0], scaled[:, 1], size)


def center_bias_map(size: Size, sigma_fraction: float = CENTER_SIGMA_FRACTION) -> np.ndarray:
    """The centre-bias baseline: one Gaussian at the image centre, sigma ``sigma_fraction`` of the width along x and
    of the height along y, normalised to sum 1 (observers look near the centre, Judd et al., ICCV 2009)."""
    width, height = size
    return gaze_map(width / 2, height / 2, 1.0, sigma_fraction * width, sigma_fraction * height, size)


def resize_map(values: np.ndarray, size: Size) -> np.ndarray:
    """A ``(W, H)`` map resampled to ``size`` (bilinear, antialiased when shrinking) and normalised to sum 1."""
    if values.shape != tuple(size):
        image = Image.fromarray(np.ascontiguousarray(values.T, dtype=np.float32))
        values = np.asarray(image.resize(tuple(size), Image.Resampling.BILINEAR), dtype=float).T
    values = np.clip(values, 0, None)
    return values / values.sum()


def _read_rows_first(path: Path) -> np.ndarray:
    """The (rows, columns) array of a PNG or ``.npy`` saliency map file."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise SaliencyMapError(f"{path}: cannot read the .npy file ({err})") from err
    if suffix != ".png":
        raise SaliencyMapError(f"{path}: a saliency map must be a .png (8/16-bit grey) or a .npy file")
    try:
        with Image.open(path) as image:
            if image.mode not in GREY_MODES:
                raise SaliencyMapError(
                    f"{path}: is a {image.mode} image; a saliency map has one grey channel (8 or 16-bit)"
                )
            return np.asarray(image)
    except (OSError, SyntaxError) as err:
        raise SaliencyMapError(f"{path}: cannot decode the PNG ({err})") from err


def load_saliency_map(path: str | Path, size: Size | None = None) -> np.ndarray:
    """A saliency map file (PNG or ``.npy``, rows first) as a float ``(W, H)`` array summing to 1.

    Args:
        path: the file; any non-negative values, not all zero (a 16-bit gaze map, a model's heat map, ...).
        size: (W, H) to resample the map to (:func:`resize_map`); None keeps the file's size.

    Raises:
        SaliencyMapError: the file is missing or unreadable, not 2D, or holds NaN, infinite or negative values,
            or only zeros.
    """
    path = Path(path)
    if not path.is_file():
        raise SaliencyMapError(f"{path}: file not found")
    raw = _read_rows_first(path)
    if raw.ndim != 2:
        raise SaliencyMapError(f"{path}: a saliency map is 2D (rows, columns); this one has shape {raw.shape}")
    if not (np.issubdtype(raw.dtype, np.number) or raw.dtype == bool):
        raise SaliencyMapError(f"{path}: holds {raw.dtype} values, not numbers")
    values = raw.astype(float).T
    if not np.isfinite(values).all():
        raise SaliencyMapError(f"{path}: holds {int((~np.isfinite(values)).sum())} NaN or infinite value(s)")
    if (values < 0).any():
        raise SaliencyMapError(f"{path}: holds negative values (minimum {values.min():g}); a saliency map is >= 0")
    if not values.sum() > 0:
        raise SaliencyMapError(f"{path}: is all zero; a saliency map needs a positive sum to be normalised")
    return resize_map(values, size) if size is not None else values / values.sum()


def save_saliency_map(values: np.ndarray, path: str | Path) -> Path:
    """Write a ``(W, H)`` map rows first: ``.png`` as 16-bit grey scaled to its maximum (values below
    1/131070 of the peak become 0), ``.npy`` as float32."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows_first = np.asarray(values, dtype=float).T
    if path.suffix.lower() == ".npy":
        np.save(path, rows_first.astype(np.float32))
    elif path.suffix.lower() == ".png":
        peak = rows_first.max()
        if not peak > 0:
            raise ValueError(f"{path}: the map has no positive value to write")
        Image.fromarray(np.round(rows_first / peak * UINT16_MAX).astype(np.uint16)).save(path)
    else:
        raise ValueError(f"{path}: saliency maps are written as .png or .npy")
    return path


def mean_gaze_map(paths: Iterable[str | Path], size: Size) -> np.ndarray:
    """The image-agnostic baseline: the mean of the (training) saliency maps at ``paths``, each resampled to
    ``size`` and normalised, as a ``(W, H)`` map summing to 1.

    Raises:
        ValueError: no path is given.
        SaliencyMapError: a map is unusable (:func:`load_saliency_map`).
    """
    total, count = np.zeros(tuple(size)), 0
    for path in paths:
        total += load_saliency_map(path, size)
        count += 1
    if not count:
        raise ValueError("mean_gaze_map needs at least one saliency map")
    return total / count
