"""Files people open: mask volumes (NIfTI, NRRD, DICOM SEG) and box markups overlaid on the source image."""

from .dicom_seg import write_dicom_seg
from .geometry import ImageGeometry, is_dicom, measurement_spacing, read_geometry
from .nifti_nrrd import write_nifti, write_nifti_map, write_nrrd
from .report import ErrorReport
from .slicer_markups import roi_markups, write_roi_markups

__all__ = [
    "ErrorReport",
    "ImageGeometry",
    "is_dicom",
    "measurement_spacing",
    "read_geometry",
    "roi_markups",
    "write_dicom_seg",
    "write_nifti",
    "write_nifti_map",
    "write_nrrd",
    "write_roi_markups",
]
