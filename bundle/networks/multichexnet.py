"""MultiCheXNet (Ibrahim et al., arXiv:2008.01973): one CheXEnc pass feeding every requested head."""

from __future__ import annotations

from typing import Dict, List, Optional

import torch
from torch import nn

from .attention_decoder import AttentionPyramidDecoder, deep_supervision_key
from .det_head import CheXDet
from .encoder import CheXEnc, DualEncoder
from .heads import CheXCls, CheXSeg, FusionCls
from .saliency_bridge import SaliencyBridge, input_saliency
from .saliency_head import SaliencyHead

#: Output keys: classification logits, mask logits, box logits and regressions, positive-case gate logits.
TASKS: tuple[str, ...] = ("cls", "seg", "det", "det_gate", "seg_gate")

#: Logit given to the outputs of gated-out images: sigmoid(-30) ~ 1e-13, an empty mask and no boxes.
NEGATIVE_LOGIT: float = -30.0

#: CheXSeg decoders: the U-Net decoder (:class:`CheXSeg`) and APPAU-Net's (:class:`AttentionPyramidDecoder`).
SEG_DECODERS: tuple[str, ...] = ("unet", "attention_pyramid")


def _rows(passed: torch.Tensor) -> torch.Tensor:
    """Indices of the ``passed`` images, on which the detection or segmentation head runs.

    The heads take these rows with no branch on how many there are (a head on no row costs nothing), so that
    ``torch.export`` keeps the gating in the graph. An exported graph cannot run every operator on zero rows
    (GroupNorm's reshape), so while exporting the first image stands in when none passes; :func:`_scatter` drops
    its outputs.
    """
    if not torch.jit.is_scripting():
        if torch.compiler.is_exporting():
            first = torch.arange(passed.shape[0], device=passed.device) == 0
            rows = torch.nonzero(passed | (first & ~passed.any())).flatten()
            torch._check(rows.shape[0] > 0)
            return rows
    return torch.nonzero(passed).flatten()


def _scatter(
    part: torch.Tensor, rows: torch.Tensor, passed: torch.Tensor, shape: List[int], fill: float, like: torch.Tensor
) -> torch.Tensor:
    """A ``shape`` tensor (dtype and device of ``like``) holding ``part`` at ``rows`` where ``passed``, else ``fill``."""
    full = torch.full(shape, fill, dtype=like.dtype, device=like.device).index_copy(0, rows, part.to(like.dtype))
    return torch.where(passed.view([-1] + [1] * (len(shape) - 1)), full, torch.full_like(full, fill))


def _keep_rows(value: torch.Tensor, rows: torch.Tensor, fill: float) -> torch.Tensor:
    """``value`` on the images where ``rows`` (B,) is true, ``fill`` elsewhere."""
    return torch.where(rows.view([-1] + [1] * (value.dim() - 1)), value, torch.full_like(value, fill))


def gate_outputs(
    outputs: Dict[str, torch.Tensor], det_threshold: float, seg_threshold: float, negative_logit: float = NEGATIVE_LOGIT
) -> Dict[str, torch.Tensor]:
    """``forward_gated``'s result from all-head ``outputs``: images whose gate probability is below its threshold
    get ``negative_logit`` mask and box logits and zero box regressions; adds ``det_gated_in`` and
    ``seg_gated_in`` (B,) booleans."""
    det_in = torch.sigmoid(outputs["det_gate"][:, 0]) >= det_threshold
    seg_in = torch.sigmoid(outputs["seg_gate"][:, 0]) >= seg_threshold
    gated = outputs.copy()
    gated["seg"] = _keep_rows(outputs["seg"], seg_in, negative_logit)
    gated["det_cls"] = _keep_rows(outputs["det_cls"], det_in, negative_logit)
    gated["det_box"] = _keep_rows(outputs["det_box"], det_in, 0.0)
    gated["det_gated_in"] = det_in
    gated["seg_gated_in"] = seg_in
    return gated


