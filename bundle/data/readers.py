"""Loading chest X-rays from any source into one grey, normalised ``(1, W, H)`` tensor.

Readers (through :class:`monai.transforms.LoadImage`): :class:`CXRDicomReader` (pydicom) for DICOM, PIL for
PNG/JPEG (8- or 16-bit), nibabel for NIfTI. Arrays keep MONAI's layout: axis 0 is the image x axis (column).

DICOM display pipeline, in DICOM order: decode (compressed transfer syntaxes through pydicom's pixel-data
plugins: JPEG, JPEG-LS, JPEG 2000, RLE), honour BitsStored, apply the modality LUT (RescaleSlope/Intercept),
apply the VOI LUT or window when present, invert MONOCHROME1 so that bright is dense everywhere.

Intensity normalisation, the same for every source (:func:`normalise_intensity`): RGB(A) becomes grey by
ITU-R 601 luminance (alpha dropped), then each image is scaled linearly by its own minimum and maximum to
[0, 1] (a constant image becomes all zeros). The same pixels stored as PNG or as DICOM give the same tensor.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor, NibabelReader, PILReader, PydicomReader
from monai.transforms import LoadImage, MapTransform
from pydicom.pixels import apply_modality_lut, apply_voi_lut

from .rle import rle_union

#: File suffixes read as DICOM (files without a suffix, as PACS exports often are, too).
DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom", "")
NIFTI_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz")
#: ITU-R BT.601 luminance weights (as PIL's "L" conversion).
LUMA: tuple[float, float, float] = (0.299, 0.587, 0.114)


class ImageReadError(ValueError):
    """An image or mask file cannot be read; the message names the file and the problem."""


class CXRDicomReader(PydicomReader):
    """Pydicom reader applying the DICOM grey-level display pipeline; pixel spacing (x, y) in ``pixel_spacing``."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("prune_metadata", True)
        super().__init__(**kwargs)

    def _get_array_data(self, img: pydicom.Dataset, filename: str) -> np.ndarray:
        return dicom_to_array(img)

    def _get_affine(self, metadata: dict, lps_to_ras: bool = True) -> np.ndarray:
        """Radiographs have no patient position/orientation: a pixel-spacing diagonal instead of a warning."""
        if "00200037" in metadata and "00200032" in metadata:
            return super()._get_affine(metadata, lps_to_ras)
        spacing = metadata.get("00280030", {}).get("Value", [1.0, 1.0])
        return np.diag([float(spacing[0]), float(spacing[1]), 1.0, 1.0])

    def get_data(self, data: Any) -> tuple[np.ndarray, dict]:
        array, meta = super().get_data(data)
        spacing = dicom_pixel_spacing(data[0] if isinstance(data, list) else data)
        if spacing is not None:
            meta["pixel_spacing"] = spacing
        return array, meta


