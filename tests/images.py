"""Image files that tests write themselves: small DICOM radiographs with chosen size, bit depth and attributes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid


def write_dicom(path: Path, columns: int, rows: int, bits: int = 8, **attributes: object) -> Path:
    """An uncompressed ``bits``-bit (8 or 16) Secondary Capture radiograph (Modality CR), a ramp of values, with
    the given extra attributes; ``path`` may have any suffix or none."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Test^Outputs", "outputs", "", "O"
    ds.StudyDate, ds.StudyTime, ds.StudyID = "20240101", "000000", "1"
    ds.AccessionNumber, ds.ReferringPhysicianName = "", ""
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CR", 1, 1
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation = rows, columns, 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, bits, bits - 1, 0
    ramp = np.arange(rows * columns) % (251 if bits == 8 else 4001)
    ds.PixelData = ramp.astype(np.uint8 if bits == 8 else np.uint16).tobytes()
    for name, value in attributes.items():
        setattr(ds, name, value)
    ds.save_as(str(path), enforce_file_format=True)
    return path
