"""Readers of the radiologist eye-tracking sets in their published PhysioNet layouts, each returning datalist entries.

Every image gets a gaze map (:func:`bundle.data.gaze.gaze_map`: a Gaussian of ``sigma_degrees`` of visual angle
per fixation, weighted by its duration) written under ``converted_dir/saliency`` and its fixations written as an
(N, 3) ``.npy`` (x, y in the image's pixels, duration in seconds) under ``converted_dir/fixations``. An entry has
``image``, ``patient_id``, ``saliency``, ``fixations`` and ``source_labels`` (the set's own image labels).

- EGD-CXR (Karargyris et al., "Creation and validation of a chest X-ray dataset with eye-tracking and report
  dictation for AI development", Sci Data 2021; PhysioNet egd-cxr 1.0.0): ``fixations.csv`` (or the raw
  ``eye_gaze.csv``) with ``DICOM_ID``, ``X_ORIGINAL``, ``Y_ORIGINAL`` (original image pixels) and ``FPOGD``
  (fixation duration, s; where ``FPOGID`` repeats within an image, as in ``eye_gaze.csv``, its row of longest
  ``FPOGD`` is the fixation), and ``master_sheet.csv`` with ``dicom_id``, ``patient_id``, ``Normal``, ``CHF``,
  ``pneumonia``. EGD gives no angular resolution: its images were shown resized to
  :data:`EGD_DISPLAY_SIDE` pixels on their longest side (the dataset's ``image_preparation.py``), at an
  *assumed* :data:`EGD_SCREEN_PIXELS_PER_DEGREE` screen pixels per degree.
- REFLACX (Bigolin Lanfredi et al., "REFLACX, a dataset of reports and eye-tracking data for localization of
  abnormalities in chest x-rays", Sci Data 2022; PhysioNet reflacx-xray-localization 1.0.0):
  ``main_data/metadata_phase_<n>.csv`` (one row per reading: ``id``, ``eye_tracking_data_discarded``,
  ``dicom_id``, ``subject_id``, ``image_size_x``, ``image_size_y`` and label columns) and
  ``main_data/<id>/fixations.csv`` (``x_position``, ``y_position`` in image pixels, ``timestamp_start_fixation``,
  ``timestamp_end_fixation`` in s, ``angular_resolution_x/y_pixels_per_degree`` in image pixels, and the part of
  the image on screen, ``x/ymin/max_shown_from_image``, outside of which a fixation's Gaussian is cut, as the
  REFLACX heat maps are). The readings of one image (several radiologists in phases 1 and 2) are pooled: its
  map is the mean of the readings' maps and its labels the mean of theirs.

Fixations outside the image (for REFLACX, outside the part shown) and fixations of zero duration are dropped and
counted (:attr:`GazeResult.dropped`); an image left without a fixation is skipped with the reason. Images are
found by ``dicom_id`` (the file stem) anywhere under ``images_dir``, with the ``on_missing`` convention of
:mod:`bundle.data.sources`.

Neither set was available when these readers were written: they follow the published column definitions and are
tested on small files the tests write in that format, not on the real files.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from .gaze import Size, gaze_map, save_saliency_map
from .sources import ImageIndex, OnMissing, SourceError, SourceResult, _float, image_size, read_csv

#: Default Gaussian sigma of a fixation, in degrees of visual angle (the MIT benchmark's and REFLACX's choice).
SIGMA_DEGREES: float = 1.0
#: Default longest side of the written gaze maps, in pixels (None writes them at the image's size).
MAP_SIZE: int = 512
EGD_LABELS: tuple[str, ...] = ("Normal", "CHF", "pneumonia")
#: Longest side of an EGD image on screen, in display pixels (resize_pad in the EGD image_preparation.py).
EGD_DISPLAY_SIDE: int = 1024
#: Assumed display pixels per degree of visual angle for EGD (a 1920 x 1080 screen of about 0.28 mm pixels seen
#: from about 65 cm); the dataset does not give it.
EGD_SCREEN_PIXELS_PER_DEGREE: float = 40.0
REFLACX_METADATA: tuple[str, ...] = (
    "id", "eye_tracking_data_discarded", "dicom_id", "subject_id", "image_size_x", "image_size_y"
)
#: Metadata columns that are not image labels (``Other`` is free text).
REFLACX_NOT_LABELS: frozenset[str] = frozenset({*REFLACX_METADATA, "split", "image", "Other"})
REFLACX_FIXATIONS: tuple[str, ...] = (
    "x_position", "y_position", "timestamp_start_fixation", "timestamp_end_fixation",
    "angular_resolution_x_pixels_per_degree", "angular_resolution_y_pixels_per_degree",
    "xmin_shown_from_image", "ymin_shown_from_image", "xmax_shown_from_image", "ymax_shown_from_image",
)
OUTSIDE = "fixations outside the image"
ZERO_DURATION = "fixations of zero duration"
DISCARDED = "readings with eye-tracking data discarded"
NO_FIXATION = "readings without a usable fixation"
MapFormat = Literal["png", "npy"]


@dataclass
class GazeResult(SourceResult):
    """Entries, skipped images, and the number of fixations and readings dropped, by reason."""

    dropped: Counter[str] = field(default_factory=Counter)


@dataclass
class Fixations:
    """Fixations of one reading in the original image's pixels: position, duration (s), Gaussian sigma (pixels),
    and the part of the image on screen (N, 4: x1, y1, x2, y2) when known."""

    x: np.ndarray
    y: np.ndarray
    duration: np.ndarray
    sigma_x: np.ndarray
    sigma_y: np.ndarray
    shown: np.ndarray | None = None

    def select(self, keep: np.ndarray) -> Fixations:
        """The fixations where ``keep`` is True."""
        shown = self.shown[keep] if self.shown is not None else None
        return Fixations(self.x[keep], self.y[keep], self.duration[keep], self.sigma_x[keep], self.sigma_y[keep], shown)

    def usable(self, size: Size, dropped: Counter[str]) -> Fixations:
        """The fixations inside the image (and the part shown) with a positive duration; the others counted."""
        width, height = size
        inside = (self.x >= 0) & (self.x < width) & (self.y >= 0) & (self.y < height)
        if self.shown is not None:
            x1, y1, x2, y2 = self.shown.T
            inside &= (self.x >= x1) & (self.x < x2) & (self.y >= y1) & (self.y < y2)
        positive = self.duration > 0
        dropped[OUTSIDE] += int((~inside).sum())
        dropped[ZERO_DURATION] += int((inside & ~positive).sum())
        return self.select(inside & positive)


def map_shape(size: Size, map_size: int | None) -> Size:
    """(W, H) of a gaze map of an image of ``size``: ``map_size`` pixels on its longest side (None: ``size``)."""
    if map_size is None:
        return size
    scale = map_size / max(size)
    return max(1, round(size[0] * scale)), max(1, round(size[1] * scale))


def _draw(fixations: Fixations, size: Size, shape: Size, where: str) -> np.ndarray:
    """The gaze map of one reading's fixations (image pixels) at ``shape``."""
    sx, sy = shape[0] / size[0], shape[1] / size[1]
    shown = fixations.shown * np.array([sx, sy, sx, sy]) if fixations.shown is not None else None
    try:
        return gaze_map(fixations.x * sx, fixations.y * sy, fixations.duration, fixations.sigma_x * sx,
                        fixations.sigma_y * sy, shape, shown)
    except ValueError as err:
        raise SourceError(f"{where}: {err}") from err


