"""Losses of the multi-task bundle."""

from .multitask import DEFAULT_WEIGHTS, MultiTaskLoss
from .teacher_forcing import TeacherForcing

__all__ = ["DEFAULT_WEIGHTS", "MultiTaskLoss", "TeacherForcing"]
