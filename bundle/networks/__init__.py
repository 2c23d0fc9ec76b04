"""Networks: the shared encoder, its heads and the assembled MultiCheXNet."""

from .det_head import CheXDet
from .encoder import BACKBONE_CHANNELS, CheXEnc
from .heads import CheXCls, CheXSeg
from .multichexnet import TASKS, MultiCheXNet
from .transfer import transfer_network

__all__ = ["BACKBONE_CHANNELS", "CheXCls", "CheXDet", "CheXEnc", "CheXSeg", "MultiCheXNet", "TASKS", "transfer_network"]
