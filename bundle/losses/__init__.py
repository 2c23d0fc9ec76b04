"""Losses of the multi-task bundle."""

from .adversarial import AdversarialMaskPart
from .kltv import KLTVLoss, bernoulli_kl
from .multitask import DEFAULT_WEIGHTS, DiceBCELoss, MultiTaskLoss
from .teacher_forcing import TeacherForcing

__all__ = ["AdversarialMaskPart", "DEFAULT_WEIGHTS", "DiceBCELoss", "KLTVLoss", "MultiTaskLoss", "TeacherForcing", "bernoulli_kl"]