def _write_maps(
    converted: Path, name: str, readings: list[tuple[str, Fixations]], size: Size, map_size: int | None,
    map_format: MapFormat,
) -> dict[str, str]:
    """Write the mean gaze map of the readings and their fixations; the entry's ``saliency`` and ``fixations``."""
    shape = map_shape(size, map_size)
    density = np.mean([_draw(fixations, size, shape, where) for where, fixations in readings], axis=0)
    saliency = save_saliency_map(density, converted / "saliency" / f"{name}.{map_format}")
    points = np.concatenate([np.stack([f.x, f.y, f.duration], axis=1) for _, f in readings]).astype(np.float32)
    fixations = converted / "fixations" / f"{name}.npy"
    fixations.parent.mkdir(parents=True, exist_ok=True)
    np.save(fixations, points)
    return {"saliency": str(saliency), "fixations": str(fixations)}


def _label(value: str, where: str, column: str) -> int | float | None:
    """A label cell: True/False as 1/0, a number, or None when empty."""
    value = value.strip()
    if not value:
        return None
    if value.lower() in ("true", "false"):
        return int(value.lower() == "true")
    number = _float(value, where, column)
    return int(number) if number.is_integer() else number


def _check_width(row: list[str], header: list[str], where: str) -> None:
    if len(row) < len(header):
        raise SourceError(f"{where}: {len(row)} fields, the header has {len(header)}")


