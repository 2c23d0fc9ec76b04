"""Synthetic radiologist gaze for the demo data set: where a reader looks on each phantom.

Each image is read by one of :data:`READERS` (chosen per image): some fixations fall on the lesions the
datalist records (opacity boxes, pneumothorax mask pixels), the rest scan both lung fields, with the reader's
own spread, number of fixations and a small systematic offset. Durations are gamma-distributed, longer on
lesions. The fixations become gaze maps (:func:`bundle.data.gaze.gaze_map`, one Gaussian per fixation weighted
by its duration), written as ``gaze/<stem>.npy`` with the fixations as ``fixations/<stem>.npy`` ((N, 3): x, y
in pixels, duration in seconds, the layout of :mod:`bundle.data.gaze_sources`), and a copy of the datalist with
``saliency`` and ``fixations`` keys, ``datalist_gaze.json``. Synthetic, like the images: a functional check of the
saliency head, not a model of real reading.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .gaze import gaze_map, save_saliency_map

#: The gaze datalist written beside the demo datalist.
GAZE_DATALIST_NAME = "datalist_gaze.json"
#: Version of the simulation; a datalist made by another version is rebuilt.
GAZE_VERSION = 1


@dataclass(frozen=True)
class Reader:
    """How one simulated reader looks at an image.

    Args:
        lesion_share: fraction of the fixations on a lesion, when the image has one.
        fixations: (min, max) number of fixations per image.
        sigma_fraction: Gaussian sigma of a fixation as a fraction of the image side (about 1 degree of visual
            angle at a reading distance).
        jitter_fraction: spread of the fixations around their target, as a fraction of the side.
        offset_fraction: the reader's systematic (x, y) offset, as a fraction of the side.
    """

    lesion_share: float
    fixations: tuple[int, int]
    sigma_fraction: float
    jitter_fraction: float
    offset_fraction: tuple[float, float]


#: Three readers: a focused one, a systematic scanner and one in between.
READERS: tuple[Reader, ...] = (
    Reader(0.75, (12, 24), 0.035, 0.02, (0.01, -0.01)),
    Reader(0.45, (25, 45), 0.030, 0.03, (-0.015, 0.0)),
    Reader(0.60, (18, 32), 0.040, 0.025, (0.0, 0.015)),
)
#: Lung fields scanned by the readers: (centre x, centre y, radius x, radius y) as fractions of the side.
LUNG_FIELDS: tuple[tuple[float, float, float, float], ...] = ((0.32, 0.45, 0.13, 0.24), (0.68, 0.45, 0.13, 0.24))


def lesion_points(boxes: np.ndarray, mask: np.ndarray | None, rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` (x, y) points on the lesions: uniformly inside a random box or on a random mask pixel (the
    mask as a whole counts as one lesion). (0, 2) when there is no lesion."""
    lesions: list[np.ndarray] = [np.asarray(b, dtype=float) for b in boxes]
    pixels = np.argwhere(mask > 0) if mask is not None else np.zeros((0, 2))  # (row, col)
    if len(pixels):
        lesions.append(pixels)
    if not lesions or count == 0:
        return np.zeros((0, 2))
    points = []
    for pick in rng.integers(len(lesions), size=count):
        lesion = lesions[pick]
        if lesion.ndim == 1:  # a box, x1 y1 x2 y2
            points.append([rng.uniform(lesion[0], lesion[2]), rng.uniform(lesion[1], lesion[3])])
        else:
            row, col = lesion[rng.integers(len(lesion))]
            points.append([col + 0.5, row + 0.5])
    return np.asarray(points)


def lung_points(size: int, rng: np.random.Generator, count: int) -> np.ndarray:
    """``count`` (x, y) points spread over the two lung fields (uniform in their ellipses)."""
    fields = np.asarray(LUNG_FIELDS)[rng.integers(len(LUNG_FIELDS), size=count)]
    angle, radius = rng.uniform(0, 2 * np.pi, count), np.sqrt(rng.uniform(0, 1, count))
    x = fields[:, 0] + fields[:, 2] * radius * np.cos(angle)
    y = fields[:, 1] + fields[:, 3] * radius * np.sin(angle)
    return np.stack([x, y], axis=1) * size


def simulate_reading(
    boxes: np.ndarray, mask: np.ndarray | None, size: int, reader: Reader, rng: np.random.Generator
) -> np.ndarray:
    """(N, 3) fixations (x, y in pixels inside the image, duration in seconds) of ``reader`` on one image."""
    count = int(rng.integers(reader.fixations[0], reader.fixations[1] + 1))
    has_lesion = len(boxes) > 0 or (mask is not None and bool(mask.any()))
    on_lesion = int(rng.binomial(count, reader.lesion_share)) if has_lesion else 0
    points = np.concatenate([lesion_points(boxes, mask, rng, on_lesion), lung_points(size, rng, count - on_lesion)])
    points = points + rng.normal(0.0, reader.jitter_fraction * size, points.shape)
    points = points + np.asarray(reader.offset_fraction) * size
    points = np.clip(points, 0.0, size - 1e-3)
    durations = rng.gamma(2.0, 0.12, count) * np.where(np.arange(count) < on_lesion, 1.6, 1.0)
    return np.column_stack([points, durations])


def _read_mask(path: Path) -> np.ndarray:
    with Image.open(path) as image:
        return np.asarray(image.convert("L")) > 0


def add_demo_gaze(datalist: str | Path, seed: int = 0) -> Path:
    """Write the gaze maps, fixations and ``datalist_gaze.json`` for the demo datalist ``datalist`` (made by
    :func:`bundle.data.make_demo_dataset`, square images); return the gaze datalist's path. An existing one
    made from the same datalist, seed and version is reused."""
    datalist = Path(datalist)
    root = datalist.parent
    content = json.loads(datalist.read_text())
    size = int(content["generator"]["size"])
    stamp = {"seed": seed, "version": GAZE_VERSION, "source": content["generator"]}
    target = root / GAZE_DATALIST_NAME
    if target.is_file():
        try:
            if json.loads(target.read_text()).get("gaze_generator") == stamp:
                return target
        except ValueError:
            pass
    for split in ("training", "validation", "testing"):
        for index, entry in enumerate(content.get(split, [])):
            stem = Path(entry["image"]).stem
            rng = np.random.default_rng([seed, sum(map(ord, split)), index])
            reader = READERS[int(rng.integers(len(READERS)))]
            mask = _read_mask(root / entry["mask"]) if "mask" in entry else None
            boxes = np.asarray(entry.get("boxes", []), dtype=float).reshape(-1, 4)
            fixations = simulate_reading(boxes, mask, size, reader, rng)
            sigma = reader.sigma_fraction * size
            values = gaze_map(fixations[:, 0], fixations[:, 1], fixations[:, 2], sigma, sigma, (size, size))
            entry["saliency"] = str(save_saliency_map(values, root / "gaze" / f"{stem}.npy").relative_to(root))
            fixation_file = root / "fixations" / f"{stem}.npy"
            fixation_file.parent.mkdir(parents=True, exist_ok=True)
            np.save(fixation_file, fixations.astype(np.float32))
            entry["fixations"] = str(fixation_file.relative_to(root))
    content["gaze_generator"] = stamp
    partial = target.with_suffix(".partial")
    partial.write_text(json.dumps(content, indent=1) + "\n")
    os.replace(partial, target)
    return target
