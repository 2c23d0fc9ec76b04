"""Generative semi-supervised learning as a training part: the encoder learns from unlabelled images by telling
them from a generator's (Imran & Terzopoulos, arXiv:1908.03693, after Salimans et al., "Improved Techniques for
Training GANs", NIPS 2016).

Salimans et al. make the classifier the discriminator: K softmax classes plus "fake", ``D(x) = Z / (Z + 1)`` with
``Z = sum_k exp(l_k)``. That needs one class to apply to every real image; CheXCls is multi-label (14 sigmoid
findings, none for a normal image), so a normal X-ray would read as fake. Here the shared encoder carries a
separate realness logit instead (:class:`RealnessHead`, owned by the part, like the contrastive projection
head): the real-vs-fake task shapes CheXEnc on unlabelled images, and the findings head is left as it is.
The generator (:class:`~bundle.networks.DCGANGenerator`) trains by Salimans et al.'s feature matching on
CheXEnc's pooled deepest map, so it chases the statistics that the classifier sees.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bundle.data.views import WEAK_KEY

from .batch import batch_to_device, plain
from .distributed import unwrap
from .parts import TrainingPart


class RealnessHead(nn.Module):
    """One "real" logit from pooled encoder features: ``forward(pooled)``: (B, C) -> (B, 1)."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.logit = nn.Linear(in_channels, 1)

    def forward(self, pooled: Tensor) -> Tensor:
        return self.logit(pooled)


@contextlib.contextmanager
def running_stats_kept(module: nn.Module) -> Iterator[None]:
    """Batch norms of ``module`` normalise by batch statistics (train mode) but leave their running statistics,
    which inference uses, as they are: generated images must not shift the encoder's statistics of X-rays."""
    norms = [m for m in module.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.training]
    saved = [(m.momentum, None if m.num_batches_tracked is None else m.num_batches_tracked.clone()) for m in norms]
    for m in norms:
        m.momentum = 0.0
    try:
        yield
    finally:
        for m, (momentum, tracked) in zip(norms, saved):
            m.momentum = momentum
            if tracked is not None:
                m.num_batches_tracked.copy_(tracked)


@contextlib.contextmanager
def evaluating(module: nn.Module) -> Iterator[None]:
    """``module`` in eval mode (batch norms on their running statistics, no dropout), each submodule's mode
    restored after."""
    modes = [(m, m.training) for m in module.modules()]
    module.eval()
    try:
        yield
    finally:
        for m, training in modes:
            m.training = training


def pooled_features(encoder: nn.Module, images: Tensor) -> Tensor:
    """CheXEnc's deepest map, globally average-pooled: (B, C, H, W) images -> (B, C') float32 features."""
    return encoder(images)[-1].float().mean(dim=(2, 3))


