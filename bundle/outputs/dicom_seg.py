"""Masks of DICOM inputs as DICOM Segmentation objects (highdicom) that reference their source image.

The SEG has one binary frame at the source's Rows x Columns, referencing the source instance in
ReferencedSeriesSequence and in the frame's SourceImageSequence (spatial locations preserved). For radiographs
without a Frame of Reference (most CR/DX exports) highdicom writes a 2D segmentation without plane positions;
its PixelMeasuresSequence repeats the source's PixelSpacing when the source has one.
"""

from __future__ import annotations

import io
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.sr.codedict import codes

from bundle.fileio import atomic_write


#: Type 2 patient and study attributes that the SEG copies from its source: empty when the source lacks them
#: (anonymised exports often drop them), rather than a failed SEG.
EMPTY_IF_MISSING: tuple[str, ...] = (
    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyDate", "StudyTime", "StudyID",
    "AccessionNumber", "ReferringPhysicianName",
)


def write_dicom_seg(
    mask: np.ndarray,
    source: str | Path,
    path: Path,
    segment_label: str = "lesion",
    model_name: str = "MultiCheXNet",
    model_version: str = "unknown",
) -> None:
    """Write the (W, H) ``mask`` (indexed [x, y]) of the DICOM ``source`` as a binary DICOM SEG to ``path``.

    Raises:
        ValueError: the mask size differs from the source's Columns x Rows. highdicom's own errors (a source
            it cannot segment, e.g. one with a Frame of Reference but no SliceThickness) pass through.
    """
    dataset = pydicom.dcmread(str(source), stop_before_pixels=True)
    for keyword in EMPTY_IF_MISSING:  # type 2 attributes the SEG copies: present, possibly empty
        if keyword not in dataset:
            setattr(dataset, keyword, "")
    if tuple(mask.shape) != (int(dataset.Columns), int(dataset.Rows)):
        size = f"{dataset.Columns}x{dataset.Rows}"
        raise ValueError(f"mask of shape {tuple(mask.shape)} does not match {source} ({size})")
    algorithm = hd.AlgorithmIdentificationSequence(
        name=model_name, family=codes.cid7162.ArtificialIntelligence, version=model_version
    )
    segment = hd.seg.SegmentDescription(
        segment_number=1,
        segment_label=segment_label,
        segmented_property_category=codes.SCT.MorphologicallyAbnormalStructure,
        segmented_property_type=codes.SCT.Lesion,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
    )
    seg = hd.seg.Segmentation(
        source_images=[dataset],
        pixel_array=(np.asarray(mask) > 0).T[None].astype(np.uint8),  # (frames, rows, columns)
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[segment],
        series_instance_uid=hd.UID(),
        series_number=1,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="MultiCheXNet MONAI bundle",
        manufacturer_model_name=model_name,
        software_versions=model_version,
        device_serial_number="none",
        series_description=f"{model_name} {segment_label} segmentation",
        omit_empty_frames=False,
    )
    buffer = io.BytesIO()
    seg.save_as(buffer)
    atomic_write(path, buffer.getvalue())
