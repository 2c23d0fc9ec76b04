"""Let MONAI's RetinaNet detector run without torchvision.

``monai.apps.detection.networks.retinanet_detector`` imports torchvision's ``Matcher`` and
``BalancedPositiveNegativeSampler`` lazily and dispatches on them with ``isinstance``. Without a working
torchvision (this bundle does not depend on it: PyPI's torchvision does not import beside CPU-only torch
builds) the lazy placeholders raise on that ``isinstance`` check, even when the detector uses MONAI's own
ATSS matcher and hard-negative sampler. Binding the two names to classes nothing is an instance of makes
those checks answer False, so the MONAI code paths are taken. With torchvision importable nothing changes.
"""

from __future__ import annotations

from monai.apps.detection.networks import retinanet_detector
from monai.utils import optional_import


class TorchvisionUnavailable:
    """Stands in for a torchvision class that cannot be imported; nothing is an instance of it."""


def ensure_detector_without_torchvision() -> bool:
    """Patch the two torchvision names if torchvision is unusable; return True when a patch was applied."""
    _, has_torchvision = optional_import("torchvision.models.detection._utils", name="Matcher")
    if has_torchvision:
        return False
    retinanet_detector.Matcher = TorchvisionUnavailable
    retinanet_detector.BalancedPositiveNegativeSampler = TorchvisionUnavailable
    return True
