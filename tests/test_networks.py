"""MultiCheXNet: output shapes per backbone, single encoder pass, partial head selection, TorchScript parity."""

from __future__ import annotations

import pytest
import torch

from bundle.detection import CheXDetector
from bundle.networks import BACKBONE_CHANNELS, CheXEnc, MultiCheXNet


def _anchors_total(size: tuple[int, int], detector: CheXDetector) -> int:
    return sum((size[0] // s) * (size[1] // s) for s in detector.strides) * detector.num_anchors


@pytest.mark.parametrize("backbone", sorted(BACKBONE_CHANNELS))
def test_encoder_levels(backbone: str) -> None:
    features = CheXEnc(backbone).eval()(torch.zeros(1, 1, 64, 96))
    assert [f.shape[1] for f in features] == list(BACKBONE_CHANNELS[backbone])
    assert [tuple(f.shape[2:]) for f in features] == [(64 // s, 96 // s) for s in (2, 4, 8, 16, 32)]


@pytest.mark.parametrize("backbone", ["densenet121", "resnet18"])
def test_output_shapes(backbone: str) -> None:
    detector = CheXDetector()
    net = MultiCheXNet(backbone=backbone, num_classes=5, num_anchors=detector.num_anchors).eval()
    out = net(torch.rand(2, 1, 96, 64))
    assert out["cls"].shape == (2, 5)
    assert out["seg"].shape == (2, 1, 96, 64)
    assert out["det_cls"].shape == (2, _anchors_total((96, 64), detector), 1)
    assert out["det_box"].shape == (2, _anchors_total((96, 64), detector), 4)
    assert out["det_gate"].shape == out["seg_gate"].shape == (2, 1)


def test_rejects_size_not_multiple_of_32() -> None:
    with pytest.raises(ValueError, match="multiples of 32"):
        MultiCheXNet(backbone="resnet18")(torch.zeros(1, 1, 100, 64))


def test_encoder_runs_once_for_all_heads() -> None:
    net = MultiCheXNet(backbone="resnet18").eval()
    calls: list[int] = []
    net.encoder.register_forward_hook(lambda module, args, out: calls.append(args[0].shape[0]))
    out = net(torch.rand(3, 1, 64, 64))
    assert set(out) == {"cls", "seg", "det_cls", "det_box", "det_gate", "seg_gate"}
    assert calls == [3]


def test_tasks_select_heads() -> None:
    net = MultiCheXNet(backbone="resnet18").eval()
    ran: list[str] = []
    for name in ("cls_head", "seg_head", "det_head", "det_gate", "seg_gate"):
        getattr(net, name).register_forward_hook(lambda module, args, out, name=name: ran.append(name))
    out = net(torch.rand(1, 1, 64, 64), ["cls", "seg"])
    assert set(out) == {"cls", "seg"}
    assert sorted(ran) == ["cls_head", "seg_head"]


def test_forward_heads_reuses_features() -> None:
    net = MultiCheXNet(backbone="resnet18").eval()
    image = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        full = net(image)
        features = net.encoder(image)
        again = net.forward_heads(image, features)
    for key in full:
        torch.testing.assert_close(full[key], again[key])


def test_torchscript_matches_eager() -> None:
    net = MultiCheXNet().eval()
    scripted = torch.jit.script(net)
    image = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        eager, script = net(image), scripted(image)
        partial = scripted(image, ["cls"])
    assert set(eager) == set(script)
    for key in eager:
        torch.testing.assert_close(eager[key], script[key])
    assert set(partial) == {"cls"}


@pytest.mark.parametrize("stride", [2, 4])
def test_seg_output_stride_drops_the_finest_blocks_and_keeps_the_mask_size(stride: int) -> None:
    torch.manual_seed(0)
    full = MultiCheXNet(backbone="efficientnet-b0", seg_output_stride=1).eval()
    light = MultiCheXNet(backbone="efficientnet-b0", seg_output_stride=stride).eval()
    assert len(light.seg_head.decoder.blocks) == len(full.seg_head.decoder.blocks) - {2: 1, 4: 2}[stride]
    assert light.init_args["seg_output_stride"] == stride
    image = torch.rand(2, 1, 96, 64)
    with torch.no_grad():
        out = light(image, ["seg"])["seg"]
        features = light.encoder(image)
        coarse = light.seg_head.head(light.seg_head.decoder(features[{2: 0, 4: 1}[stride]:], light.seg_head.skip_connect))
    assert out.shape == (2, 1, 96, 64) and coarse.shape[2:] == (96 // stride, 64 // stride)
    # the mask logits are the decoder's coarse logits, upsampled bilinearly
    torch.testing.assert_close(out, torch.nn.functional.interpolate(coarse, size=(96, 64), mode="bilinear"))
    assert sum(p.numel() for p in light.seg_head.parameters()) < sum(p.numel() for p in full.seg_head.parameters())
    scripted = torch.jit.script(light)
    with torch.no_grad():
        torch.testing.assert_close(scripted(image, ["seg"])["seg"], out)
        gated = light.forward_gated(image, 0.0, 0.0)["seg"]
    torch.testing.assert_close(gated, out)


def test_seg_skip_channels_project_the_wide_levels_only() -> None:
    """DenseNet121's 512- and 1024-channel levels enter the decoder through 1x1 projections to 128 channels; the
    narrower levels and the stride-2 placeholder of ``seg_output_stride=2`` are passed through; the result is
    cheaper, scriptable, and rebuilt from ``init_args``."""
    torch.manual_seed(0)
    net = MultiCheXNet(seg_output_stride=2, seg_skip_channels=128).eval()
    lateral = net.seg_head.lateral
    projected = [not isinstance(m, torch.nn.Identity) for m in lateral]
    assert projected == [False, True, True, True, True]  # strides 2 (placeholder), 4 (256 ch), 8, 16, 32
    assert [m.conv.out_channels for m, p in zip(lateral, projected) if p] == [128] * 4
    plain = MultiCheXNet(seg_output_stride=2)
    assert sum(p.numel() for p in net.seg_head.parameters()) < sum(p.numel() for p in plain.seg_head.parameters()) / 2
    image = torch.rand(2, 1, 64, 96)
    with torch.no_grad():
        out = net(image, ["seg"])["seg"]
        assert out.shape == (2, 1, 64, 96)
        torch.testing.assert_close(torch.jit.script(net)(image, ["seg"])["seg"], out)
        rebuilt = MultiCheXNet(**net.init_args).eval()
        rebuilt.load_state_dict(net.state_dict())
        torch.testing.assert_close(rebuilt(image, ["seg"])["seg"], out)
    with pytest.raises(ValueError, match="seg_skip_channels 64 needs seg_decoder='unet'"):
        MultiCheXNet(seg_decoder="attention_pyramid", seg_skip_channels=64)


def test_seg_output_stride_is_checked() -> None:
    with pytest.raises(ValueError, match="output_stride must be 1, 2 or 4, got 3"):
        MultiCheXNet(backbone="resnet18", seg_output_stride=3)


def test_det_subnet_depth_keeps_the_first_blocks_and_the_output_layout() -> None:
    """CheXDet's subnets with 2 conv blocks: half the blocks, the same anchor-major outputs, the weights of a
    depth-4 head's first blocks load into it by name, TorchScript and ``init_args`` rebuild it."""
    torch.manual_seed(0)
    detector = CheXDetector()
    deep = MultiCheXNet(backbone="efficientnet-b0", num_anchors=detector.num_anchors).eval()
    slim = MultiCheXNet(backbone="efficientnet-b0", num_anchors=detector.num_anchors, det_subnet_depth=2).eval()
    for subnet in (slim.det_head.cls_subnet, slim.det_head.box_subnet):
        assert sum(isinstance(m, torch.nn.Conv2d) for m in subnet.conv) == 2
    assert slim.init_args["det_subnet_depth"] == 2
    slim_keys = set(slim.state_dict())
    assert slim_keys < set(deep.state_dict()) and not any(".conv.6." in k for k in slim_keys)
    image = torch.rand(2, 1, 96, 64)
    with torch.no_grad():
        out = slim(image, ["det"])
        assert out["det_cls"].shape == deep(image, ["det"])["det_cls"].shape
        assert out["det_box"].shape == (2, _anchors_total((96, 64), detector), 4)
        torch.testing.assert_close(torch.jit.script(slim)(image, ["det"])["det_box"], out["det_box"])
        rebuilt = MultiCheXNet(**slim.init_args).eval()
        rebuilt.load_state_dict(slim.state_dict())
        torch.testing.assert_close(rebuilt(image, ["det"])["det_cls"], out["det_cls"])
    with pytest.raises(ValueError, match="subnet_depth must be 1-4, got 5"):
        MultiCheXNet(backbone="efficientnet-b0", det_subnet_depth=5)


def test_train_config_builds_the_light_heads_and_the_recipes_keep_the_full_decoder() -> None:
    """configs/train.json's network: CheXSeg at stride 2 on projected levels, 2-block CheXDet subnets, cheaper
    than the class defaults' heads; lung.json and kltv_appau.json restore the full-resolution decoder, full_heads.json
    the class defaults."""
    from monai.bundle import ConfigParser

    from .conftest import ROOT

    def network(*overlays: str) -> MultiCheXNet:
        parser = ConfigParser()
        parser.read_config([str(ROOT / "configs" / name) for name in ("train.json", *overlays)])
        parser["datalist_file"] = "unused.json"  # no demo set is generated to build the network
        return parser.get_parsed_content("network_def")

    light = network()
    priors = {key: light.init_args[key] for key in ("cls_prior", "seg_prior")}  # initialisation, not the heads' shape
    full = MultiCheXNet(num_anchors=light.init_args["num_anchors"], **priors)
    assert light.init_args["seg_output_stride"] == 2 and light.init_args["det_subnet_depth"] == 2
    for head in ("seg_head", "det_head.cls_subnet", "det_head.box_subnet"):
        heads = [sum(p.numel() for p in n.get_submodule(head).parameters()) for n in (light, full)]
        assert heads[0] < heads[1] * 0.6, (head, heads)
    for overlays in (("lung.json",), ("kltv_appau.json",)):
        args = network(*overlays).init_args
        assert (args["seg_output_stride"], args["seg_skip_channels"], args["seg_channels"]) == (1, None, [128, 64, 32, 16, 8])
        assert args["seg_prior"] is None  # the lesion mask prior is the demo's, not the lungs' or APPAU-Net's
    assert network("full_heads.json").init_args == full.init_args  # the heads of the default model before 0.6.0


def test_cls_prior_starts_the_classifier_and_gates_at_the_prior() -> None:
    """With ``cls_prior`` the classifier's and both gates' probabilities start near the prior on real forward
    passes (not at 0.5), every other weight is the default initialisation's, and a prior outside (0, 1) is named."""
    image = torch.rand(4, 1, 64, 64)
    torch.manual_seed(0)
    plain = MultiCheXNet(backbone="resnet18").eval()
    torch.manual_seed(0)
    primed = MultiCheXNet(backbone="resnet18", cls_prior=0.05).eval()
    assert primed.init_args["cls_prior"] == 0.05
    with torch.no_grad():
        before, after = plain(image, ["cls", "det_gate", "seg_gate"]), primed(image, ["cls", "det_gate", "seg_gate"])
    for key in ("cls", "det_gate", "seg_gate"):
        assert abs(torch.sigmoid(before[key]).mean().item() - 0.5) < 0.1, key
        assert abs(torch.sigmoid(after[key]).mean().item() - 0.05) < 0.02, key
    biases = {"cls_head.dec.bias", "det_gate.dec.bias", "seg_gate.dec.bias"}
    primed_state = primed.state_dict()
    for name, value in plain.state_dict().items():
        if name not in biases:
            torch.testing.assert_close(primed_state[name], value, rtol=0, atol=0, msg=name)
    with pytest.raises(ValueError, match="prior probability must be in \\(0, 1\\), got 1.0"):
        MultiCheXNet(backbone="resnet18", cls_prior=1.0)



def test_seg_prior_starts_the_mask_pixels_at_the_prior() -> None:
    """With ``seg_prior`` CheXSeg's mask probabilities start near the prior on a real forward pass, at any output
    stride; the attention pyramid decoder refuses it by name."""
    image = torch.rand(2, 1, 64, 64)
    for stride in (1, 2):
        torch.manual_seed(0)
        net = MultiCheXNet(backbone="resnet18", seg_output_stride=stride, seg_prior=0.01).eval()
        with torch.no_grad():
            probs = torch.sigmoid(net(image, ["seg"])["seg"])
        assert abs(probs.mean().item() - 0.01) < 0.005, stride
        assert net.init_args["seg_prior"] == 0.01
    with pytest.raises(ValueError, match="seg_prior 0.01 needs seg_decoder='unet'"):
        MultiCheXNet(backbone="resnet18", seg_decoder="attention_pyramid", seg_prior=0.01)
