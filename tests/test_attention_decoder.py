"""APPAU-Net's decoder option of CheXSeg: attention gates, image pyramid, deep supervision, TorchScript and ONNX."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from bundle.data import NIH_FINDINGS
from bundle.detection import CheXDetector
from bundle.export import check_network_io, load_exported, max_output_difference
from bundle.losses import MultiTaskLoss
from bundle.networks import AttentionGate, AttentionPyramidDecoder, CheXEnc, MultiCheXNet, deep_supervision_key
from bundle.packaging import ModelPackage, save_model

from .conftest import ROOT

SCALES = [deep_supervision_key(k) for k in range(1, 5)]


def _detector() -> CheXDetector:
    """The detector of configs/train.json, whose anchors metadata.json describes."""
    args = json.loads((ROOT / "configs" / "train.json").read_text())["detector"]
    return CheXDetector(**{k: v for k, v in args.items() if k not in ("_target_", "num_classes")})


def _net(deep_supervision: bool = True) -> MultiCheXNet:
    torch.manual_seed(0)
    return MultiCheXNet(
        backbone="efficientnet-b0", num_anchors=_detector().num_anchors, seg_decoder="attention_pyramid",
        deep_supervision=deep_supervision,
    )


def test_attention_gate_keeps_the_skip_shape_with_coefficients_in_unit_interval() -> None:
    gate = AttentionGate(2, f_int=4, f_g=16, f_l=8).train()
    g, skip = 3.0 * torch.randn(2, 16, 12, 10), 3.0 * torch.randn(2, 8, 12, 10)
    alpha = gate.coefficients(g, skip)
    assert alpha.shape == (2, 1, 12, 10)
    assert float(alpha.min()) >= 0.0 and float(alpha.max()) <= 1.0 and float(alpha.std()) > 0.0
    torch.testing.assert_close(gate(g, skip), skip * alpha)


def test_pyramid_image_reaches_every_decoder_scale() -> None:
    """With the encoder features fixed, changing only the image changes every scale's output: each decoder scale
    sees the image at its own resolution (the coarsest one, stride 16, sees it through the pyramid only)."""
    torch.manual_seed(0)
    encoder = CheXEnc("efficientnet-b0").eval()
    decoder = AttentionPyramidDecoder(encoder.out_channels).eval()
    image = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        features = encoder(image)
        first, second = decoder.forward_deep(image, features), decoder.forward_deep(torch.rand(1, 1, 64, 64), features)
    assert len(first) == 5
    assert all(float((a - b).abs().max()) > 1e-6 for a, b in zip(first, second))


def test_deep_supervision_one_output_per_scale_in_training_and_one_at_inference() -> None:
    net, image = _net(), torch.rand(2, 1, 64, 96)
    train = net.train()(image)
    assert sorted(k for k in train if k.startswith("seg")) == ["seg", *SCALES, "seg_gate"]
    assert all(train[k].shape == (2, 1, 64, 96) for k in ["seg", *SCALES])
    evaluated = net.eval()(image)
    assert sorted(k for k in evaluated if k.startswith("seg")) == ["seg", "seg_gate"]
    assert sorted(k for k in _net(False).train()(image) if k.startswith("seg")) == ["seg", "seg_gate"]
    with pytest.raises(ValueError, match="deep_supervision needs seg_decoder='attention_pyramid'"):
        MultiCheXNet(backbone="efficientnet-b0", deep_supervision=True)


def test_deep_supervision_terms_weighted_and_summed() -> None:
    generator = torch.Generator().manual_seed(0)
    mask = (torch.rand(2, 1, 32, 32, generator=generator) > 0.5).float()
    pred = {k: torch.randn(2, 1, 32, 32, generator=generator) for k in ["seg", *SCALES[:3]]}
    batch = {"image": torch.rand(2, 1, 32, 32), "mask": mask, "has_seg": torch.tensor([True, True]),
             "boxes": [torch.zeros(0, 4)] * 2, "has_det": torch.tensor([False, False])}
    weights = [0.4, 0.2, 0.1]
    terms = MultiTaskLoss(CheXDetector(), weights={"seg": 3.0}, deep_supervision_weights=weights)(pred, batch)
    plain = MultiTaskLoss(CheXDetector(), weights={"seg": 1.0})
    for key in SCALES[:3]:
        torch.testing.assert_close(terms[key], plain({"seg": pred[key]}, batch)["seg"])
    expected = 3.0 * (terms["seg"] + sum(w * terms[k] for w, k in zip(weights, SCALES)))
    torch.testing.assert_close(terms["loss"], expected)
    halving = MultiTaskLoss(CheXDetector(), weights={"seg": 1.0})(pred, batch)
    torch.testing.assert_close(halving["loss"], halving["seg"] + sum(0.5**k * halving[SCALES[k - 1]] for k in (1, 2, 3)))
    with pytest.raises(ValueError, match="3 deep-supervision outputs but deep_supervision_weights has 2 entries"):
        MultiTaskLoss(CheXDetector(), deep_supervision_weights=[0.5, 0.25])(pred, batch)


def _export_torchscript(ckpt_dir: Path, filepath: Path) -> None:
    spec = importlib.util.spec_from_file_location("export_torchscript", ROOT / "scripts" / "export_torchscript.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    module.main(str(ckpt_dir), str(filepath), str(ROOT / "configs" / "inference.json"), str(ROOT / "configs" / "metadata.json"))


def test_attention_pyramid_torchscript_export_matches_eager(tmp_path: Path) -> None:
    """scripts/export_torchscript.py on a packaged attention-pyramid model: rebuilt from the package's network
    arguments, it matches the eager network (forward and forward_gated) and the metadata's shapes."""
    net, detector = _net(), _detector()
    package = ModelPackage.of(net, detector, list(NIH_FINDINGS), [64, 64])
    save_model(tmp_path / "model.pt", net.state_dict(), package)
    _export_torchscript(tmp_path, tmp_path / "model.ts")
    scripted, metadata, _, stored = load_exported(str(tmp_path / "model.ts"))
    assert stored.network_args["seg_decoder"] == "attention_pyramid" and stored.network_args["deep_supervision"]
    assert check_network_io(scripted, metadata, sizes=(2,)) == []
    images = torch.rand(2, 1, 64, 96)
    diffs = max_output_difference(scripted, net.eval(), images, (0.0, 0.0))
    assert max(diffs.values()) < 1e-5, diffs
    assert sorted(k for k in scripted.train()(images) if k.startswith("seg_ds")) == SCALES


def test_attention_pyramid_onnx_export_matches_eager() -> None:
    ort = pytest.importorskip("onnxruntime")
    from bundle.onnx_export import GATED_NAMES, OUTPUT_NAMES, THRESHOLD_NAMES, export_onnx

    net = _net().eval()
    session = ort.InferenceSession(export_onnx(net).SerializeToString(), providers=["CPUExecutionProvider"])
    image = torch.rand(1, 1, 96, 64)  # another batch and size than the tracing input
    for thresholds in ((0.0, 0.0), (0.0, 2.0)):  # every head, then the segmentation head gated out
        with torch.no_grad():
            eager = net.forward_gated(image, *thresholds)
        feeds = {"image": image.numpy(), **{n: np.array(t, np.float32) for n, t in zip(THRESHOLD_NAMES, thresholds)}}
        names = [*OUTPUT_NAMES, *GATED_NAMES]
        for name, got in zip(names, session.run(names, feeds)):
            np.testing.assert_allclose(got, eager[name].numpy(), atol=1e-4, rtol=1e-4)
