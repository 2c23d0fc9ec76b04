"""Segmentation metrics: per-image Dice as in the SIIM-ACR Pneumothorax Segmentation challenge, and the
post-processing of probability maps into masks.

SIIM-ACR (https://www.kaggle.com/c/siim-acr-pneumothorax-segmentation/overview/evaluation): the score is the
mean over test images of the per-image Dice coefficient ``2 |X ∩ Y| / (|X| + |Y|)``, where an image whose
predicted mask and true mask are both empty scores 1.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import product

import numpy as np
import torch
from ignite.metrics import Metric
from scipy import ndimage

#: Candidate settings searched by :func:`choose_seg_postprocessing`.
DEFAULT_PROB_THRESHOLDS: tuple[float, ...] = (0.3, 0.4, 0.5, 0.6, 0.7)
DEFAULT_MIN_AREAS: tuple[int, ...] = (0, 10, 50, 200)


def dice_per_image(pred: torch.Tensor | np.ndarray, truth: torch.Tensor | np.ndarray) -> torch.Tensor:
    """Dice of binary masks (B, ...) per image; an image with empty prediction and empty truth scores 1
    (the SIIM-ACR definition)."""
    pred, truth = torch.as_tensor(pred).flatten(1).bool(), torch.as_tensor(truth).flatten(1).bool()
    inter = (pred & truth).sum(1).double()
    total = (pred.sum(1) + truth.sum(1)).double()
    return torch.where(total > 0, 2 * inter / total.clamp(min=1), torch.ones_like(total))


def mean_dice(scores: np.ndarray) -> float:
    """Mean of per-image Dice scores over all images (empty/empty images included, scoring 1); NaN if none."""
    return float(np.mean(scores)) if len(scores) else float("nan")


def positive_dice(scores: np.ndarray, truth_positive: np.ndarray) -> float:
    """Mean per-image Dice over the images whose true mask is not empty; NaN if there is none."""
    return mean_dice(np.asarray(scores)[np.asarray(truth_positive, dtype=bool)])


def postprocess_mask(prob: np.ndarray, threshold: float = 0.5, min_area: int = 0) -> np.ndarray:
    """Binary mask ``prob > threshold`` (2-D) without the 8-connected components smaller than ``min_area`` pixels."""
    mask = np.asarray(prob) > threshold
    if min_area <= 0 or not mask.any():
        return mask
    components, count = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
    areas = np.bincount(components.ravel(), minlength=count + 1)
    keep = areas >= min_area
    keep[0] = False
    return keep[components]


def postprocess_settings(
    thresholds: Sequence[float] = DEFAULT_PROB_THRESHOLDS, min_areas: Sequence[int] = DEFAULT_MIN_AREAS
) -> list[tuple[float, int]]:
    """The grid of (probability threshold, minimum component area) settings searched on validation."""
    return [(float(t), int(a)) for t, a in product(thresholds, min_areas)]


def dice_for_settings(prob: np.ndarray, truth: np.ndarray, settings: Sequence[tuple[float, int]]) -> np.ndarray:
    """Per-image Dice (B, S) of the probability maps ``prob`` (B, H, W) post-processed with each setting."""
    scores = np.empty((len(prob), len(settings)))
    for s, (threshold, min_area) in enumerate(settings):
        masks = np.stack([postprocess_mask(p, threshold, min_area) for p in prob])
        scores[:, s] = dice_per_image(masks, truth).numpy()
    return scores


def choose_seg_postprocessing(scores: np.ndarray, settings: Sequence[tuple[float, int]]) -> tuple[float, int]:
    """The setting with the highest mean per-image Dice on validation, given :func:`dice_for_settings` output
    accumulated over the validation images (ties: the first setting in ``settings``)."""
    return settings[int(np.argmax(np.mean(scores, axis=0)))]


class MeanDice(Metric):
    """Mean per-image Dice of ``seg_prob > threshold`` against ``mask`` over samples with ``has_seg``
    (``positives_only``: over those whose truth mask is not empty)."""

    required_output_keys = ("seg_prob", "mask", "has_seg")

    def __init__(
        self, threshold: float = 0.5, positives_only: bool = False, output_transform: Callable = lambda x: x
    ) -> None:
        self.threshold = threshold
        self.positives_only = positives_only
        super().__init__(output_transform=output_transform, skip_unrolling=True)

    def reset(self) -> None:
        self._scores: list[np.ndarray] = []

    def update(self, output: tuple[torch.Tensor, ...]) -> None:
        probs, mask, flag = (t.detach().cpu() for t in output)
        if self.positives_only:
            flag = flag & (mask.flatten(1).amax(1) > 0)
        self._scores.append(dice_per_image(probs[flag] > self.threshold, mask[flag] > 0).numpy())

    def compute(self) -> float:
        return mean_dice(np.concatenate(self._scores) if self._scores else np.zeros(0))
