"""Networks: the shared encoder, its heads and the assembled MultiCheXNet."""

from .attention_decoder import AttentionGate, AttentionPyramidDecoder, deep_supervision_key
from .det_head import CheXDet
from .discriminator import MaskDiscriminator
from .encoder import BACKBONE_CHANNELS, CheXEnc, DualEncoder
from .ensemble import MultiCheXNetEnsemble, average_outputs, build_network, member_outputs
from .generator import DCGANGenerator
from .heads import CheXCls, CheXSeg
from .multichexnet import SEG_DECODERS, TASKS, MultiCheXNet
from .saliency_bridge import BridgeExportError, SaliencyBridge, input_saliency
from .saliency_head import SaliencyHead, log_distribution
from .transfer import encoder_file, load_pretrained_encoder, transfer_network

__all__ = [
    "AttentionGate", "AttentionPyramidDecoder", "BACKBONE_CHANNELS", "BridgeExportError", "CheXCls", "CheXDet",
    "CheXEnc", "CheXSeg", "DCGANGenerator", "DualEncoder", "MaskDiscriminator", "MultiCheXNet", "MultiCheXNetEnsemble",
    "SEG_DECODERS", "SaliencyBridge", "SaliencyHead", "TASKS", "average_outputs", "build_network",
    "deep_supervision_key", "encoder_file", "input_saliency", "load_pretrained_encoder", "log_distribution",
    "member_outputs", "transfer_network",
]
