"""Positive-case gating: one encoder pass, gated-out images get empty outputs, gated-in ones full outputs."""

from __future__ import annotations

import torch

from bundle.detection import CheXDetector
from bundle.engines.gating import gated_forward
from bundle.networks import MultiCheXNet
from bundle.networks.multichexnet import NEGATIVE_LOGIT


def _net() -> MultiCheXNet:
    torch.manual_seed(0)
    return MultiCheXNet(backbone="resnet18", num_anchors=CheXDetector().num_anchors).eval()


def _force_gates(net: MultiCheXNet, det: list[float], seg: list[float]) -> None:
    """Replace each gate's output with the given per-image logits (a forward hook)."""
    for name, logits in (("det_gate", det), ("seg_gate", seg)):
        values = torch.tensor(logits)[:, None]
        getattr(net, name).register_forward_hook(lambda module, args, out, v=values: v[: out.shape[0]].clone())


def test_gating_runs_encoder_once_and_heads_on_positives_only() -> None:
    net = _net()
    _force_gates(net, det=[5.0, -5.0, 5.0], seg=[-5.0, 5.0, -5.0])
    encoder_calls: list[int] = []
    head_batches: dict[str, list[int]] = {"seg_head": [], "det_head": []}
    net.encoder.register_forward_hook(lambda m, a, o: encoder_calls.append(a[0].shape[0]))
    net.seg_head.register_forward_hook(lambda m, a, o: head_batches["seg_head"].append(a[0].shape[0]))
    net.det_head.register_forward_hook(lambda m, a, o: head_batches["det_head"].append(a[0][0].shape[0]))
    image = torch.rand(3, 1, 64, 64)
    with torch.no_grad():
        gated = gated_forward(net, image)
        full = net(image)
    assert encoder_calls == [3, 3]  # one pass for the gated forward, one for the reference
    assert head_batches == {"seg_head": [1, 3], "det_head": [2, 3]}
    assert gated["det_gated_in"].tolist() == [True, False, True]
    assert gated["seg_gated_in"].tolist() == [False, True, False]
    assert (gated["seg"][[0, 2]] == NEGATIVE_LOGIT).all()
    assert (gated["det_cls"][1] == NEGATIVE_LOGIT).all() and (gated["det_box"][1] == 0).all()
    torch.testing.assert_close(gated["seg"][1], full["seg"][1], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(gated["det_cls"][[0, 2]], full["det_cls"][[0, 2]], atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(gated["cls"], full["cls"])


def test_gated_out_images_get_no_boxes_and_empty_mask() -> None:
    net = _net()
    _force_gates(net, det=[-5.0, -5.0], seg=[-5.0, -5.0])
    with torch.no_grad():
        gated = gated_forward(net, torch.rand(2, 1, 64, 64))
    found = CheXDetector().predict(gated["det_cls"], gated["det_box"], (64, 64))
    assert all(len(f["boxes"]) == 0 for f in found)
    assert (torch.sigmoid(gated["seg"]) < 1e-6).all()


def test_scripted_gated_forward_matches_eager() -> None:
    scripted = torch.jit.script(MultiCheXNet(backbone="densenet121", num_anchors=4).eval())
    eager = MultiCheXNet(backbone="densenet121", num_anchors=4).eval()
    eager.load_state_dict(scripted.state_dict())
    image = torch.rand(3, 1, 64, 64)
    with torch.no_grad():
        probs = torch.sigmoid(eager(image)["det_gate"][:, 0])
        threshold = float(probs.median())  # some images in, some out
        expected = eager.forward_gated(image, threshold, 0.0)
        got = scripted.forward_gated(image, threshold, 0.0)
    assert got["det_gated_in"].tolist() == expected["det_gated_in"].tolist()
    assert 0 < int(got["det_gated_in"].sum()) < 3 and bool(got["seg_gated_in"].all())
    for key in expected:
        torch.testing.assert_close(got[key], expected[key])