def read_egd_fixations(path: str | Path) -> dict[str, np.ndarray]:
    """EGD ``fixations.csv`` or ``eye_gaze.csv``: DICOM_ID to an (N, 3) array of X_ORIGINAL, Y_ORIGINAL, FPOGD.

    Rows sharing an ``FPOGID`` within one DICOM_ID are one fixation: its row of longest FPOGD is kept.

    Raises:
        SourceError: a column is missing, or a row has a non-numeric or negative value (file and line named).
    """
    names = ("DICOM_ID", "X_ORIGINAL", "Y_ORIGINAL", "FPOGD")
    header, rows = read_csv(path, names)
    col = {name: header.index(name) for name in names}
    fixation_id = header.index("FPOGID") if "FPOGID" in header else None
    found: dict[str, dict[str | int, tuple[float, float, float]]] = {}
    for line, row in enumerate(rows, start=2):
        if not row:
            continue
        where = f"{path} line {line}"
        _check_width(row, header, where)
        x, y, duration = (_float(row[col[name]], where, name) for name in names[1:])
        if duration < 0:
            raise SourceError(f"{where}: FPOGD (fixation duration) is negative: {duration:g}")
        fixations = found.setdefault(row[col["DICOM_ID"]].strip(), {})
        key = row[fixation_id].strip() if fixation_id is not None else line
        if key not in fixations or duration > fixations[key][2]:
            fixations[key] = (x, y, duration)
    return {dicom: np.array(list(by_id.values()), dtype=float) for dicom, by_id in found.items()}


def egd(
    master_sheet: str | Path,
    fixations_csv: str | Path,
    images_dir: str | Path,
    converted_dir: str | Path,
    sigma_degrees: float = SIGMA_DEGREES,
    screen_pixels_per_degree: float = EGD_SCREEN_PIXELS_PER_DEGREE,
    map_size: int | None = MAP_SIZE,
    map_format: MapFormat = "png",
    on_missing: OnMissing = "error",
) -> GazeResult:
    """EGD-CXR: one gaze map per ``master_sheet.csv`` image from ``fixations_csv``, sigma ``sigma_degrees`` at
    ``max(W, H) / 1024 * screen_pixels_per_degree`` image pixels per degree (an assumption, see the module).

    Raises:
        SourceError: a file or row is unusable, a DICOM_ID of the fixations is not in the master sheet, images are
            missing (with ``on_missing='error'``), or ``on_missing='ignore'`` (the image sizes come from the files).
    """
    if on_missing == "ignore":
        raise SourceError("egd: the gaze maps need each image's size, read from its file: use on_missing 'error' or "
                          "'skip', not 'ignore'")
    header, rows = read_csv(master_sheet, ["dicom_id", "patient_id", *EGD_LABELS])
    col = {name: header.index(name) for name in ("dicom_id", "patient_id", *EGD_LABELS)}
    fixations = read_egd_fixations(fixations_csv)
    unknown = sorted(set(fixations) - {row[col["dicom_id"]].strip() for row in rows if row})
    if unknown:
        raise SourceError(f"{fixations_csv}: {len(unknown)} DICOM_ID(s) not in {master_sheet}, e.g. {unknown[0]}: "
                          "are both files of the same EGD-CXR release?")
    index = ImageIndex(images_dir, on_missing)
    entries: list[dict[str, Any]] = []
    skipped: list[str] = []
    dropped: Counter[str] = Counter()
    for line, row in enumerate(rows, start=2):
        if not row:
            continue
        where = f"{master_sheet} line {line}"
        _check_width(row, header, where)
        dicom = row[col["dicom_id"]].strip()
        labels = {name: _label(row[col[name]], where, name) for name in EGD_LABELS}
        path = index.find(dicom, by_stem=True)
        if path is None:
            continue
        size = image_size(path)
        points = fixations.get(dicom, np.zeros((0, 3)))
        sigma = np.full(len(points), sigma_degrees * max(size) / EGD_DISPLAY_SIDE * screen_pixels_per_degree)
        usable = Fixations(points[:, 0], points[:, 1], points[:, 2], sigma, sigma).usable(size, dropped)
        if not len(usable.x):
            skipped.append(f"{dicom}: no fixation inside the image with a positive duration in {fixations_csv}")
            continue
        entry: dict[str, Any] = {"image": str(path), "patient_id": row[col["patient_id"]].strip()}
        entry.update(_write_maps(Path(converted_dir), dicom, [(f"{fixations_csv} ({dicom})", usable)], size,
                                 map_size, map_format))
        entry["source_labels"] = {name: value for name, value in labels.items() if value is not None}
        entries.append(entry)
    result = index.result(entries, master_sheet)
    return GazeResult(result.entries, result.skipped + skipped, dropped=dropped)


