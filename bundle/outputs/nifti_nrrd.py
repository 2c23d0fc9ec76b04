"""Masks as single-slice NIfTI (RAS) and NRRD (LPS) volumes with the source image's physical geometry."""

from __future__ import annotations

import gzip
import io
from pathlib import Path

import nibabel as nib
import nrrd
import numpy as np

from bundle.fileio import atomic_write

from .geometry import ImageGeometry

#: NIfTI qform/sform code: coordinates of the scanner (here: of the source image as ITK reads it).
NIFTI_SCANNER_ANAT = 1


def _volume(mask: np.ndarray, geometry: ImageGeometry) -> np.ndarray:
    """The (W, H) mask (indexed [x, y]) as a (W, H, 1) uint8 label volume, checked against the geometry."""
    if tuple(mask.shape) != geometry.size:
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not match the {geometry.size} source image")
    return (np.asarray(mask) > 0).astype(np.uint8)[:, :, None]


def write_nifti(mask: np.ndarray, geometry: ImageGeometry, path: Path) -> None:
    """Write ``mask`` (label 1) to a NIfTI file (``.nii.gz`` compresses) whose affine is the source geometry.

    NIfTI stores RAS; ITK and 3D Slicer convert back to LPS when reading, so the mask lands on the source.
    """
    _write_nifti_volume(_volume(mask, geometry), geometry, path)


def write_nifti_map(values: np.ndarray, geometry: ImageGeometry, path: Path) -> None:
    """Write a (W, H) float map (a saliency or explanation map), scaled to a peak of 1, as a float32 NIfTI volume
    over the source, as :func:`write_nifti` does for masks (Slicer shows it as a scalar volume, e.g. a heat map)."""
    if tuple(values.shape) != geometry.size:
        raise ValueError(f"map of shape {tuple(values.shape)} does not match the {geometry.size} source image")
    peak = float(np.max(values))
    scaled = np.asarray(values, dtype=np.float32) / (peak if peak > 0 else 1.0)
    _write_nifti_volume(scaled[:, :, None], geometry, path)


def _write_nifti_volume(volume: np.ndarray, geometry: ImageGeometry, path: Path) -> None:
    image = nib.Nifti1Image(volume, geometry.affine_ras)
    image.set_qform(geometry.affine_ras, code=NIFTI_SCANNER_ANAT)
    image.set_sform(geometry.affine_ras, code=NIFTI_SCANNER_ANAT)
    image.header.set_xyzt_units("mm")
    data = image.to_bytes()
    atomic_write(path, gzip.compress(data) if path.name.endswith(".gz") else data)


def write_nrrd(mask: np.ndarray, geometry: ImageGeometry, path: Path) -> None:
    """Write ``mask`` (label 1) to a gzip-encoded NRRD file in "left-posterior-superior" space."""
    header = {
        "space": "left-posterior-superior",
        "space directions": (geometry.matrix * np.asarray(geometry.spacing)).T,  # one row per index axis
        "space origin": np.asarray(geometry.origin),
        "kinds": ["domain", "domain", "domain"],
        "encoding": "gzip",
    }
    buffer = io.BytesIO()
    nrrd.write(buffer, _volume(mask, geometry), header, index_order="F")
    atomic_write(path, buffer.getvalue())
