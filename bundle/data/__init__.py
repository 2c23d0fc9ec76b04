"""Data: datalists, the multi-task sample format and its transforms, batching, and the synthetic demo set."""

from .collate import multitask_collate
from .datalist import DatalistError, describe_datalist, load_datalist
from .labels import NIH_FINDINGS, UNKNOWN_LABEL
from .synthetic import make_demo_dataset
from .transforms import LabelError, PrepareTargetsd, ResizeTargetsd, check_spatial_size

__all__ = [
    "DatalistError",
    "LabelError",
    "NIH_FINDINGS",
    "PrepareTargetsd",
    "ResizeTargetsd",
    "UNKNOWN_LABEL",
    "check_spatial_size",
    "describe_datalist",
    "load_datalist",
    "make_demo_dataset",
    "multitask_collate",
]
