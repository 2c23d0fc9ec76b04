"""CheXEnc: the shared 2D convolutional encoder of MultiCheXNet."""

from __future__ import annotations

import torch
from monai.networks.nets import DenseNet121, EfficientNetBNFeatures, ResNetFeatures
from torch import nn

#: Channels of the five feature maps (strides 2, 4, 8, 16, 32) of each supported backbone.
BACKBONE_CHANNELS: dict[str, tuple[int, int, int, int, int]] = {
    "densenet121": (64, 256, 512, 1024, 1024),
    "resnet18": (64, 64, 128, 256, 512),
    "resnet50": (64, 256, 512, 1024, 2048),
    "efficientnet-b0": (16, 24, 40, 112, 320),
}


class _DenseNetFeatures(nn.Module):
    """MONAI's DenseNet121 feature trunk cut into five stages (strides 2, 4, 8, 16, 32)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        trunk = DenseNet121(spatial_dims=2, in_channels=in_channels, out_channels=1).features
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

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        features: list[torch.Tensor] = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return features


def _build_trunk(backbone: str, in_channels: int) -> nn.Module:
    if backbone == "densenet121":
        return _DenseNetFeatures(in_channels)
    if backbone in ("resnet18", "resnet50"):
        return ResNetFeatures(backbone, pretrained=False, spatial_dims=2, in_channels=in_channels)
    # PyTorch's batch-norm momentum (MONAI's EfficientNet default, 0.01, leaves the running statistics far from
    # the data after the few hundred steps of a small training set, and evaluation-mode outputs with them)
    return EfficientNetBNFeatures(backbone, pretrained=False, spatial_dims=2, in_channels=in_channels,
                                  norm=("batch", {"eps": 1e-3, "momentum": 0.1}))


class CheXEnc(nn.Module):
    """Shared encoder: a 1-channel image (side a multiple of 32) to five feature maps at strides 2..32.

    Args:
        backbone: one of ``BACKBONE_CHANNELS`` (DenseNet121 is CheXNet's backbone, Rajpurkar et al. 2017).
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
