"""Decisions: the one step from head outputs to findings, and its settings.

Operating points chosen on validation (:mod:`.operating_points`), calibration (:mod:`.calibration`), mask and
box post-processing (:mod:`.postprocess`), all held by one :class:`DecisionPolicy` (:mod:`.policy`, chosen as a
whole by :mod:`.choose`), applied by :func:`decide` and written by :func:`prediction_record` (:mod:`.record`,
schema in :mod:`.schema`); DICOM input warnings (:mod:`.warnings`). NumPy / SciPy / pydicom only and relative
imports only, so every runtime can call it, the MONAI Deploy venv too (importing ``bundle/`` as a path entry).
"""

from .arrays import logit
from .calibration import (
    Calibration,
    ReliabilityBins,
    expected_calibration_error,
    fit_calibration,
    fit_calibrations,
    fit_isotonic,
    fit_temperature,
    reliability_bins,
)
from .choose import choose_policy
from .operating_points import (
    MIN_COUNTS,
    ROC_RULES,
    OperatingPoint,
    checked_operating_point,
    choose_operating_point,
    choose_operating_points,
    default_point,
    roc_threshold,
)
from .policy import GATES, POLICY_VERSION, DecisionPolicy
from .postprocess import (
    BoxPostprocessing,
    MaskPostprocessing,
    box_iou,
    nms,
    postprocess_boxes,
    postprocess_mask,
    resize_bilinear,
    scale_boxes,
)
from .record import (
    BoxDecision,
    Decision,
    FindingDecision,
    GateDecision,
    box_in_mm,
    decide,
    image_heads,
    prediction_record,
)
from .schema import SCHEMA_PATH, SCHEMA_VERSION, prediction_schema, validate_record
from .warnings import dicom_warnings

__all__ = [
    "GATES",
    "MIN_COUNTS",
    "POLICY_VERSION",
    "ROC_RULES",
    "SCHEMA_PATH",
    "SCHEMA_VERSION",
    "BoxDecision",
    "BoxPostprocessing",
    "Calibration",
    "Decision",
    "DecisionPolicy",
    "FindingDecision",
    "GateDecision",
    "MaskPostprocessing",
    "OperatingPoint",
    "ReliabilityBins",
    "box_in_mm",
    "box_iou",
    "checked_operating_point",
    "choose_operating_point",
    "choose_operating_points",
    "choose_policy",
    "decide",
    "default_point",
    "dicom_warnings",
    "expected_calibration_error",
    "fit_calibration",
    "fit_calibrations",
    "fit_isotonic",
    "fit_temperature",
    "image_heads",
    "logit",
    "nms",
    "postprocess_boxes",
    "postprocess_mask",
    "prediction_record",
    "prediction_schema",
    "reliability_bins",
    "resize_bilinear",
    "roc_threshold",
    "scale_boxes",
    "validate_record",
]