def read_reflacx_fixations(path: Path, sigma_degrees: float = SIGMA_DEGREES) -> Fixations:
    """A REFLACX reading's ``fixations.csv`` (an empty file has no fixations), sigma ``sigma_degrees`` times the
    row's angular resolution.

    Raises:
        SourceError: the file or a column is missing, or a row has a non-numeric value, ends before it starts or
            has a non-positive angular resolution (file and line named).
    """
    if not path.is_file():
        raise SourceError(f"{path}: not found; the metadata lists reading {path.parent.name} with eye-tracking data "
                          "(eye_tracking_data_discarded False)")
    values: list[list[float]] = []
    if path.stat().st_size:
        header, rows = read_csv(path, REFLACX_FIXATIONS)
        col = [header.index(name) for name in REFLACX_FIXATIONS]
        for line, row in enumerate(rows, start=2):
            if not row:
                continue
            where = f"{path} line {line}"
            _check_width(row, header, where)
            value = [_float(row[c], where, name) for c, name in zip(col, REFLACX_FIXATIONS)]
            if value[3] < value[2]:
                raise SourceError(f"{where}: timestamp_end_fixation {value[3]:g} is before timestamp_start_fixation "
                                  f"{value[2]:g}")
            if min(value[4], value[5]) <= 0:
                raise SourceError(f"{where}: angular resolution must be positive, got {value[4]:g}, {value[5]:g}")
            values.append(value)
    table = np.array(values, dtype=float).reshape(-1, len(REFLACX_FIXATIONS))
    return Fixations(table[:, 0], table[:, 1], table[:, 3] - table[:, 2], sigma_degrees * table[:, 4],
                     sigma_degrees * table[:, 5], table[:, 6:10])


@dataclass
class _ReflacxImage:
    """The readings of one REFLACX image: patient, size, where first listed, labels and gaze readings."""

    subject: str
    size: Size
    where: str
    labels: list[dict[str, int | float]] = field(default_factory=list)
    readings: list[str] = field(default_factory=list)


def _discarded(value: str, where: str) -> bool:
    flag = value.strip().lower()
    if flag not in ("true", "false"):
        raise SourceError(f"{where}: eye_tracking_data_discarded must be True or False, got {value!r}")
    return flag == "true"


