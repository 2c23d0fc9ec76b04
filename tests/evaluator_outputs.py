"""A stand-in for MultiTaskEvaluator's iteration outputs, and model files with and without a package, for the
evaluation tests (MetricsReport runs on them through a plain Ignite engine)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ignite.engine import Engine
from monai.data import MetaTensor

from bundle.decisions import DecisionPolicy
from bundle.decisions.arrays import sigmoid
from bundle.handlers.metrics_report import MetricsReport
from bundle.packaging import ModelPackage

CLASSES = ["A", "B", "C"]
SIZE = 32


def evaluator_batch(seed: int, n: int = 6, overconfidence: float = 1.0) -> dict[str, Any]:
    """One batch of evaluator outputs with every head, seeded.

    Findings: each label is drawn with probability ``sigmoid(z)``, ``z ~ N(0, 1.5)``, and the classifier reports
    ``sigmoid(overconfidence * z)`` (calibrated at 1, overconfident above). Even-numbered images have a square
    true mask with a one-pixel hole in its probability map and a true box; every image has a bright one-pixel
    speck in its map and a stray predicted box (scoring 0.7 where there is no true box); gates open (0.8 +- noise) on the images with truth.
    """
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, (n, len(CLASSES)))
    cls = torch.tensor(rng.random(z.shape) < sigmoid(z)).float()
    mask = torch.zeros(n, 1, SIZE, SIZE)
    boxes, det = [], []
    for i in range(n):
        if i % 2 == 0:
            mask[i, 0, 4:16, 6:20] = 1
            boxes.append(torch.tensor([[4.0, 6.0, 16.0, 20.0]]))
            found = torch.tensor([[5.0, 6.0, 16.0, 19.0], [20.0, 20.0, 28.0, 28.0], [5.0, 7.0, 16.0, 20.0]])
            scores = torch.tensor([0.9, 0.3, 0.6])
        else:
            boxes.append(torch.zeros(0, 4))
            found = torch.tensor([[20.0, 20.0, 28.0, 28.0]])
            scores = torch.tensor([0.7])
        det.append({"boxes": found, "scores": scores, "labels": torch.zeros(len(found), dtype=torch.long)})
    seg_prob = (mask * 0.8 + torch.rand(n, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(seed)) * 0.3)
    seg_prob[:, 0, 10, 12] = 0.1  # a hole inside the square
    seg_prob[:, 0, 28, 3] = 0.95  # a one-pixel speck
    image = MetaTensor(torch.rand(n, 1, SIZE, SIZE), meta={"filename_or_obj": [f"img{seed}_{i}.png" for i in range(n)]})
    truth = torch.tensor([i % 2 == 0 for i in range(n)]).float()
    gate = (truth * 0.6 + 0.2 + torch.tensor(rng.normal(0, 0.05, n))).clamp(0.01, 0.99).float()
    return {
        "image": image,
        "patient_id": [f"P{seed}_{i // 2}" for i in range(n)],
        "cls_prob": torch.tensor(sigmoid(overconfidence * z)).float(),
        "cls": cls,
        "cls_known": torch.ones(n, len(CLASSES), dtype=torch.bool),
        "has_cls": torch.ones(n, dtype=torch.bool),
        "seg_prob": seg_prob.clamp(0, 1),
        "mask": mask,
        "has_seg": torch.ones(n, dtype=torch.bool),
        "det": det,
        "boxes": boxes,
        "box_labels": [torch.zeros(len(b), dtype=torch.long) for b in boxes],
        "has_det": torch.ones(n, dtype=torch.bool),
        "det_gate_prob": gate,
        "seg_gate_prob": gate.clone(),
    }


def write_model_file(path: Path, policy: DecisionPolicy | None) -> Path:
    """A model file: ``{"model": weights, "bundle": package}`` with ``policy``, or a plain state dict for None."""
    weights = {"w": torch.arange(4.0)}
    path.parent.mkdir(parents=True, exist_ok=True)
    if policy is None:
        torch.save(weights, path)
    else:
        torch.save({"model": weights, "bundle": ModelPackage({}, {}, policy).state_dict()}, path)
    return path


def default_policy() -> DecisionPolicy:
    return DecisionPolicy.default(CLASSES, (SIZE, SIZE))


def evaluate(
    batches: Sequence[Mapping[str, Any]],
    out_dir: Path,
    checkpoint: Path | None,
    split: str = "testing",
    choose: bool = False,
    **kwargs: Any,
) -> dict[str, Any]:
    """Run MetricsReport over ``batches`` and return its metrics.json."""
    engine = Engine(lambda engine, batch: batch)
    settings = dict(n_resamples=50, gallery_size=4, gallery_side=16, image_size=(SIZE, SIZE), **kwargs)
    MetricsReport(out_dir, CLASSES, split=split, checkpoint=checkpoint, choose_policy=choose, **settings).attach(engine)
    engine.run(list(batches))
    return json.loads((out_dir / "metrics.json").read_text())
