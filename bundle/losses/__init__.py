"""Losses of the multi-task bundle."""

from .consistency import SegConsistencyLoss
from .contrastive import ContrastiveLoss, label_groups
from .fixmatch import FixMatchLoss, confident_targets
from .multitask import DEFAULT_WEIGHTS, MultiTaskLoss
from .teacher_forcing import TeacherForcing

__all__ = [
    "ContrastiveLoss", "DEFAULT_WEIGHTS", "FixMatchLoss", "MultiTaskLoss", "SegConsistencyLoss", "TeacherForcing",
    "confident_targets", "label_groups",
]
