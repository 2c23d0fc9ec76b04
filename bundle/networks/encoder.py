"""CheXEnc: the shared 2D convolutional encoder of MultiCheXNet."""

from __future__ import annotations

import torch
from monai.networks.nets import DenseNet121, DenseNet201, EfficientNetBNFeatures, ResNetFeatures, SENet
from monai.networks.nets.senet import SEResNetBottleneck
from torch import nn

#: Channels of the five feature maps (strides 2, 4, 8, 16, 32) of each supported backbone.
BACKBONE_CHANNELS: dict[str, tuple[int, int, int, int, int]] = {
    "densenet121": (64, 256, 512, 1024, 1024),
    "densenet201": (64, 256, 512, 1792, 1920),
    "se_resnet50": (64, 256, 512, 1024, 2048),
    "resnet18": (64, 64, 128, 256, 512),
    "resnet50": (64, 256, 512, 1024, 2048),
    "efficientnet-b0": (16, 24, 40, 112, 320),
}


class _Stages(nn.Module):
    """A trunk cut into five stages (strides 2, 4, 8, 16, 32), each stage's output a feature map; subclasses set
    ``stages`` (an ``nn.ModuleList``)."""

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features: list[torch.Tensor] = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


class _DenseNetFeatures(_Stages):
    """MONAI's DenseNet121 or DenseNet201 feature trunk in five stages."""

    def __init__(self, in_channels: int, net: type = DenseNet121) -> None:
        super().__init__()
        trunk = net(spatial_dims=2, in_channels=in_channels, out_channels=1).features
        layers = dict(trunk.named_children())
        self.stages = nn.ModuleList(
            [
                nn.Sequential(layers["conv0"], layers["norm0"], layers["relu0"]),
                nn.Sequential(layers["pool0"], layers["denseblock1"]),
                nn.Sequential(layers["transition1"], layers["denseblock2"]),
                nn.Sequential(layers["transition2"], layers["denseblock3"]),
                nn.Sequential(layers["transition3"], layers["denseblock4"], layers["norm5"], nn.ReLU()),
            ]
        )


class _SEResNetFeatures(_Stages):
    """A residual encoder with squeeze-and-excitation blocks (Hu et al. 2018), MONAI's SE-ResNet-50 layout
    (bottleneck blocks 3, 4, 6, 3), in five stages: the stem's max pooling opens the second stage."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        net = SENet(spatial_dims=2, in_channels=in_channels, block=SEResNetBottleneck, layers=(3, 4, 6, 3), groups=1,
                    reduction=16, inplanes=64, downsample_kernel_size=1, input_3x3=False, num_classes=1)
        stem = dict(net.layer0.named_children())
        self.stages = nn.ModuleList(
            [
                nn.Sequential(stem["conv1"], stem["bn1"], stem["relu1"]),
                nn.Sequential(stem["pool"], net.layer1),
                net.layer2,
                net.layer3,
                net.layer4,
            ]
        )


def _build_trunk(backbone: str, in_channels: int) -> nn.Module:
    if backbone in ("densenet121", "densenet201"):
        return _DenseNetFeatures(in_channels, DenseNet121 if backbone == "densenet121" else DenseNet201)
    if backbone == "se_resnet50":
        return _SEResNetFeatures(in_channels)
    if backbone in ("resnet18", "resnet50"):
        return ResNetFeatures(backbone, pretrained=False, spatial_dims=2, in_channels=in_channels)
    # PyTorch's batch-norm momentum (MONAI's EfficientNet default, 0.01, leaves the running statistics far from
    # the data after the few hundred steps of a small training set, and evaluation-mode outputs with them)
    return EfficientNetBNFeatures(backbone, pretrained=False, spatial_dims=2, in_channels=in_channels,
                                  norm=("batch", {"eps": 1e-3, "momentum": 0.1}))


class CheXEnc(nn.Module):
    """Shared encoder: a 1-channel image (side a multiple of 32) to five feature maps at strides 2..32.

    Args:
        backbone: one of ``BACKBONE_CHANNELS`` (DenseNet121 is CheXNet's backbone, Rajpurkar et al. 2017;
            DenseNet201 and the SE-ResNet-50 are the two encoders of the gaze model, Qiu et al. 2024).
        in_channels: image channels (1 for radiographs).
    """

    stride: int = 32

    def __init__(self, backbone: str = "densenet121", in_channels: int = 1) -> None:
        super().__init__()
        if backbone not in BACKBONE_CHANNELS:
            raise ValueError(f"backbone must be one of {sorted(BACKBONE_CHANNELS)}, got {backbone!r}")
        self.backbone = backbone
        self.out_channels = BACKBONE_CHANNELS[backbone]
        self.body = _build_trunk(backbone, in_channels)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return self.body(x)


class DualEncoder(nn.Module):
    """Two CheXEnc run side by side on the same image, their feature maps concatenated level by level (the dual
    encoder of Qiu et al., arXiv:2403.16970: DenseNet201 with a residual squeeze-and-excitation encoder).

    Args:
        backbones: the two backbone names.
        in_channels: image channels.
    """

    stride: int = 32

    def __init__(self, backbones: tuple[str, str], in_channels: int = 1) -> None:
        super().__init__()
        if len(backbones) != 2:
            raise ValueError(f"DualEncoder takes two backbones, got {list(backbones)}")
        self.first, self.second = CheXEnc(backbones[0], in_channels), CheXEnc(backbones[1], in_channels)
        self.backbone = "+".join(backbones)
        self.out_channels = tuple(a + b for a, b in zip(self.first.out_channels, self.second.out_channels))

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [torch.cat([a, b], dim=1) for a, b in zip(self.first(x), self.second(x))]
