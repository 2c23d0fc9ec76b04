"""Losses of the multi-task bundle."""

from .consistency import SegConsistencyLoss
from .contrastive import ContrastiveLoss, label_groups
from .ensemble import EnsembleLoss
from .fixmatch import FixMatchLoss, confident_targets
from .kltv import KLTVLoss, bernoulli_kl
from .multitask import DEFAULT_WEIGHTS, DiceBCELoss, MultiTaskLoss
from .saliency import SaliencyLoss
from .teacher_forcing import TeacherForcing

__all__ = [
    "ContrastiveLoss", "DEFAULT_WEIGHTS", "DiceBCELoss", "EnsembleLoss", "FixMatchLoss", "KLTVLoss",
    "MultiTaskLoss", "SaliencyLoss", "SegConsistencyLoss", "TeacherForcing", "bernoulli_kl", "confident_targets", "label_groups",
]
