"""Networks: the shared encoder, its heads and the assembled MultiCheXNet."""

from .det_head import CheXDet
from .encoder import BACKBONE_CHANNELS, CheXEnc
from .heads import CheXCls, CheXSeg
from .multichexnet import TASKS, MultiCheXNet
from .saliency_bridge import BridgeExportError, SaliencyBridge, input_saliency
from .transfer import encoder_file, load_pretrained_encoder, transfer_network

__all__ = [
    "BACKBONE_CHANNELS", "BridgeExportError", "CheXCls", "CheXDet", "CheXEnc", "CheXSeg", "MultiCheXNet",
    "SaliencyBridge", "TASKS", "encoder_file", "input_saliency", "load_pretrained_encoder", "transfer_network",
]
