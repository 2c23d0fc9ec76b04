"""MultiTaskLoss: per-head losses over the samples that carry each label kind (partial labels)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import torch
import torch.nn.functional as F
from monai.losses import DiceLoss
from torch import Tensor, nn

from bundle.detection import CheXDetector
from bundle.networks import deep_supervision_key

from .saliency import SaliencyLoss
from .teacher_forcing import TeacherForcing

#: Loss terms and their default weights.
DEFAULT_WEIGHTS: dict[str, float] = {
    "cls": 1.0, "seg": 1.0, "det": 1.0, "det_gate": 0.5, "seg_gate": 0.5, "sal": 1.0,
}
_WEIGHT_OF: dict[str, str] = {"det_cls": "det", "det_box": "det"}


def _zero(reference: Tensor) -> Tensor:
    """A zero that stays connected to ``reference``'s graph (keeps every parameter in DDP's reduction)."""
    return reference.sum() * 0.0


class DiceBCELoss(nn.Module):
    """Dice over the batch plus BCE, on (B, 1, H, W) mask logits: CheXSeg's default loss."""

    def __init__(self) -> None:
        super().__init__()
        self.dice = DiceLoss(sigmoid=True, batch=True)

    def forward(self, logits: Tensor, mask: Tensor) -> Tensor:
        return self.dice(logits, mask) + F.binary_cross_entropy_with_logits(logits, mask)


