"""Physical geometry of an input image, the one place where pixels become millimetres.

Two spacings, for two jobs:

- :class:`ImageGeometry` is the image as ITK reads it (``itk.imread``; what 3D Slicer shows): origin, spacing
  and direction in LPS. Mask volumes and box markups are written in it, so that they overlay the source. A PNG
  has origin 0, spacing 1, identity direction; a JPEG gets ITK's spacing from its JFIF density; a DICOM gets
  ImagePositionPatient / ImageOrientationPatient when present (else origin 0, identity) and the spacing ITK's
  GDCM reader picks (PixelSpacing for most classes, ImagerPixelSpacing for CR/DX/mammography, else 1).
- :func:`measurement_spacing` is the DICOM pixel size that box sizes in mm are reported in: PixelSpacing, else
  ImagerPixelSpacing; None for PNG/JPEG/NIfTI, whose pixels have no physical size we can vouch for.

Pixel conventions: a mask array is indexed ``[x, y]`` (x = column), as ITK's index ``(i, j)``; a box
``[x1, y1, x2, y2]`` is in pixel-edge coordinates where pixel ``i`` covers ``[i, i + 1)``, so the continuous
ITK index of box coordinate ``c`` is ``c - 0.5`` (ITK puts index ``i`` at the pixel centre).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import itk
import numpy as np
import pydicom

from bundle.data.readers import CXRDicomReader, dicom_pixel_spacing_source, reader_for

#: LPS (ITK, DICOM, NRRD "left-posterior-superior") to RAS (NIfTI) and back: x and y change sign.
LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


@dataclass(frozen=True)
class ImageGeometry:
    """A 2D image as a single-slice volume in LPS millimetres, as ITK reads it.

    Attributes:
        size: pixels along x (columns) and y (rows).
        spacing: mm per pixel along the three index axes.
        origin: LPS position of the centre of pixel (0, 0).
        direction: row-major 3x3 matrix whose columns are the LPS directions of the index axes.
    """

    size: tuple[int, int]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: tuple[float, ...]

    @property
    def matrix(self) -> np.ndarray:
        """The 3x3 direction matrix."""
        return np.asarray(self.direction, dtype=np.float64).reshape(3, 3)

    @property
    def affine_lps(self) -> np.ndarray:
        """4x4 map from index (i, j, k) to LPS millimetres."""
        affine = np.eye(4)
        affine[:3, :3] = self.matrix * np.asarray(self.spacing)
        affine[:3, 3] = self.origin
        return affine

    @property
    def affine_ras(self) -> np.ndarray:
        """4x4 map from index (i, j, k) to RAS millimetres (NIfTI's convention)."""
        return LPS_TO_RAS @ self.affine_lps

    def index_to_lps(self, index: Sequence[float]) -> np.ndarray:
        """LPS point of a continuous ITK index (i, j) or (i, j, k)."""
        ijk = np.zeros(3)
        ijk[: len(index)] = index
        return self.affine_lps[:3, :3] @ ijk + self.affine_lps[:3, 3]

    def box_to_lps(self, box: Sequence[float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Centre (LPS), size (mm along the box axes) and axes (3x3, columns, a rotation) of a pixel box.

        The box is one slice thick; its axes are the image's index axes, the third flipped when the image
        direction is a reflection, so that the axes always form a proper rotation.
        """
        x1, y1, x2, y2 = (float(c) for c in box)
        centre = self.index_to_lps(((x1 + x2) / 2 - 0.5, (y1 + y2) / 2 - 0.5))
        size = np.array([(x2 - x1) * self.spacing[0], (y2 - y1) * self.spacing[1], self.spacing[2]])
        axes = self.matrix.copy()
        if np.linalg.det(axes) < 0:
            axes[:, 2] = -axes[:, 2]
        return centre, size, axes

    def as_record(self) -> dict[str, list[float]]:
        """JSON-ready description (LPS)."""
        return {"origin_lps": list(self.origin), "spacing": list(self.spacing), "direction": list(self.direction)}


def read_geometry(path: str | Path) -> ImageGeometry:
    """The geometry ITK reads from the header of ``path`` (no pixels are decoded).

    Raises:
        ValueError: ITK has no reader for the file or the image is not 2D (or a single slice).
    """
    name = str(path)
    image_io = itk.ImageIOFactory.CreateImageIO(name, itk.CommonEnums.IOFileMode_ReadMode)
    if image_io is None:
        raise ValueError(f"{name}: ITK has no reader for this file, so its physical geometry is unknown")
    image_io.SetFileName(name)
    image_io.ReadImageInformation()
    dims = image_io.GetNumberOfDimensions()
    sizes = [image_io.GetDimensions(axis) for axis in range(dims)]
    if dims not in (2, 3) or (dims == 3 and sizes[2] != 1):
        raise ValueError(f"{name}: ITK reads a {'x'.join(map(str, sizes))} image, not a 2D image")
    spacing, origin, direction = np.ones(3), np.zeros(3), np.eye(3)
    for axis in range(dims):
        spacing[axis] = image_io.GetSpacing(axis)
        origin[axis] = image_io.GetOrigin(axis)
        direction[:dims, axis] = list(image_io.GetDirection(axis))
    return ImageGeometry(
        size=(int(sizes[0]), int(sizes[1])),
        spacing=tuple(float(s) for s in spacing),
        origin=tuple(float(o) for o in origin),
        direction=tuple(float(d) for d in direction.ravel()),
    )


def is_dicom(path: str | Path) -> bool:
    """Whether the bundle reads ``path`` as DICOM (:func:`bundle.data.readers.reader_for` decides by suffix)."""
    return isinstance(reader_for(path), CXRDicomReader)


def measurement_spacing(path: str | Path) -> tuple[tuple[float, float], str] | None:
    """(x, y) mm per pixel for reporting sizes and the DICOM attribute it comes from; None when not DICOM."""
    if not is_dicom(path):
        return None
    return dicom_pixel_spacing_source(pydicom.dcmread(str(path), stop_before_pixels=True))
