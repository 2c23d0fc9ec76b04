"""Losses of the multi-task bundle."""

from .multitask import DEFAULT_WEIGHTS, MultiTaskLoss

__all__ = ["DEFAULT_WEIGHTS", "MultiTaskLoss"]
