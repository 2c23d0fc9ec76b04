"""MultiTaskLoss: each head's loss uses only the samples that carry its labels."""

from __future__ import annotations

import pytest
import torch

from bundle.detection import CheXDetector
from bundle.losses import MultiTaskLoss


def _batch(size: int = 64) -> dict:
    mask = torch.zeros(3, 1, size, size)
    mask[0, 0, 10:30, 12:40] = 1
    return {
        "image": torch.rand(3, 1, size, size),
        "cls": torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]),
        "cls_known": torch.tensor([[True, True], [True, False], [False, False]]),
        "has_cls": torch.tensor([True, True, False]),
        "mask": mask,
        "has_seg": torch.tensor([True, False, False]),
        "boxes": [torch.zeros(0, 4), torch.tensor([[8.0, 8.0, 40.0, 36.0]]), torch.zeros(0, 4)],
        "box_labels": [torch.zeros(0, dtype=torch.long), torch.zeros(1, dtype=torch.long), torch.zeros(0, dtype=torch.long)],
        "has_det": torch.tensor([False, True, False]),
    }


def _pred(detector: CheXDetector, size: int = 64) -> dict[str, torch.Tensor]:
    anchors = sum((size // s) ** 2 for s in detector.strides) * detector.num_anchors
    return {
        "cls": torch.randn(3, 2, requires_grad=True),
        "seg": torch.randn(3, 1, size, size, requires_grad=True),
        "det_cls": torch.randn(3, anchors, 1, requires_grad=True),
        "det_box": torch.randn(3, anchors, 4, requires_grad=True),
        "det_gate": torch.randn(3, 1, requires_grad=True),
        "seg_gate": torch.randn(3, 1, requires_grad=True),
    }


def test_gradients_only_from_labelled_samples() -> None:
    detector = CheXDetector()
    pred = _pred(detector)
    MultiTaskLoss(detector)(pred, _batch())["loss"].backward()
    cls_grad = pred["cls"].grad
    assert cls_grad[0].abs().min() > 0 and cls_grad[1, 0] != 0
    assert cls_grad[1, 1] == 0 and cls_grad[2].abs().sum() == 0  # unknown finding, unlabelled sample
    assert pred["seg"].grad[0].abs().sum() > 0 and pred["seg"].grad[1:].abs().sum() == 0
    assert pred["seg_gate"].grad[0] != 0 and pred["seg_gate"].grad[1:].abs().sum() == 0
    for key in ("det_cls", "det_box", "det_gate"):
        grad = pred[key].grad
        assert grad[1].abs().sum() > 0 and grad[0].abs().sum() == 0 and grad[2].abs().sum() == 0, key


def test_batch_without_a_label_kind_gives_connected_zero() -> None:
    detector = CheXDetector()
    pred = _pred(detector)
    batch = _batch()
    batch["has_seg"][:] = False
    terms = MultiTaskLoss(detector)(pred, batch)
    assert float(terms["seg"]) == 0.0 and terms["seg"].requires_grad


def test_cls_loss_matches_masked_bce() -> None:
    detector = CheXDetector()
    pred, batch = _pred(detector), _batch()
    terms = MultiTaskLoss(detector)(pred, batch)
    logits = pred["cls"].detach()
    expected = torch.nn.functional.binary_cross_entropy_with_logits(
        torch.stack([logits[0, 0], logits[0, 1], logits[1, 0]]), torch.tensor([1.0, 0.0, 0.0])
    )
    torch.testing.assert_close(terms["cls"].detach(), expected)


def test_unknown_weight_name_rejected() -> None:
    with pytest.raises(ValueError, match="unknown loss terms"):
        MultiTaskLoss(CheXDetector(), weights={"classification": 1.0})
