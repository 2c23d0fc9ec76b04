"""EncoderCheckpoint: write the pretrained encoder file (``models/ssl/model.pt``) that ``--pretrained_encoder``
loads into any config (:func:`bundle.networks.load_pretrained_encoder`)."""

from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Engine, Events

from bundle.engines.contrastive import ContrastivePretraining
from bundle.engines.distributed import rank, unwrap
from bundle.fileio import atomic_write
from bundle.networks.transfer import encoder_file


class EncoderCheckpoint:
    """Save CheXEnc's weights (with the projection head of ``part``) to ``path`` after every epoch and at the end.

    Args:
        network: the trained MultiCheXNet (or its DDP wrapper).
        path: the encoder file.
        part: the contrastive part whose projection head is saved alongside (not needed to load the encoder).
    """

    def __init__(self, network: Any, path: str, part: ContrastivePretraining | None = None) -> None:
        self.network, self.path, self.part = network, Path(path), part
        self.logger = logging.getLogger(__name__)

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.save)

    def save(self, engine: Engine | None = None) -> None:
        if rank() != 0:
            return
        extra = {"projection": self.part.head.state_dict()} if self.part is not None else {}
        buffer = io.BytesIO()
        torch.save(encoder_file(unwrap(self.network), **extra), buffer)
        atomic_write(self.path, buffer.getvalue())
        self.logger.info("saved the pretrained encoder to %s", self.path)
