"""Ignite handlers of the bundle (imported when first used, so that inference does not import evaluation)."""

from __future__ import annotations

import importlib
from typing import Any

_HOMES = {
    "BestModelState": "best_model",
    "EncoderCheckpoint": "encoder_checkpoint",
    "EpochValidation": "validation",
    "MetricsReport": "metrics_report",
    "PredictionWriter": "prediction_writer",
}
__all__ = list(_HOMES)


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(importlib.import_module(f"{__name__}.{_HOMES[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
