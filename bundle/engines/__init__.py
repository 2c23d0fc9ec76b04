"""Ignite engines for multi-task training, evaluation and inference."""

from . import phases
from .adversarial import AdversarialMaskPart
from .batch import batch_to_device, loss_terms
from .contrastive import ContrastivePretraining, ProjectionHead
from .distributed import on_rank_zero, rank, unwrap
from .evaluator import LABEL_KEYS, MultiTaskEvaluator
from .parts import TrainingPart
from .semi_gan import GenerativeSemiSupervisedPart, RealnessHead
from .semi_supervised import MeanTeacher, SemiSupervised, sigmoid_rampup
from .trainer import MultiTaskTrainer

__all__ = [
    "AdversarialMaskPart", "ContrastivePretraining", "GenerativeSemiSupervisedPart", "MeanTeacher", "ProjectionHead",
    "RealnessHead", "SemiSupervised", "sigmoid_rampup",
    "LABEL_KEYS", "MultiTaskEvaluator", "MultiTaskTrainer", "TrainingPart", "batch_to_device", "loss_terms", "on_rank_zero", "rank", "unwrap",
]
