"""Data: dataset readers, image loading, datalists and checks, the multi-task sample format, transforms, batching."""

from .augment import RandAffineBoxd, RandMirrorBoxd
from .check import check_datalist, check_splits
from . import mixing
from .collate import multitask_collate
from .datalist import DatalistError, describe_datalist, load_datalist, read_datalist, read_entries
from .lung_augment import RandLungOpacityd
from .labels import NIH_FINDINGS, UNKNOWN_LABEL
from .readers import CXRDicomReader, ImageReadError, LoadCXRd, is_dicom_file, load_cxr
from .rle import RLEError, rle_decode, rle_encode
from .splits import split_by_patient
from .demo_gaze import add_demo_gaze
from .synthetic import demo_inputs, make_demo_dataset
from .transforms import LabelError, LoadSaliencyd, PrepareTargetsd, ResizeImaged, ResizeTargetsd, check_spatial_size
from .unlabelled import EndlessBatches, UnlabelledDataset, unlabelled_entries, unlabelled_loader
from .views import two_views, weak_strong_views

__all__ = [
    "add_demo_gaze",
    "CXRDicomReader",
    "EndlessBatches",
    "ResizeImaged",
    "UnlabelledDataset",
    "two_views",
    "unlabelled_entries",
    "unlabelled_loader",
    "weak_strong_views",
    "DatalistError",
    "ImageReadError",
    "LoadCXRd",
    "RLEError",
    "RandAffineBoxd",
    "RandMirrorBoxd",
    "RandLungOpacityd",
    "LabelError",
    "NIH_FINDINGS",
    "LoadSaliencyd",
    "PrepareTargetsd",
    "ResizeTargetsd",
    "UNKNOWN_LABEL",
    "check_datalist",
    "check_splits",
    "check_spatial_size",
    "describe_datalist",
    "is_dicom_file",
    "load_cxr",
    "load_datalist",
    "demo_inputs",
    "make_demo_dataset",
    "multitask_collate",
    "read_datalist",
    "read_entries",
    "rle_decode",
    "rle_encode",
    "split_by_patient",
]