def read_reflacx_metadata(main_data: Path, dropped: Counter[str]) -> dict[str, _ReflacxImage]:
    """All ``metadata_phase_<n>.csv`` tables of ``main_data``: dicom_id to its readings; discarded ones counted."""
    tables = sorted(main_data.glob("metadata_phase_*.csv"))
    if not tables:
        raise SourceError(f"{main_data}: no metadata_phase_<n>.csv (is it REFLACX's main_data folder?)")
    images: dict[str, _ReflacxImage] = {}
    for table in tables:
        header, rows = read_csv(table, REFLACX_METADATA)
        col = {name: header.index(name) for name in REFLACX_METADATA}
        label_columns = [(i, name) for i, name in enumerate(header) if name not in REFLACX_NOT_LABELS]
        for line, row in enumerate(rows, start=2):
            if not row:
                continue
            where = f"{table} line {line}"
            _check_width(row, header, where)
            dicom, subject = row[col["dicom_id"]].strip(), row[col["subject_id"]].strip()
            size = tuple(int(_float(row[col[name]], where, name)) for name in ("image_size_x", "image_size_y"))
            image = images.setdefault(dicom, _ReflacxImage(subject, size, where))
            if (subject, size) != (image.subject, image.size):
                raise SourceError(f"{where}: dicom_id {dicom} has subject_id {subject} and size {size}, but "
                                  f"{image.subject} and {image.size} at {image.where}")
            labels = {name: _label(row[i], where, name) for i, name in label_columns}
            image.labels.append({name: value for name, value in labels.items() if value is not None})
            if _discarded(row[col["eye_tracking_data_discarded"]], where):
                dropped[DISCARDED] += 1
            else:
                image.readings.append(row[col["id"]].strip())
    return images


def _mean_labels(readings: list[dict[str, int | float]]) -> dict[str, int | float]:
    """Each label's mean over the readings that grade it (an integer stays one)."""
    names = dict.fromkeys(name for labels in readings for name in labels)
    means = {name: float(np.mean([labels[name] for labels in readings if name in labels])) for name in names}
    return {name: int(value) if value.is_integer() else round(value, 3) for name, value in means.items()}


def reflacx(
    main_data: str | Path,
    images_dir: str | Path,
    converted_dir: str | Path,
    sigma_degrees: float = SIGMA_DEGREES,
    map_size: int | None = MAP_SIZE,
    map_format: MapFormat = "png",
    on_missing: OnMissing = "error",
) -> GazeResult:
    """REFLACX: one gaze map per image (``dicom_id``), the mean of its readings' maps; ``patient_id`` is the
    ``subject_id``. An image whose file is found must have the metadata's ``image_size_x`` x ``image_size_y``.

    Raises:
        SourceError: a file or row is unusable, a reading's fixations.csv is missing, an image's size differs from
            the metadata, or images are missing (with ``on_missing='error'``).
    """
    main_data = Path(main_data)
    dropped: Counter[str] = Counter()
    images = read_reflacx_metadata(main_data, dropped)
    index = ImageIndex(images_dir, on_missing)
    entries: list[dict[str, Any]] = []
    skipped: list[str] = []
    for dicom, image in images.items():
        path = index.find(dicom, by_stem=True)
        if path is None:
            continue
        if on_missing != "ignore" and image_size(path) != image.size:
            raise SourceError(f"{path}: is {image_size(path)[0]}x{image_size(path)[1]} pixels, REFLACX gives "
                              f"{image.size[0]}x{image.size[1]} ({image.where}): is it the MIMIC-CXR DICOM?")
        readings = []
        for reading in image.readings:
            file = main_data / reading / "fixations.csv"
            usable = read_reflacx_fixations(file, sigma_degrees).usable(image.size, dropped)
            if len(usable.x):
                readings.append((str(file), usable))
            else:
                dropped[NO_FIXATION] += 1
        if not readings:
            reason = "eye-tracking data discarded in every reading" if not image.readings else (
                f"no fixation inside the image with a positive duration in its {len(image.readings)} reading(s)")
            skipped.append(f"{dicom}: {reason}")
            continue
        entry: dict[str, Any] = {"image": str(path), "patient_id": image.subject}
        entry.update(_write_maps(Path(converted_dir), dicom, readings, image.size, map_size, map_format))
        entry["readings"] = [Path(file).parent.name for file, _ in readings]
        entry["source_labels"] = _mean_labels(image.labels)
        entries.append(entry)
    result = index.result(entries, main_data)
    return GazeResult(result.entries, result.skipped + skipped, dropped=dropped)
