"""Teacher forcing for the gated heads (MultiCheXNet, Ibrahim et al. 2020, section 3.8).

At inference the segmentation and detection heads only see what their positive-case classifier passes. In
training, with probability ``p`` they see the ground-truth positives instead ("forced"); otherwise they see
what the classifier passes, its false positives included, which then teach the heads to answer "nothing".
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from ignite.engine import Engine, Events
from torch import Tensor


class TeacherForcing:
    """Choose the samples a gated head trains on, and count how often the choice was forced.

    Args:
        p: probability of forcing (ground-truth positives) rather than using the classifier's decision.
        threshold: gate probability at which the classifier passes a sample.
        per_sample: draw the forcing decision per sample instead of per batch.
        seed: seed of the draws.
    """

    def __init__(self, p: float = 0.9, threshold: float = 0.5, per_sample: bool = False, seed: int = 0) -> None:
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"teacher forcing probability must be in [0, 1], got {p}")
        self.p = p
        self.threshold = threshold
        self.per_sample = per_sample
        self.generator = torch.Generator().manual_seed(seed)
        self.forced = 0
        self.draws = 0

    def select(self, gate_logits: Tensor, truth_positive: Tensor) -> Tensor:
        """(B,) booleans: the samples the head trains on for this batch."""
        count = truth_positive.shape[0] if self.per_sample else 1
        forced = (torch.rand(count, generator=self.generator) < self.p).to(truth_positive.device)
        self.forced += int(forced.sum())
        self.draws += count
        passed = torch.sigmoid(gate_logits.detach().reshape(-1)) >= self.threshold
        return torch.where(forced.expand_as(truth_positive), truth_positive, passed)

    @property
    def forced_fraction(self) -> float:
        """Fraction of draws that were forced so far (NaN before the first)."""
        return self.forced / self.draws if self.draws else float("nan")

    def state_dict(self) -> dict[str, Any]:
        """The draws' generator state and the counts, for a training checkpoint."""
        return {"generator": self.generator.get_state(), "forced": self.forced, "draws": self.draws}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the draws and counts from :meth:`state_dict`'s ``state``."""
        self.generator.set_state(state["generator"])
        self.forced, self.draws = int(state["forced"]), int(state["draws"])

    def attach(self, engine: Engine) -> None:
        """Log the realised forced fraction each epoch and keep it in ``engine.state.metrics``."""
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._log)

    def _log(self, engine: Engine) -> None:
        engine.state.metrics["teacher_forced_fraction"] = self.forced_fraction
        logging.getLogger(__name__).info(
            "teacher forcing: %d of %d draws forced (%.3f, p = %.2f)", self.forced, self.draws, self.forced_fraction, self.p
        )
