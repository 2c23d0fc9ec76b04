"""Per-image saliency scores of an evaluation: the model's saliency head and the two baselines, CC / KL / SIM
against each gaze map and NSS / AUC-Judd against each fixation map, for :class:`MetricsReport`'s bootstrap."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bundle.data.datalist import DatalistError, read_entries
from bundle.data.gaze import center_bias_map, mean_gaze_map
from bundle.metrics.saliency import image_scores, saliency_statistic

logger = logging.getLogger(__name__)


def _numpy(value: Any) -> np.ndarray:
    return value.detach().cpu().double().numpy() if isinstance(value, torch.Tensor) else np.asarray(value, float)


class SaliencyRecords:
    """Collect, batch by batch, the saliency scores of the images with a gaze map (``has_sal``).

    Each image is scored for the model (``sal/<metric>``), the centre-bias baseline (``sal/<metric>/centre_bias``,
    :func:`bundle.data.gaze.center_bias_map`) and the mean gaze map of the datalist's ``training`` entries
    (``sal/<metric>/mean_gaze``, when they have maps and the split evaluated is another). Images without a gaze
    map get NaN (left out of the means); without ``fixation_map`` / ``has_fix`` (``LoadSaliencyd(fixations=True)``)
    NSS and AUC-Judd are NaN.

    Args:
        datalist: the datalist evaluated, whose training maps make the mean-gaze baseline (None: no such baseline).
        split: the list evaluated.
    """

    def __init__(self, datalist: str | Path | None = None, split: str = "") -> None:
        self.datalist = None if datalist is None else Path(datalist)
        self.split = split
        self.scores: dict[str, list[float]] = defaultdict(list)
        self.count = 0
        self.with_maps = 0
        self.with_fixations = 0
        self._baselines: dict[str, np.ndarray] | None = None

    def __bool__(self) -> bool:
        return bool(self.scores)

    def _baseline_maps(self, size: tuple[int, int]) -> dict[str, np.ndarray]:
        if self._baselines is None:
            self._baselines = {"centre_bias": center_bias_map(size)}
            paths = []
            if self.datalist is not None and self.datalist.is_file() and self.split != "training":
                try:
                    training = read_entries(self.datalist, "training", allow_empty=True)
                except DatalistError as err:
                    logger.warning("saliency: no mean-gaze baseline, the training list is unusable: %s", err)
                    training = []
                paths = [e["saliency"] for e in training if "saliency" in e]
            if paths:
                self._baselines["mean_gaze"] = mean_gaze_map(paths, size)
            else:
                logger.info("saliency: no training gaze maps in %s, so no mean-gaze baseline", self.datalist)
        return self._baselines

    def collect(self, out: dict[str, Any], n: int) -> None:
        """Score the ``n`` images of one evaluator output (all NaN without ``sal_prob`` and ``has_sal``)."""
        rows: list[dict[str, float]] = [{} for _ in range(n)]
        if "sal_prob" in out and "has_sal" in out:
            pred, truth = _numpy(out["sal_prob"])[:, 0], _numpy(out["saliency"])[:, 0]
            has = _numpy(out["has_sal"]) > 0
            fixations = _numpy(out["fixation_map"])[:, 0] > 0 if "fixation_map" in out else None
            has_fix = _numpy(out["has_fix"]) > 0 if "has_fix" in out else np.zeros(n, bool)
            baselines = self._baseline_maps(tuple(pred.shape[1:]))
            self.with_maps += int(has.sum())
            self.with_fixations += int((has & has_fix).sum())
            rows = [image_scores({"": pred[i], **baselines}, truth[i], fixations[i] if has_fix[i] else None)
                    if has[i] else {} for i in range(n)]
        for row in rows:
            for key in set(row) | set(self.scores):
                self.scores[key] += [float("nan")] * (self.count - len(self.scores[key])) + [row.get(key, np.nan)]
            self.count += 1

    def statistic(self) -> Callable[[np.ndarray], dict[str, float]]:
        """The bootstrap statistic over the collected samples (in collection order)."""
        return saliency_statistic({k: np.asarray(v, dtype=float) for k, v in self.scores.items()})
