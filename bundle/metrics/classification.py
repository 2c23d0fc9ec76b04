"""Multi-label classification metrics."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from ignite.metrics import Metric
from monai.metrics import compute_roc_auc


def macro_auroc(probs: np.ndarray, labels: np.ndarray, known: np.ndarray) -> float:
    """Mean of per-class AUROC over classes with known positives and negatives; NaN when there is none."""
    scores = []
    for c in range(probs.shape[1]):
        keep = known[:, c]
        y = labels[keep, c]
        if y.size and 0 < y.sum() < y.size:
            scores.append(float(compute_roc_auc(torch.as_tensor(probs[keep, c]), torch.as_tensor(y))))
    return float(np.mean(scores)) if scores else float("nan")


class MultiLabelAUROC(Metric):
    """Macro AUROC of ``cls_prob`` against ``cls`` over samples with ``has_cls`` and known labels."""

    required_output_keys = ("cls_prob", "cls", "cls_known", "has_cls")

    def __init__(self, output_transform: Callable = lambda x: x) -> None:
        super().__init__(output_transform=output_transform, skip_unrolling=True)

    def reset(self) -> None:
        self._probs: list[np.ndarray] = []
        self._labels: list[np.ndarray] = []
        self._known: list[np.ndarray] = []

    def update(self, output: tuple[torch.Tensor, ...]) -> None:
        probs, labels, known, flag = (t.detach().cpu() for t in output)
        self._probs.append(probs[flag].numpy())
        self._labels.append(labels[flag].numpy())
        self._known.append(known[flag].numpy())

    def compute(self) -> float:
        if not self._probs:
            return float("nan")
        return macro_auroc(np.concatenate(self._probs), np.concatenate(self._labels), np.concatenate(self._known))
