"""Detector logic for CheXDet (anchors, matching, losses, box selection) and its torchvision workaround."""

from .compat import ensure_detector_without_torchvision
from .detector import CheXDetector

__all__ = ["CheXDetector", "ensure_detector_without_torchvision"]