class MultiTaskLoss(nn.Module):
    """Sum of weighted head losses; each head sees only the samples flagged as carrying its labels.

    - ``cls``: BCE with logits over known findings only (``cls_known``);
    - ``seg``: ``seg_loss`` on mask logits, by default Dice (over the batch) + BCE (:class:`DiceBCELoss`);
    - ``seg_ds1``, ``seg_ds2``, ...: with a deep-supervised decoder in training, ``seg_loss`` on each coarser
      scale's mask logits (upsampled to full size), weighted by ``weights["seg"]`` times that scale's
      ``deep_supervision_weights`` entry;
    - ``det``: the detector's focal classification + box regression losses;
    - ``det_gate``/``seg_gate``: BCE of the positive-case classifiers against "has a box" / "has a mask pixel";
    - ``sal``: ``sal_loss`` of the saliency head's log-distribution against the ``saliency`` map, over the samples
      that have one (``has_sal``).

    Returns a dict of every term (unweighted) and ``loss`` (the weighted sum).

    With ``teacher_forcing`` the segmentation and detection terms use, among the samples carrying their labels,
    only those :class:`TeacherForcing` selects (ground-truth positives, or what the gate passes), so the
    ``seg_gate`` / ``det_gate`` outputs must be computed alongside.

    Args:
        detector: computes the detection losses from CheXDet's outputs.
        weights: weight of each term (``det`` weighs both detection terms); missing terms weigh 0.
        teacher_forcing: sample selection for the gated heads; None trains them on every labelled sample.
        seg_loss: ``(logits, mask) -> scalar`` for the masks, e.g. :class:`bundle.losses.KLTVLoss` with
            ``sigmoid=True``, MONAI's ``DiceLoss`` or ``TverskyLoss``; None: :class:`DiceBCELoss`.
        deep_supervision_weights: weight of each deep-supervision scale relative to ``seg`` (``seg_ds1`` first,
            the finest); None: ``0.5 ** k`` for ``seg_ds<k>``.
        sal_loss: ``(log_pred, target) -> scalar`` for the saliency maps; None: KL divergence
            (:class:`SaliencyLoss`).
    """

    def __init__(
        self,
        detector: CheXDetector,
        weights: Mapping[str, float] | None = None,
        teacher_forcing: TeacherForcing | None = None,
        seg_loss: Callable[[Tensor, Tensor], Tensor] | None = None,
        deep_supervision_weights: Sequence[float] | None = None,
        sal_loss: Callable[[Tensor, Tensor], Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.detector = detector
        self.teacher_forcing = teacher_forcing
        self.weights = dict(DEFAULT_WEIGHTS if weights is None else weights)
        self.default_weights = dict(self.weights)
        unknown = set(self.weights) - set(DEFAULT_WEIGHTS)
        if unknown:
            raise ValueError(f"unknown loss terms {sorted(unknown)}; known: {sorted(DEFAULT_WEIGHTS)}")
        self.seg_loss = DiceBCELoss() if seg_loss is None else seg_loss
        self.deep_supervision_weights = None if deep_supervision_weights is None else list(deep_supervision_weights)
        self.sal_loss = SaliencyLoss() if sal_loss is None else sal_loss

    def forward(self, pred: Mapping[str, Tensor], batch: Mapping[str, object]) -> dict[str, Tensor]:
        terms: dict[str, Tensor] = {}
        if "cls" in pred:
            terms["cls"] = self._cls(pred["cls"], batch)
        deep = self._deep_supervision_keys(pred)
        if "seg" in pred:
            selected = self._selected(pred, "seg_gate", self._has_mask(batch))
            terms["seg"] = self._seg(pred["seg"], batch, selected)
            terms.update({key: self._seg(pred[key], batch, selected) for key in deep})
        if "det_cls" in pred:
            selected = self._selected(pred, "det_gate", self._has_boxes(batch))
            terms.update(self._det(pred["det_cls"], pred["det_box"], batch, selected))
        for gate, truth in (("det_gate", self._has_boxes), ("seg_gate", self._has_mask)):
            if gate in pred:
                flag = batch["has_det" if gate == "det_gate" else "has_seg"]
                terms[gate] = self._masked_bce(pred[gate][:, 0], truth(batch), flag)
        if "sal" in pred:
            terms["sal"] = self._sal(pred["sal"], batch)
        weights = {k: self.weights.get(_WEIGHT_OF.get(k, k), 0.0) for k in terms}
        weights.update(self._deep_supervision_weights(len(deep)))
        terms["loss"] = sum((weights[k] * v for k, v in terms.items()), torch.zeros((), device=batch["image"].device))
        return terms

    @staticmethod
    def _deep_supervision_keys(pred: Mapping[str, Tensor]) -> list[str]:
        """The deep-supervision outputs in ``pred`` (with ``seg``): ``seg_ds1``, ``seg_ds2``, ... while present."""
        keys: list[str] = []
        while "seg" in pred and deep_supervision_key(len(keys) + 1) in pred:
            keys.append(deep_supervision_key(len(keys) + 1))
        return keys

    def _deep_supervision_weights(self, scales: int) -> dict[str, float]:
        """Weight in the total of each of the first ``scales`` deep-supervision terms: ``seg``'s times its own."""
        own = self.deep_supervision_weights
        if own is None:
            own = [0.5**k for k in range(1, scales + 1)]
        if scales > len(own):
            raise ValueError(
                f"the network gives {scales} deep-supervision outputs but deep_supervision_weights has {len(own)} "
                "entries; give one weight per scale"
            )
        return {deep_supervision_key(k + 1): self.weights.get("seg", 0.0) * own[k] for k in range(scales)}

    def _selected(self, pred: Mapping[str, Tensor], gate: str, truth_positive: Tensor) -> Tensor:
        if self.teacher_forcing is None:
            return torch.ones_like(truth_positive)
        if gate not in pred:
            raise ValueError(f"teacher forcing needs the '{gate}' output: add it to the trainer's tasks")
        return self.teacher_forcing.select(pred[gate], truth_positive)

    @staticmethod
    def _masked_bce(logits: Tensor, target: Tensor, flag: Tensor) -> Tensor:
        if not bool(flag.any()):
            return _zero(logits)
        return F.binary_cross_entropy_with_logits(logits[flag], target[flag].to(logits.dtype))

    @staticmethod
    def _has_boxes(batch: Mapping[str, object]) -> Tensor:
        return torch.tensor([len(b) > 0 for b in batch["boxes"]], device=batch["has_det"].device)

    @staticmethod
    def _has_mask(batch: Mapping[str, object]) -> Tensor:
        return batch["mask"].flatten(1).amax(1) > 0

    def _cls(self, logits: Tensor, batch: Mapping[str, object]) -> Tensor:
        known = batch["cls_known"] & batch["has_cls"][:, None]
        if not bool(known.any()):
            return _zero(logits)
        bce = F.binary_cross_entropy_with_logits(logits, batch["cls"].to(logits.dtype), reduction="none")
        return (bce * known).sum() / known.sum()

    def _seg(self, logits: Tensor, batch: Mapping[str, object], selected: Tensor) -> Tensor:
        flag = batch["has_seg"] & selected
        if not bool(flag.any()):
            return _zero(logits)
        logits, mask = logits[flag], batch["mask"][flag].to(logits.dtype)
        return self.seg_loss(logits, mask)

    def _sal(self, log_pred: Tensor, batch: Mapping[str, object]) -> Tensor:
        flag = batch.get("has_sal")
        if flag is None or not bool(flag.any()):
            return _zero(log_pred)
        return self.sal_loss(log_pred[flag], batch["saliency"][flag])

    def _det(
        self, det_cls: Tensor, det_box: Tensor, batch: Mapping[str, object], selected: Tensor
    ) -> dict[str, Tensor]:
        flag = batch["has_det"] & selected
        if not bool(flag.any()):
            return {"det_cls": _zero(det_cls), "det_box": _zero(det_box)}
        index = torch.nonzero(flag).flatten().tolist()
        targets = [{"boxes": batch["boxes"][i], "labels": batch["box_labels"][i]} for i in index]
        return self.detector.loss(det_cls[flag], det_box[flag], targets, batch["image"].shape[2:])
