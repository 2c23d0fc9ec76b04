"""Ignite handlers of the bundle."""

from .prediction_writer import PredictionWriter

__all__ = ["PredictionWriter"]
