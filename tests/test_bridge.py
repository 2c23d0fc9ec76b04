"""The saliency bridge: the classifier's input gradient enters the segmentation decoder; gradients flow; model files
rebuild it; exports refuse it."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from bundle.detection import CheXDetector
from bundle.networks import BridgeExportError, MultiCheXNet, input_saliency
from bundle.packaging import ModelPackage, read_package, save_model
from bundle.runtimes import load_backend


def _net(**kwargs) -> MultiCheXNet:
    torch.manual_seed(0)
    return MultiCheXNet(backbone="resnet18", seg_channels=(16, 16, 8, 8, 8), **kwargs)


def test_bridge_saliency_is_the_absolute_input_gradient_of_the_top_class() -> None:
    net = _net().eval()
    image = torch.rand(2, 1, 64, 64, requires_grad=True)
    logits = net(image, ["cls"])["cls"]
    top = logits.argmax(1)
    expected = []
    for i in range(2):
        (grad,) = torch.autograd.grad(logits[i, top[i]], image, retain_graph=True)
        expected.append(grad[i].abs() / grad[i].abs().max())
    saliency = input_saliency(logits, image, create_graph=False)
    assert saliency.shape == (2, 1, 64, 64)
    assert torch.allclose(saliency, torch.stack(expected), rtol=1e-4, atol=1e-5)


def test_bridge_changes_the_decoder_input_and_its_gradient_flows() -> None:
    net = _net(saliency_bridge=True).train()
    image = torch.rand(2, 1, 64, 64)
    seen: list[torch.Tensor] = []
    handle = net.seg_head.decoder.register_forward_pre_hook(lambda module, args: seen.append(args[0][-1].detach()))
    out = net(image, ["seg"])
    bridged_input = seen[-1]
    with torch.no_grad():
        deepest = net.encoder(image)[-1]
    handle.remove()
    assert not torch.allclose(bridged_input, deepest)  # the decoder starts from bridged features
    assert set(out) == {"seg"}
    out["seg"].mean().backward()
    assert net.bridge.conv.conv.weight.grad.abs().sum() > 0
    assert net.cls_head.dec.weight.grad.abs().sum() > 0  # through the saliency (second order) into the classifier
    assert image.grad is None  # the caller's image is left alone


def test_bridge_eval_matches_gated_and_no_grad_inference() -> None:
    net = _net(saliency_bridge=True).eval()
    image = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        plain = net(image)
        gated = net.forward_gated(image, seg_threshold=0.0)
    assert torch.allclose(plain["seg"], gated["seg"], atol=1e-5)
    assert torch.allclose(plain["cls"], gated["cls"], atol=1e-6)
    assert torch.allclose(plain["seg"], net(image)["seg"], atol=1e-5)  # with or without autograd


def test_bridge_model_file_rebuilds_it_and_export_is_refused(tmp_path: Path) -> None:
    net, detector = _net(saliency_bridge=True), CheXDetector()
    package = ModelPackage.of(net, detector, [f"c{i}" for i in range(14)], [64, 64])
    save_model(tmp_path / "model.pt", net.state_dict(), package)
    rebuilt = read_package(tmp_path / "model.pt").network()
    assert rebuilt.bridge is not None and rebuilt.init_args["saliency_bridge"] is True
    with pytest.raises(BridgeExportError, match="saliency bridge.*eager backend"):
        load_backend("torchscript", network=rebuilt)
    assert load_backend("eager", network=rebuilt) is not None