def dicom_to_array(ds: pydicom.Dataset) -> np.ndarray:
    """The (rows, columns) float32 image of ``ds``: decoded, modality and VOI LUTs applied, MONOCHROME1 inverted."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(f"PhotometricInterpretation {photometric} is not a greyscale radiograph")
    stored = ds.pixel_array  # pydicom masks values to BitsStored
    if int(ds.get("NumberOfFrames", 1) or 1) > 1:
        stored = stored[0]
    values = apply_modality_lut(stored, ds)
    if "VOILUTSequence" in ds or "WindowCenter" in ds:
        values = apply_voi_lut(values, ds, prefer_lut=True)
    values = values.astype(np.float32)
    if photometric == "MONOCHROME1":
        values = values.max() + values.min() - values
    return values


def dicom_pixel_spacing(ds: pydicom.Dataset) -> tuple[float, float] | None:
    """(x, y) pixel spacing in mm from PixelSpacing or ImagerPixelSpacing (stored as row, column), if present."""
    found = dicom_pixel_spacing_source(ds)
    return None if found is None else found[0]


def dicom_pixel_spacing_source(ds: pydicom.Dataset) -> tuple[tuple[float, float], str] | None:
    """(x, y) pixel spacing in mm and the attribute it comes from: PixelSpacing (in the patient), else
    ImagerPixelSpacing (at the detector, not corrected for magnification); None when neither is present."""
    for tag in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(tag)
        if value is not None and len(value) == 2:
            return (float(value[1]), float(value[0])), tag
    return None


def reader_for(path: str | Path) -> Any:
    """The MONAI reader for ``path`` by suffix: DICOM, NIfTI, else PIL (PNG, JPEG, BMP, TIFF)."""
    name = str(path).lower()
    if name.endswith(NIFTI_SUFFIXES):
        return NibabelReader()
    if Path(name).suffix in DICOM_SUFFIXES:
        return CXRDicomReader()
    return PILReader()


def to_grey(image: torch.Tensor) -> torch.Tensor:
    """(C, W, H) to (1, W, H): RGB(A) by luminance, alpha dropped, grey + alpha by its grey channel."""
    channels = image.shape[0]
    if channels == 1:
        return image
    if channels in (3, 4):
        weights = torch.tensor(LUMA, dtype=torch.float32).reshape(3, 1, 1)
        return (image[:3].float() * weights).sum(0, keepdim=True)
    if channels == 2:
        return image[:1]
    raise ValueError(f"{channels} channels; expected grey, grey+alpha, RGB or RGBA")


def normalise_intensity(image: torch.Tensor) -> torch.Tensor:
    """Scale linearly to [0, 1] by the image's own minimum and maximum; a constant image becomes zeros."""
    image = image.float()
    low, high = image.min(), image.max()
    if high <= low:
        return torch.zeros_like(image)
    return (image - low) / (high - low)


def load_cxr(path: str | Path, normalise: bool = True) -> MetaTensor:
    """Read ``path`` as a (1, W, H) float MetaTensor; ``normalise`` applies :func:`normalise_intensity`.

    Raises:
        ImageReadError: the file is missing, truncated, corrupt or not a 2D grey/RGB image.
    """
    path = Path(path)
    if not path.is_file():
        raise ImageReadError(f"{path}: file not found")
    try:
        image = LoadImage(reader=reader_for(path), image_only=True, ensure_channel_first=True)(str(path))
        if image.ndim == 4 and image.shape[-1] == 1:  # NIfTI 2D images are stored with a third axis of 1
            image = image[..., 0]
        if image.ndim != 3:
            raise ValueError(f"expected a 2D image, got array shape {tuple(image.shape)}")
        grey = to_grey(torch.as_tensor(image))
    except ImageReadError:
        raise
    except Exception as err:  # any decoder failure: report the file and the decoder's message
        raise ImageReadError(f"{path}: cannot read image ({type(err).__name__}: {err})") from err
    grey = normalise_intensity(grey) if normalise else grey.float()
    return MetaTensor(grey, meta=dict(image.meta))


class LoadCXRd(MapTransform):
    """Load ``image`` (normalised) and ``mask`` (raw values) with :func:`load_cxr`.

    An entry with ``mask_rle`` (a list of SIIM RLE strings, their union; empty = annotated negative) and no
    ``mask`` gets its mask decoded at the image's size. Read errors name the entry's patient and the file.
    """

    def __init__(self, keys: KeysCollection = ("image", "mask"), image_key: str = "image") -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.image_key = image_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            if isinstance(d[key], (str, Path)):
                d[key] = self._load(d, key)
        if "mask_rle" in d and "mask" not in d:
            width, height = d[self.image_key].shape[1:]
            d["mask"] = torch.as_tensor(rle_union(d.pop("mask_rle"), (width, height)), dtype=torch.float32)[None]
        return d

    def _load(self, d: Mapping[Hashable, Any], key: Hashable) -> MetaTensor:
        try:
            return load_cxr(d[key], normalise=key == self.image_key)
        except ImageReadError as err:
            raise ImageReadError(f"entry (patient {d.get('patient_id', '?')}) '{key}': {err}") from err
