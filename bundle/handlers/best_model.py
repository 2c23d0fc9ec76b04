"""BestModelState: what the best-model saver remembers, made part of the training checkpoint so that a resumed run
keeps the best validation score instead of overwriting ``model.pt`` with its first, possibly worse, epoch."""

from __future__ import annotations

from typing import Any

from monai.handlers import CheckpointSaver


class BestModelState:
    """``state_dict`` / ``load_state_dict`` of a key-metric :class:`~monai.handlers.CheckpointSaver` (the scores and
    files of the best models it kept) and of its evaluator's best metric and epoch, to be one of
    :class:`bundle.handlers.checkpoint.TrainingCheckpoint`'s ``objects``.

    Args:
        saver: the evaluator's best-model saver (``save_key_metric=True``).
        evaluator: the engine it is attached to (its ``state.best_metric`` / ``best_metric_epoch``).
    """

    def __init__(self, saver: CheckpointSaver, evaluator: Any) -> None:
        if getattr(saver, "_key_metric_checkpoint", None) is None:
            raise ValueError("BestModelState needs a CheckpointSaver made with save_key_metric=True")
        self.saver = saver
        self.evaluator = evaluator

    def state_dict(self) -> dict[str, Any]:
        state = self.evaluator.state
        # MONAI's saver restores its ranking with load_state_dict but exposes no state_dict: read its ignite Checkpoint
        return {
            "saved": self.saver._key_metric_checkpoint.state_dict(),
            "best_metric": float(getattr(state, "best_metric", -1.0)),
            "best_metric_epoch": int(getattr(state, "best_metric_epoch", -1)),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.saver.load_state_dict(state_dict["saved"])
        self.evaluator.state.best_metric = state_dict["best_metric"]
        self.evaluator.state.best_metric_epoch = state_dict["best_metric_epoch"]
