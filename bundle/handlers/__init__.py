"""Ignite handlers of the bundle."""

from .metrics_report import MetricsReport
from .prediction_writer import PredictionWriter

__all__ = ["MetricsReport", "PredictionWriter"]
