"""Input-gradient saliency (Simonyan, Vedaldi, Zisserman, ICLR 2014 workshop), the map MultiMix's saliency bridge
feeds to the segmentation decoder (Haque et al., arXiv:2010.14731), for each of CheXCls's findings."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from bundle.networks import MultiCheXNet, input_saliency

from .gradcam import distributions, finding_logits


def input_gradient(network: MultiCheXNet, image: torch.Tensor, classes: Sequence[int] | None = None) -> torch.Tensor:
    """(B, K, H, W) input-gradient maps of the findings ``classes`` (None: all), each a distribution over the
    pixels (:func:`input_gradient_pass`)."""
    return input_gradient_pass(network, image, classes)[1]


def input_gradient_pass(
    network: MultiCheXNet, image: torch.Tensor, classes: Sequence[int] | None = None
) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor | None]:
    """The encoder features (detached, for the heads), the (B, K, H, W) input-gradient maps of the findings
    ``classes`` (None: all) and, for a network with the saliency bridge, the bridge's own input (B, 1, H, W), all
    from one encoder pass.

    A finding's map is the absolute gradient of its logit with respect to the image (the largest over input
    channels), normalised to sum 1 (an all-zero gradient stays zero). The bridge's input is
    :func:`bundle.networks.input_saliency` of the same logits: the top finding's gradient scaled to a peak of 1.
    The network runs in eval mode and is left in the mode it had.
    """
    was_training = network.training
    network.eval()
    try:
        with torch.enable_grad():
            source = image.detach().requires_grad_()
            features, logits = finding_logits(network, source)
            grads = []
            for k in range(logits.shape[1]) if classes is None else classes:
                (grad,) = torch.autograd.grad(logits[:, k].sum(), source, retain_graph=True)
                grads.append(grad.abs().amax(dim=1, keepdim=True))
            bridge = input_saliency(logits, source, create_graph=False) if network.bridge is not None else None
    finally:
        network.train(was_training)
    return [f.detach() for f in features], distributions(torch.cat(grads, dim=1)), bridge
