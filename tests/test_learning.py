"""Each head learns: a few optimiser steps on synthetic phantoms lower every head's loss."""

from __future__ import annotations

from pathlib import Path

import torch
from monai.data import DataLoader, Dataset
from monai.transforms import Compose, EnsureChannelFirstd, LoadImaged, ScaleIntensityd
from monai.utils import set_determinism

from bundle.data import PrepareTargetsd, load_datalist, multitask_collate
from bundle.detection import CheXDetector
from bundle.losses import MultiTaskLoss
from bundle.networks import MultiCheXNet


def _batch(datalist: Path) -> dict:
    transform = Compose(
        [
            LoadImaged(keys=["image", "mask"], image_only=True),
            EnsureChannelFirstd(keys=["image", "mask"]),
            ScaleIntensityd(keys="image"),
            PrepareTargetsd(num_classes=14),
        ]
    )
    entries = load_datalist(datalist, "training")[:16]
    return next(iter(DataLoader(Dataset(entries, transform), batch_size=16, collate_fn=multitask_collate)))


def _terms(net: MultiCheXNet, loss: MultiTaskLoss, batch: dict) -> dict[str, float]:
    """Loss terms with batch statistics and the same dropout masks each time (a fixed seed)."""
    torch.manual_seed(1)
    with torch.no_grad():
        return {k: float(v) for k, v in loss(net(batch["image"]), batch).items()}


def test_every_head_loss_falls(tiny_datalist: Path) -> None:
    set_determinism(seed=0)
    batch = _batch(tiny_datalist)
    assert batch["has_det"].all() and any(len(b) for b in batch["boxes"]) and batch["mask"].sum() > 0
    detector = CheXDetector()
    net = MultiCheXNet(backbone="resnet18", num_anchors=detector.num_anchors)
    loss = MultiTaskLoss(detector)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    net.train()
    before = _terms(net, loss, batch)
    for _ in range(25):
        optimizer.zero_grad()
        loss(net(batch["image"]), batch)["loss"].backward()
        optimizer.step()
    after = _terms(net, loss, batch)
    for term in ("cls", "seg", "det_cls", "det_box", "det_gate", "seg_gate", "loss"):
        assert after[term] < before[term], f"{term}: {before[term]:.4f} -> {after[term]:.4f}"