class GenerativeSemiSupervisedPart(TrainingPart):
    """Real-vs-fake on an unlabelled stream through the shared encoder, and a feature-matching generator.

    ``loss``: one unlabelled batch (``image``) and as many generated images (detached) through the network's
    encoder (the generated ones without touching its batch-norm running statistics), the realness head on the
    pooled deepest features, ``weight * (BCE(real, 1) + BCE(fake, 0))`` joins the step's loss (Salimans et al.'s
    unsupervised discriminator loss). Logged unweighted: ``<name>_real``, ``<name>_fake``, ``<name>_discriminator``
    (their sum). ``after_step`` (the network has stepped): one Adam step of the realness head on that term's
    gradient, then one Adam step of the generator on the feature-matching loss ``|| mean_real f - mean_fake f ||^2``
    (``f``: pooled deepest features, real ones of the same unlabelled batch without gradient); its gradient is
    taken for the generator's parameters only, so the network neither moves nor keeps gradients from it. The
    last value is :attr:`feature_matching`. ``f`` is measured with the encoder in eval mode (running
    statistics): a feature of each image on its own. In train mode every batch norm re-centres the generated
    batch by its own statistics, which cancels much of the mean difference the loss measures (tried: the loss
    then wanders instead of falling), and would count generated images into the running statistics.

    The weight 0.1 keeps the supervised terms in the lead, as the adversarial mask term's; Adam with lr 2e-4 and
    betas (0.5, 0.999) is DCGAN's (Radford et al. 2016).

    Args:
        batches: endless unlabelled batches with ``image`` (:func:`bundle.data.unlabelled_loader`).
        generator: ``z (B, latent_channels) -> images (B, C, H, W)`` in [0, 1] of the network's input size, with a
            ``latent_channels`` attribute (:class:`~bundle.networks.DCGANGenerator`).
        encoder_channels: channels of CheXEnc's deepest level (``network_def.encoder.out_channels[-1]``).
        weight: of the discriminator term in the step's loss.
        lr, betas: of the generator's Adam.
        head_lr: of the realness head's Adam (same betas).
    """

    def __init__(
        self, batches: Iterator[dict[str, Any]], generator: nn.Module, encoder_channels: int, weight: float = 0.1,
        lr: float = 2e-4, betas: Sequence[float] = (0.5, 0.999), head_lr: float = 2e-4,
    ) -> None:
        self.batches, self.generator, self.weight = batches, generator, weight
        self.latent_channels = int(generator.latent_channels)
        self.head = RealnessHead(encoder_channels)
        betas_ = (float(betas[0]), float(betas[1]))
        self.generator_optimizer = torch.optim.Adam(generator.parameters(), lr=lr, betas=betas_)
        self.head_optimizer = torch.optim.Adam(self.head.parameters(), lr=head_lr, betas=betas_)
        self.feature_matching: float | None = None
        self._real: Tensor | None = None
        self._grad_scale = 1.0

    def generate(self, n: int, device: torch.device | str) -> Tensor:
        """``n`` images of the generator (train mode, with gradient): (n, C, H, W)."""
        self.generator.to(device).train()
        return self.generator(torch.randn(n, self.latent_channels, device=device))

    def loss(self, engine: Any, batch: Mapping[str, Any], pred: Mapping[str, Tensor]) -> dict[str, Tensor]:
        device = engine.state.device
        real = plain(batch_to_device(next(self.batches), device, engine.non_blocking)[WEAK_KEY])
        with torch.no_grad():
            fake = self.generate(real.shape[0], device)
        encoder = unwrap(engine.network).encoder
        self.head.to(device).train()
        with torch.autocast(device.type, enabled=engine.amp, **engine.amp_kwargs):
            real_logit = self.head(pooled_features(encoder, real))
            with running_stats_kept(encoder):
                fake_logit = self.head(pooled_features(encoder, fake))
        real_logit, fake_logit = real_logit.float(), fake_logit.float()
        real_term = F.binary_cross_entropy_with_logits(real_logit, torch.ones_like(real_logit))
        fake_term = F.binary_cross_entropy_with_logits(fake_logit, torch.zeros_like(fake_logit))
        self._real = real
        scaler = getattr(engine, "scaler", None)
        self._grad_scale = float(scaler.get_scale()) if engine.amp and scaler is not None else 1.0
        value = real_term + fake_term
        return {"loss": self.weight * value, "real": real_term, "fake": fake_term, "discriminator": value}

    def after_step(self, engine: Any, batch: Mapping[str, Any], pred: Mapping[str, Tensor]) -> None:
        self._step_head()
        if self._real is None:
            return
        real, self._real = self._real, None
        encoder = unwrap(engine.network).encoder
        with torch.autocast(engine.state.device.type, enabled=engine.amp, **engine.amp_kwargs):
            with torch.no_grad(), evaluating(encoder):
                target = pooled_features(encoder, real).mean(dim=0)
            self.generator_step(encoder, target, real.shape[0])

    def _step_head(self) -> None:
        """The realness head's Adam step on the gradient the step's backward left (unscaled under AMP; skipped
        when not finite, as the GradScaler skips the network's)."""
        grads = [p.grad for p in self.head.parameters() if p.grad is not None]
        if grads:
            if self._grad_scale != 1.0:
                for g in grads:
                    g.div_(self._grad_scale)
            if all(bool(torch.isfinite(g).all()) for g in grads):
                self.head_optimizer.step()
        self.head_optimizer.zero_grad(set_to_none=True)

    def generator_step(self, encoder: nn.Module, target: Tensor, n: int) -> float:
        """One Adam step of the generator on ``|| target - mean pooled_features(encoder, G(z)) ||^2`` over ``n``
        fresh samples; ``target``: (C,) mean real features, of the encoder in eval mode as here. The encoder's
        weights, running statistics and gradients are left alone. Returns the loss before the step."""
        fake = self.generate(n, target.device)
        with evaluating(encoder):
            loss = (pooled_features(encoder, fake).mean(dim=0) - target.float()).pow(2).sum()
        params = [p for p in self.generator.parameters() if p.requires_grad]
        grads = torch.autograd.grad(loss, params)
        for p, g in zip(params, grads):
            p.grad = g
        self.generator_optimizer.step()
        self.generator_optimizer.zero_grad(set_to_none=True)
        self.feature_matching = float(loss.detach())
        return self.feature_matching

    def state_dict(self) -> dict[str, Any]:
        return {
            "generator": self.generator.state_dict(), "head": self.head.state_dict(),
            "generator_optimizer": self.generator_optimizer.state_dict(),
            "head_optimizer": self.head_optimizer.state_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self.generator.load_state_dict(state["generator"])
        self.head.load_state_dict(state["head"])
        self.generator_optimizer.load_state_dict(state["generator_optimizer"])
        self.head_optimizer.load_state_dict(state["head_optimizer"])
