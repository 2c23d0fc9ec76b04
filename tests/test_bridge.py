"""The saliency bridge: the classifier's input gradient enters the segmentation decoder; gradients flow; model files
rebuild it; exports refuse it."""

from __future__ import annotations

import json
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
    calls: list[int] = []
    net.cls_head.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        net.forward_gated(image)
    assert len(calls) == 1  # the logits the saliency came from are the gated pass's cls


def test_bridge_model_file_rebuilds_it_and_export_is_refused(tmp_path: Path) -> None:
    net, detector = _net(saliency_bridge=True), CheXDetector()
    package = ModelPackage.of(net, detector, [f"c{i}" for i in range(14)], [64, 64])
    save_model(tmp_path / "model.pt", net.state_dict(), package)
    rebuilt = read_package(tmp_path / "model.pt").network()
    assert rebuilt.bridge is not None and rebuilt.init_args["saliency_bridge"] is True
    with pytest.raises(BridgeExportError, match="saliency bridge.*eager backend"):
        load_backend("torchscript", network=rebuilt)
    assert load_backend("eager", network=rebuilt) is not None


def test_input_gradient_maps_every_finding_and_the_bridge_input_on_one_encoder_pass() -> None:
    """Each finding's map is the absolute gradient of its logit with respect to the image, as a distribution; the
    bridge's input comes from the same pass and equals :func:`input_saliency`."""
    from bundle.explain import input_gradient, input_gradient_pass

    net = _net(saliency_bridge=True).train()
    image = torch.rand(2, 1, 64, 64)
    calls: list[int] = []
    hook = net.encoder.register_forward_hook(lambda *_: calls.append(1))
    features, maps, bridge = input_gradient_pass(net, image)
    hook.remove()
    assert len(calls) == 1 and net.training  # one pass, the mode restored
    source = image.clone().requires_grad_()
    logits = net.eval()(source, ["cls"])["cls"]
    for k in (0, 9):
        (grad,) = torch.autograd.grad(logits[:, k].sum(), source, retain_graph=True)
        expected = grad.abs() / grad.abs().sum(dim=(2, 3), keepdim=True)
        torch.testing.assert_close(maps[:, k : k + 1], expected, rtol=1e-4, atol=1e-9)
    torch.testing.assert_close(bridge, input_saliency(logits, source, create_graph=False), rtol=1e-4, atol=1e-6)
    assert maps.shape == (2, 14, 64, 64) and len(features) == 5 and not features[-1].requires_grad
    torch.testing.assert_close(input_gradient(net, image, [9]), maps[:, 9:10])
    assert input_gradient_pass(_net(), image)[2] is None  # no bridge, no bridge input


def test_explain_with_the_bridge_writes_input_gradient_maps_and_the_gated_outputs(tmp_path: Path) -> None:
    """``run inference --explain`` on a bridge network: the heads run on the input-gradient pass (one encoder pass,
    the same gated outputs as without it), the record names the method, and the files are ``_inputgrad_``."""
    from PIL import Image

    from bundle.decisions import DecisionPolicy, decide
    from bundle.decisions.schema import validate_record
    from bundle.engines.folder_inference import FolderInferenceEvaluator
    from bundle.handlers.prediction_writer import PredictionWriter
    from bundle.outputs import ErrorReport

    detector = CheXDetector()
    net = _net(saliency_bridge=True, num_anchors=detector.num_anchors).eval()
    gates = {"det_gate": 0.5, "seg_gate": 0.0}
    plain = FolderInferenceEvaluator(torch.device("cpu"), [], net, detector=detector, gate_thresholds=gates)
    explained = FolderInferenceEvaluator(torch.device("cpu"), [], net, detector=detector, gate_thresholds=gates,
                                         explain=True)
    image = torch.rand(2, 1, 64, 64)
    calls: list[int] = []
    hook = net.encoder.register_forward_hook(lambda *_: calls.append(1))
    out = explained._explained(image)
    hook.remove()
    assert len(calls) == 1 and "gradcam" not in out and out["input_gradient"].shape == (2, 14, 64, 64)
    reference = plain.forward(image)
    for key in ("cls", "seg", "det_cls", "det_box", "det_gated_in", "seg_gated_in"):
        torch.testing.assert_close(out[key], reference[key], atol=1e-5, rtol=1e-5)
    heads = {k: v[0] for k, v in out.items() if k not in ("det_cls", "det_box")}
    heads.update(boxes=torch.zeros(0, 4), scores=torch.zeros(0), labels=torch.zeros(0, dtype=torch.long))
    source = tmp_path / "x.png"
    Image.fromarray((image[0, 0].numpy().T * 255).astype("uint8")).save(source)
    policy = DecisionPolicy.default([f"c{i}" for i in range(14)], (64, 64))
    assert decide(heads, policy, (64, 64)).explanation_method == "input_gradient"
    writer = PredictionWriter(str(tmp_path / "out"), policy, ErrorReport(tmp_path / "out" / "errors.json"))
    item = {"source": str(source), "name": "x", "original_size": (64, 64), "model_size": (64, 64), "heads": heads}
    files = writer.write_one(item)
    record = json.loads((tmp_path / "out" / files["json"]).read_text())
    validate_record(record)
    positives = [n for n, f in record["findings"].items() if f["positive"]]
    top = max(record["findings"], key=lambda n: record["findings"][n]["probability"])
    assert sorted(record["explanations"]) == sorted(positives or [top])
    for finding, explanation in record["explanations"].items():
        assert explanation["method"] == "input_gradient"
        assert record["files"][f"inputgrad_{finding}"] == f"x_inputgrad_{finding}.png"
        assert record["files"][f"inputgrad_nifti_{finding}"] == f"x_inputgrad_{finding}.nii.gz"
        assert (tmp_path / "out" / f"x_inputgrad_{finding}.nii.gz").is_file()
    assert not list((tmp_path / "out").glob("*gradcam*"))
