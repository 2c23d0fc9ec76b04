"""CheXDetector: works without torchvision, losses respond to targets, decoding inverts encoding."""

from __future__ import annotations

import subprocess
import sys

import torch

from bundle.detection import CheXDetector
from bundle.detection.compat import TorchvisionUnavailable


def _targets(*boxes: list[float]) -> list[dict[str, torch.Tensor]]:
    out = []
    for b in boxes:
        t = torch.tensor(b, dtype=torch.float32).reshape(-1, 4)
        out.append({"boxes": t, "labels": torch.zeros(len(t), dtype=torch.int64)})
    return out


def test_detector_patch_without_torchvision() -> None:
    """In a fresh interpreter where torchvision cannot be imported, the detector still matches with ATSS."""
    code = (
        "import sys; sys.modules['torchvision'] = None\n"
        "import torch\n"
        "from bundle.detection import CheXDetector\n"
        "from monai.apps.detection.networks import retinanet_detector as r\n"
        "d = CheXDetector(); n = sum(64 // s * 64 // s for s in d.strides) * d.num_anchors\n"
        "t = [{'boxes': torch.tensor([[8., 8., 30., 30.]]), 'labels': torch.tensor([0])}]\n"
        "l = d.loss(torch.zeros(1, n, 1), torch.zeros(1, n, 4), t, (64, 64))\n"
        "print(r.Matcher.__name__, float(l['det_box']) > 0)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.split()[-2:] == [TorchvisionUnavailable.__name__, "True"]


def test_loss_zero_box_term_for_negatives() -> None:
    d = CheXDetector()
    n = sum((64 // s) ** 2 for s in d.strides) * d.num_anchors
    cls, box = torch.zeros(2, n, 1, requires_grad=True), torch.zeros(2, n, 4, requires_grad=True)
    negatives = d.loss(cls, box, _targets([], []), (64, 64))
    assert float(negatives["det_box"]) == 0.0 and float(negatives["det_cls"]) > 0
    positives = d.loss(cls, box, _targets([[10, 12, 40, 44]], []), (64, 64))
    assert float(positives["det_box"]) > 0
    (positives["det_cls"] + positives["det_box"]).backward()
    assert cls.grad.abs().sum() > 0 and box.grad.abs().sum() > 0


def test_predict_inverts_box_encoding() -> None:
    """Outputs built by encoding a known box on its matched anchors decode back to that box."""
    d = CheXDetector()
    size = (128, 96)
    truth = torch.tensor([[30.0, 20.0, 70.0, 52.0]])
    anchors, locs = d._anchors(size, 1, torch.device("cpu"))
    matched = d.compute_anchor_matched_idxs(anchors, _targets(truth.tolist()), locs)[0]
    assert (matched >= 0).any()
    cls = torch.full((1, len(anchors[0]), 1), -8.0)
    box = torch.zeros(1, len(anchors[0]), 4)
    best = int(torch.nonzero(matched >= 0)[0])
    cls[0, best, 0] = 6.0
    box[0, best] = d.box_coder.encode_single(truth, anchors[0][best : best + 1])[0]
    found = d.predict(cls, box, size)[0]
    assert len(found["boxes"]) == 1
    torch.testing.assert_close(found["boxes"][0], truth[0], atol=1e-3, rtol=0)
    assert float(found["scores"][0]) > 0.99 and int(found["labels"][0]) == 0