class MultiCheXNet(nn.Module):
    """Shared encoder with classification (CheXCls), segmentation (CheXSeg), detection (CheXDet) heads and
    two positive-case classifiers that gate the detection and segmentation heads.

    ``forward(image, tasks)`` runs the encoder once and the requested heads (all when ``tasks`` is None) and
    returns a dict: ``cls`` (B, num_classes) logits, ``seg`` (B, 1, H, W) logits, ``det_cls`` (B, A_total,
    num_det_classes) and ``det_box`` (B, A_total, 4) anchor outputs, ``det_gate``/``seg_gate`` (B, 1) logits, and
    with a saliency head ``sal`` (B, 1, H, W) log-probabilities.
    With ``deep_supervision``, in training mode only, ``seg_ds1`` ... ``seg_ds4`` (B, 1, H, W) join ``seg``: the
    mask logits of the decoder scales at strides 2 ... 16, upsampled (:func:`deep_supervision_key`).

    ``init_args`` holds the constructor arguments, so that a model file can rebuild the network
    (:mod:`bundle.packaging`).

    Args:
        backbone: CheXEnc backbone name.
        in_channels: image channels.
        num_classes: findings of CheXCls (14 for NIH ChestX-ray14).
        num_det_classes: box classes of CheXDet.
        num_anchors: anchors per location; must match the detector's anchor generator.
        cls_hidden: width of the classifiers' ``feats`` layer.
        seg_channels: CheXSeg decoder channels, coarse to fine.
        det_levels: encoder levels feeding CheXDet's FPN.
        fpn_channels: CheXDet's pyramid width.
        det_subnet_depth: 3x3 conv blocks in each of CheXDet's classification and box subnets (1-4).
        seg_decoder: one of :data:`SEG_DECODERS`.
        deep_supervision: training-mode deep-supervision outputs (``attention_pyramid`` only).
        seg_output_stride: stride at which CheXSeg's decoder stops, its logits upsampled bilinearly (1: none;
            ``unet`` only).
        seg_skip_channels: the widest encoder level entering CheXSeg's decoder, wider ones projected (1x1
            convolution) to it (None: none; ``unet`` only).
        saliency_bridge: feed CheXCls's input-gradient saliency and the image into CheXSeg's coarsest stage
            (:mod:`bundle.networks.saliency_bridge`; eager only, export refuses it).
        encoders: two backbone names for a :class:`DualEncoder` (e.g. ``["densenet201", "se_resnet50"]``), whose
            concatenated features every head shares; None: the one CheXEnc of ``backbone``.
        saliency_head: add :class:`SaliencyHead`, the ``sal`` output: (B, 1, H, W) log-probabilities of where a
            radiologist looks, on the same encoder pass, never gated.
        cls_fusion: encoder levels (e.g. ``[2, 3, 4]``, strides 8-32) fused by :class:`FusionCls` for ``cls``,
            with the saliency head's map when there is one (then ``cls`` runs the saliency head too); None:
            CheXCls on the deepest level.
        cls_prior: the probability that the classifier's and both gates' outputs start at (their last layer's
            bias is logit(``cls_prior``), RetinaNet's prior initialisation; :func:`bundle.networks.heads.init_prior`);
            None: PyTorch's initialisation, where every finding starts at probability 0.5.
        seg_prior: the probability that every mask pixel starts at (the bias of CheXSeg's output convolution;
            ``unet`` only); None: PyTorch's initialisation.

    ``tasks=[]`` runs nothing (not even the encoder) and returns an empty dict.
    """

    __jit_ignored_attributes__ = ["init_args"]
    __constants__ = ["deep_supervision", "fused"]

    def __init__(
        self,
        backbone: str = "densenet121",
        in_channels: int = 1,
        num_classes: int = 14,
        num_det_classes: int = 1,
        num_anchors: int = 3,
        cls_hidden: int = 256,
        seg_channels: tuple[int, ...] = (128, 64, 32, 16, 8),
        det_levels: tuple[int, ...] = (2, 3, 4),
        fpn_channels: int = 64,
        det_subnet_depth: int = 4,
        seg_decoder: str = "unet",
        deep_supervision: bool = False,
        saliency_bridge: bool = False,
        seg_output_stride: int = 1,
        seg_skip_channels: Optional[int] = None,
        encoders: Optional[List[str]] = None,
        saliency_head: bool = False,
        cls_fusion: Optional[List[int]] = None,
        cls_prior: Optional[float] = None,
        seg_prior: Optional[float] = None,
    ) -> None:
        super().__init__()
        if seg_decoder not in SEG_DECODERS:
            raise ValueError(f"seg_decoder must be one of {list(SEG_DECODERS)}, got {seg_decoder!r}")
        if deep_supervision and seg_decoder != "attention_pyramid":
            raise ValueError("deep_supervision needs seg_decoder='attention_pyramid' (CheXSeg has one output scale)")
        if seg_output_stride != 1 and seg_decoder != "unet":
            raise ValueError(f"seg_output_stride {seg_output_stride} needs seg_decoder='unet'")
        if seg_skip_channels is not None and seg_decoder != "unet":
            raise ValueError(f"seg_skip_channels {seg_skip_channels} needs seg_decoder='unet'")
        if seg_prior is not None and seg_decoder != "unet":
            raise ValueError(f"seg_prior {seg_prior} needs seg_decoder='unet'")
        self.init_args = {
            "backbone": backbone, "in_channels": in_channels, "num_classes": num_classes,
            "num_det_classes": num_det_classes, "num_anchors": num_anchors, "cls_hidden": cls_hidden,
            "seg_channels": list(seg_channels), "det_levels": list(det_levels), "fpn_channels": fpn_channels,
            "det_subnet_depth": det_subnet_depth,
            "seg_decoder": seg_decoder, "deep_supervision": deep_supervision, "saliency_bridge": saliency_bridge,
            "seg_output_stride": seg_output_stride, "seg_skip_channels": seg_skip_channels,
            "encoders": None if encoders is None else list(encoders), "saliency_head": saliency_head,
            "cls_fusion": None if cls_fusion is None else list(cls_fusion), "cls_prior": cls_prior,
            "seg_prior": seg_prior,
        }
        self.encoder: nn.Module = (
            CheXEnc(backbone, in_channels) if encoders is None else DualEncoder(tuple(encoders), in_channels)
        )
        channels = self.encoder.out_channels
        if cls_fusion is not None and (saliency_bridge or not cls_fusion or max(cls_fusion) >= len(channels)):
            raise ValueError(f"cls_fusion must name encoder levels 0-{len(channels) - 1} without saliency_bridge, "
                             f"got {cls_fusion}")
        self.fused = cls_fusion is not None
        self.fusion_levels: List[int] = [] if cls_fusion is None else list(cls_fusion)
        self.cls_head: nn.Module = (
            CheXCls(channels[-1], num_classes, cls_hidden, prior=cls_prior)
            if cls_fusion is None
            else FusionCls(tuple(channels[i] for i in cls_fusion), num_classes, cls_hidden, saliency=saliency_head,
                           prior=cls_prior)
        )
        self.deep_supervision = deep_supervision
        self.seg_head: nn.Module = (
            CheXSeg(channels, tuple(seg_channels), in_channels, output_stride=seg_output_stride,
                    skip_channels=seg_skip_channels, prior=seg_prior)
            if seg_decoder == "unet"
            else AttentionPyramidDecoder(channels, tuple(seg_channels), in_channels)
        )
        self.det_head = CheXDet(channels, num_anchors, num_det_classes, tuple(det_levels), fpn_channels,
                                det_subnet_depth)
        self.det_gate = CheXCls(channels[-1], 1, cls_hidden, prior=cls_prior)
        self.seg_gate = CheXCls(channels[-1], 1, cls_hidden, prior=cls_prior)
        self.bridge = SaliencyBridge(in_channels, channels[-1]) if saliency_bridge else None
        self.sal_head = SaliencyHead(channels, in_channels=in_channels) if saliency_head else None
        self.negative_logit = NEGATIVE_LOGIT

    def forward(self, image: torch.Tensor, tasks: Optional[List[str]] = None) -> Dict[str, torch.Tensor]:
        if image.dim() != 4 or image.shape[-1] % 32 != 0 or image.shape[-2] % 32 != 0:
            raise ValueError(f"MultiCheXNet expects (B, C, H, W) with H and W multiples of 32, got {image.shape}")
        if tasks is not None and len(tasks) == 0:
            return {}
        if self.bridge is not None and (tasks is None or "seg" in tasks):
            return self._forward_bridged(image, tasks)
        return self.forward_heads(image, self.encoder(image), tasks)

    @torch.jit.unused
    def _forward_bridged(self, image: torch.Tensor, tasks: Optional[List[str]]) -> Dict[str, torch.Tensor]:
        """:meth:`forward` with the saliency bridge; ``cls`` is the logits the saliency came from."""
        features, cls, saliency = self._encode_bridged(image)
        out = self.forward_heads(image, features, [t for t in tasks or [*TASKS, "sal"] if t != "cls"], saliency)
        if tasks is None or "cls" in tasks:
            out["cls"] = cls
        return out

    @torch.jit.unused
    def _encode_bridged(self, image: torch.Tensor) -> tuple[List[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Encoder features, CheXCls logits and their input saliency (B, 1, H, W) from one encoder pass."""
        with torch.enable_grad():
            source = image if image.requires_grad else image.detach().requires_grad_()
            features = self.encoder(source)
            cls = self.cls_head(features[-1])
            saliency = input_saliency(cls, source, create_graph=self.training)
        return features, cls, saliency

    @torch.jit.export
    def forward_gated(
        self, image: torch.Tensor, det_threshold: float = 0.5, seg_threshold: float = 0.5
    ) -> Dict[str, torch.Tensor]:
        """Positive-case gating on one encoder pass: the detection and segmentation heads run only on the images
        whose gate probability reaches its threshold; the others get :data:`NEGATIVE_LOGIT` logits (an empty mask,
        no boxes) and zero box regressions. Adds ``det_gated_in`` and ``seg_gated_in`` (B,) booleans. A saliency
        head runs on every image.
        """
        saliency: Optional[torch.Tensor] = None
        if self.bridge is not None:
            features, cls, saliency = self._encode_bridged(image)
            out = self.forward_heads(image, features, ["det_gate", "seg_gate", "sal"])
            out["cls"] = cls
        else:
            features = self.encoder(image)
            out = self.forward_heads(image, features, ["cls", "det_gate", "seg_gate", "sal"])
        det_in = torch.sigmoid(out["det_gate"][:, 0]) >= det_threshold
        seg_in = torch.sigmoid(out["seg_gate"][:, 0]) >= seg_threshold
        seg_rows, det_rows = _rows(seg_in), _rows(det_in)
        kept = None if saliency is None else saliency.index_select(0, seg_rows)
        seg_part = self._seg(image.index_select(0, seg_rows), [f.index_select(0, seg_rows) for f in features], kept)
        det_cls, det_box = self.det_head([f.index_select(0, det_rows) for f in features])
        batch = image.shape[0]
        fill = self.negative_logit
        out["seg"] = _scatter(seg_part, seg_rows, seg_in, [batch, 1, image.shape[2], image.shape[3]], fill, image)
        out["det_cls"] = _scatter(det_cls, det_rows, det_in, [batch, det_cls.shape[1], det_cls.shape[2]], fill, image)
        out["det_box"] = _scatter(det_box, det_rows, det_in, [batch, det_box.shape[1], 4], 0.0, image)
        out["det_gated_in"] = det_in
        out["seg_gated_in"] = seg_in
        return out

    def _bridged(
        self, image: torch.Tensor, features: List[torch.Tensor], saliency: Optional[torch.Tensor]
    ) -> List[torch.Tensor]:
        """``features`` with the deepest joined with ``saliency`` through the bridge, when there is one."""
        bridge = self.bridge
        if bridge is not None and saliency is not None:
            return features[:-1] + [bridge(image, saliency, features[-1])]
        return features

    def _seg(self, image: torch.Tensor, features: List[torch.Tensor], saliency: Optional[torch.Tensor]) -> torch.Tensor:
        """CheXSeg's mask logits on the (bridged) features."""
        return self.seg_head(image, self._bridged(image, features, saliency))

    def forward_heads(
        self, image: torch.Tensor, features: List[torch.Tensor], tasks: Optional[List[str]] = None,
        saliency: Optional[torch.Tensor] = None,
    ) -> Dict[str, torch.Tensor]:
        """Run the requested heads on already computed encoder ``features`` (no encoder pass); ``saliency``
        (B, 1, H, W) feeds the saliency bridge, if the network has one."""
        out: Dict[str, torch.Tensor] = {}
        deepest = features[-1]
        sal_head = self.sal_head
        if sal_head is not None and (tasks is None or "sal" in tasks or ("cls" in tasks and self.fused)):
            out["sal"] = sal_head(image, features)
        if tasks is None or "cls" in tasks:
            out["cls"] = self._cls(features, out.get("sal"))
        if tasks is None or "det_gate" in tasks:
            out["det_gate"] = self.det_gate(deepest)
        if tasks is None or "seg_gate" in tasks:
            out["seg_gate"] = self.seg_gate(deepest)
        if tasks is None or "seg" in tasks:
            if self.deep_supervision and self.training:
                masks = self.seg_head.forward_deep(image, self._bridged(image, features, saliency))
                out["seg"] = masks[0]
                for scale in range(1, len(masks)):
                    out[deep_supervision_key(scale)] = masks[scale]
            else:
                out["seg"] = self._seg(image, features, saliency)
        if tasks is None or "det" in tasks:
            det_cls, det_box = self.det_head(features)
            out["det_cls"] = det_cls
            out["det_box"] = det_box
        return out

    def _cls(self, features: List[torch.Tensor], log_saliency: Optional[torch.Tensor]) -> torch.Tensor:
        """CheXCls on the deepest level, or FusionCls on the fused levels (and the saliency map)."""
        if self.fused:
            return self.cls_head([features[i] for i in self.fusion_levels], log_saliency)
        return self.cls_head(features[-1])
