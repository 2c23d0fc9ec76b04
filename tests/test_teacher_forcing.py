"""Teacher forcing: the realised forced rate follows p, and the heads train on the chosen samples only."""

from __future__ import annotations

import pytest
import torch

from bundle.detection import CheXDetector
from bundle.losses import MultiTaskLoss, TeacherForcing

from .test_losses import _batch, _pred


@pytest.mark.parametrize("p", [0.0, 0.3, 0.9, 1.0])
def test_forced_fraction_follows_p(p: float) -> None:
    forcing = TeacherForcing(p=p, seed=1)
    truth = torch.tensor([True, False, True, False])
    gate = torch.tensor([-3.0, 3.0, -3.0, 3.0])  # the classifier passes exactly the truth negatives
    forced_batches = 0
    for _ in range(2000):
        chosen = forcing.select(gate, truth)
        assert chosen.tolist() in ([True, False, True, False], [False, True, False, True])
        forced_batches += chosen.tolist() == truth.tolist()
    assert forcing.forced_fraction == forced_batches / 2000
    assert abs(forcing.forced_fraction - p) < 0.03


def test_per_sample_draws() -> None:
    forcing = TeacherForcing(p=0.5, per_sample=True, seed=0)
    truth = torch.ones(1000, dtype=torch.bool)
    chosen = forcing.select(torch.full((1000,), -5.0), truth)
    assert forcing.draws == 1000 and abs(chosen.float().mean() - 0.5) < 0.05
    assert chosen.sum() == forcing.forced


def test_unforced_batch_trains_heads_on_gate_false_positive() -> None:
    """p = 0: the seg head trains on what the gate passes, here the unlabelled-positive sample 0 is excluded
    and the gate's false positive (sample 2, empty truth) is included."""
    detector = CheXDetector()
    batch = _batch()
    batch["has_seg"] = torch.tensor([True, True, True])
    pred = _pred(detector)
    with torch.no_grad():
        pred["seg_gate"].copy_(torch.tensor([[-4.0], [-4.0], [4.0]]))
    MultiTaskLoss(detector, teacher_forcing=TeacherForcing(p=0.0))(pred, batch)["loss"].backward()
    grad = pred["seg"].grad.flatten(1).abs().sum(1)
    assert grad[0] == 0 and grad[1] == 0 and grad[2] > 0


def test_forced_batch_trains_heads_on_truth_positives() -> None:
    detector = CheXDetector()
    batch = _batch()
    batch["has_seg"] = torch.tensor([True, True, True])
    pred = _pred(detector)
    MultiTaskLoss(detector, teacher_forcing=TeacherForcing(p=1.0))(pred, batch)["loss"].backward()
    grad = pred["seg"].grad.flatten(1).abs().sum(1)
    assert grad[0] > 0 and grad[1] == 0 and grad[2] == 0


def test_missing_gate_output_is_reported() -> None:
    detector = CheXDetector()
    pred = _pred(detector)
    del pred["seg_gate"]
    with pytest.raises(ValueError, match="seg_gate"):
        MultiTaskLoss(detector, teacher_forcing=TeacherForcing())(pred, _batch())
