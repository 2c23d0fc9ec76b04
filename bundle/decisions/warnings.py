"""Input warnings from a DICOM header: things that make a chest X-ray model's answer less trustworthy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pydicom
from pydicom.errors import InvalidDicomError

#: ViewPosition values of a lateral projection (DICOM defined terms LL, RL, and values seen in the wild).
LATERAL_VIEWS: frozenset[str] = frozenset({"LL", "RL", "LATERAL", "LAT", "LLAT", "RLAT"})
#: Modalities of projection radiographs: computed and digital radiography.
RADIOGRAPH_MODALITIES: frozenset[str] = frozenset({"CR", "DX"})
#: BodyPartExamined values of a chest image.
CHEST_BODY_PARTS: frozenset[str] = frozenset({"CHEST", "THORAX"})

#: The warning codes this module gives.
CODES: tuple[str, ...] = (
    "lateral_view", "unexpected_modality", "unexpected_body_part", "inverted_photometric_corrected"
)


def _text(ds: pydicom.Dataset, keyword: str) -> str | None:
    value = ds.get(keyword)
    return None if value is None or str(value).strip() == "" else str(value).strip().upper()


def dicom_warnings(ds_or_path: pydicom.Dataset | str | Path) -> list[dict[str, str]]:
    """``{code, message}`` warnings of a DICOM dataset or file (read without pixels): a lateral
    ``ViewPosition``, a ``Modality`` other than CR / DX, a ``BodyPartExamined`` other than chest, a MONOCHROME1
    image (inverted on reading so that dense is bright). Absent attributes give no warning."""
    if isinstance(ds_or_path, pydicom.Dataset):
        ds, name = ds_or_path, "DICOM dataset"
    else:
        name = str(ds_or_path)
        try:
            ds = pydicom.dcmread(name, stop_before_pixels=True)
        except InvalidDicomError:
            raise ValueError(f"{name}: not a DICOM file; only DICOM inputs have header warnings") from None
    found: list[dict[str, Any]] = []
    view = _text(ds, "ViewPosition")
    if view in LATERAL_VIEWS:
        found.append({"code": "lateral_view", "message": f"{name}: ViewPosition {view} is a lateral view; the model "
                                                          "was trained on frontal (PA/AP) radiographs"})
    modality = _text(ds, "Modality")
    if modality is not None and modality not in RADIOGRAPH_MODALITIES:
        found.append({"code": "unexpected_modality", "message": f"{name}: Modality {modality} is not a radiograph "
                                                                 "(CR or DX)"})
    body_part = _text(ds, "BodyPartExamined")
    if body_part is not None and body_part not in CHEST_BODY_PARTS:
        found.append({"code": "unexpected_body_part", "message": f"{name}: BodyPartExamined {body_part} is not the "
                                                                  "chest"})
    if _text(ds, "PhotometricInterpretation") == "MONOCHROME1":
        found.append({"code": "inverted_photometric_corrected", "message": f"{name}: MONOCHROME1 (dense is dark); "
                                                                            "intensities were inverted on reading"})
    return found
