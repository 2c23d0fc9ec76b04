"""GenerativeSemiSupervisedPart: the DCGAN generator, the real-vs-fake term in the trainer's loss, the generator's
feature-matching step (which leaves the network alone), resume, and the kltv_appau.json option."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import pytest
import torch
from ignite.engine import Events
from monai.bundle import ConfigParser
from monai.data import DataLoader

from bundle.data import multitask_collate
from bundle.data.unlabelled import EndlessBatches
from bundle.detection import CheXDetector
from bundle.engines import GenerativeSemiSupervisedPart, MultiTaskTrainer
from bundle.engines.semi_gan import evaluating, pooled_features, running_stats_kept
from bundle.losses import MultiTaskLoss
from bundle.networks import DCGANGenerator, MultiCheXNet

from .conftest import ROOT
from .test_phases import _loader

SMALL = (32, 16, 8)  # generator widths for 64-pixel test images (start map 8 x 8)


def _unlabelled(n: int = 4, size: int = 64) -> EndlessBatches:
    return EndlessBatches(DataLoader([{"image": torch.rand(1, size, size)} for _ in range(n)], batch_size=2,
                                     collate_fn=multitask_collate))


def _part(net: MultiCheXNet, weight: float = 0.1, lr: float = 1e-3) -> GenerativeSemiSupervisedPart:
    generator = DCGANGenerator((64, 64), latent_channels=16, channels=SMALL)
    return GenerativeSemiSupervisedPart(
        _unlabelled(), generator, net.encoder.out_channels[-1], weight=weight, lr=lr, head_lr=lr
    )


def _params(module: torch.nn.Module) -> list[torch.Tensor]:
    return [p.detach().clone() for p in module.parameters()]


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_semi_gan_generator_makes_images_of_the_configured_shape_in_unit_range() -> None:
    torch.manual_seed(0)
    generator = DCGANGenerator((64, 32), latent_channels=8, channels=SMALL)
    with torch.no_grad():
        images = generator(torch.randn(3, 8))
    assert images.shape == (3, 1, 64, 32)
    assert float(images.min()) >= 0.0 and float(images.max()) <= 1.0 and float(images.std()) > 0
    assert DCGANGenerator((128, 128)).eval()(torch.randn(2, 100)).shape == (2, 1, 128, 128)
    with pytest.raises(ValueError, match=r"image_size \[60, 64\].*divisible by 2 \*\* len\(channels\) = 8"):
        DCGANGenerator((60, 64), channels=SMALL)


def test_semi_gan_term_joins_the_loss_and_its_steps_leave_the_network_to_its_optimiser() -> None:
    torch.manual_seed(0)
    net = MultiCheXNet(backbone="resnet18")
    part = _part(net, weight=0.3)
    trainer = MultiTaskTrainer(
        device=torch.device("cpu"), max_epochs=1, train_data_loader=_loader("cls"), network=net, tasks=["cls"],
        optimizer=torch.optim.AdamW(net.parameters(), lr=1e-3),
        loss_function=MultiTaskLoss(CheXDetector(), weights={"cls": 1.0}), parts={"semi_gan": part},
    )
    seen: dict[str, Any] = {}
    loss, after_step = part.loss, part.after_step

    def spy_loss(engine: Any, batch: Any, pred: Any) -> dict:
        seen["encoder_at_loss"] = _params(net.encoder)
        return loss(engine, batch, pred)

    def spy_after(engine: Any, batch: Any, pred: Any) -> None:
        # the network's optimiser has stepped the encoder on the real-vs-fake term (and the findings)
        assert any(not torch.equal(b, p) for b, p in zip(seen["encoder_at_loss"], net.encoder.parameters()))
        network, grads = _state(net), [None if p.grad is None else p.grad.clone() for p in net.parameters()]
        generator, head = _params(part.generator), _params(part.head)
        after_step(engine, batch, pred)
        # the part's steps leave the network's weights, batch-norm statistics and gradients as they were
        assert all(torch.equal(v, net.state_dict()[k]) for k, v in network.items())
        assert all((g is None and p.grad is None) or torch.equal(g, p.grad) for g, p in zip(grads, net.parameters()))
        assert all(not torch.equal(b, p) for b, p in zip(head, part.head.parameters()))
        assert any(not torch.equal(b, p) for b, p in zip(generator, part.generator.parameters()))
        seen["steps"] = seen.get("steps", 0) + 1

    part.loss, part.after_step = spy_loss, spy_after
    outputs: list[dict] = []
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: outputs.append(dict(e.state.output)))
    trainer.run()
    assert len(outputs) == 2 == seen["steps"]
    for out in outputs:
        assert {"semi_gan_real", "semi_gan_fake", "semi_gan_discriminator"} <= set(out)
        torch.testing.assert_close(out["semi_gan_discriminator"], out["semi_gan_real"] + out["semi_gan_fake"])
        torch.testing.assert_close(out["loss"], out["cls"] + 0.3 * out["semi_gan_discriminator"])
    assert part.feature_matching is not None and part.feature_matching >= 0.0


def test_semi_gan_feature_matching_decreases_on_fixed_real_features() -> None:
    torch.manual_seed(0)
    net = MultiCheXNet(backbone="resnet18")
    part = _part(net, lr=2e-3)
    encoder = net.encoder.train()
    with torch.no_grad(), evaluating(encoder):
        target = pooled_features(encoder, torch.rand(4, 1, 64, 64)).mean(dim=0)
    network = _state(net)
    losses = [part.generator_step(encoder, target, 4) for _ in range(6)]
    assert all(b < a for a, b in zip(losses, losses[1:])) and losses[-1] < 0.5 * losses[0], losses
    assert all(m.training for m in encoder.modules())  # the encoder's mode is restored
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in network.items())  # running statistics kept too
    assert all(p.grad is None for p in net.parameters())


def test_semi_gan_generated_images_leave_batch_norm_running_statistics_alone() -> None:
    norm = torch.nn.BatchNorm2d(3).train()
    before = _state(norm)
    with running_stats_kept(norm):
        out = norm(torch.randn(4, 3, 8, 8) * 5 + 2)
    assert torch.allclose(out.mean(), torch.tensor(0.0), atol=1e-5)  # normalised by the batch's own statistics
    assert all(torch.equal(v, norm.state_dict()[k]) for k, v in before.items()) and norm.momentum == 0.1


def test_semi_gan_state_dict_round_trip_resumes_the_generator() -> None:
    torch.manual_seed(0)
    net = MultiCheXNet(backbone="resnet18")
    encoder = net.encoder.train()
    with torch.no_grad():
        target = pooled_features(encoder, torch.rand(2, 1, 64, 64)).mean(dim=0)
    first = _part(net)
    for _ in range(2):
        first.generator_step(encoder, target, 2)
    first.head(torch.randn(2, net.encoder.out_channels[-1])).sum().backward()
    first._step_head()
    buffer = io.BytesIO()
    torch.save(first.state_dict(), buffer)
    torch.manual_seed(1)
    second = _part(net)
    buffer.seek(0)
    second.load_state_dict(torch.load(buffer, weights_only=True))
    z = torch.randn(3, 16)
    torch.testing.assert_close(second.generator.eval()(z), first.generator.eval()(z), rtol=0, atol=0)
    assert all(torch.equal(a, b) for a, b in zip(first.head.parameters(), second.head.parameters()))
    for part in (first, second):  # the Adam moments came along: the next step is the same
        torch.manual_seed(2)
        part.generator_step(encoder, target, 2)
    torch.testing.assert_close(second.generator.eval()(z), first.generator.eval()(z), rtol=0, atol=0)


def test_semi_gan_is_an_option_of_kltv_appau_json_added_by_override() -> None:
    parser = ConfigParser()
    parser.read_config([str(ROOT / "configs" / "train.json"), str(ROOT / "configs" / "kltv_appau.json")])
    parser.update({"network_def#backbone": "resnet18", "image_size": [64, 64], "device": "$torch.device('cpu')"})
    assert set(parser["train#parts"]) == {"adversarial"}  # off by default
    parser.update({"train#parts#semi_gan": "@semi_gan", "semi_gan_stream#batches": "$iter([])"})
    parts = parser.get_parsed_content("train#parts")
    part = parts["semi_gan"]
    assert isinstance(part, GenerativeSemiSupervisedPart) and part.weight == 0.1
    assert part.head.logit.in_features == 512 and part.generator.image_size == (64, 64)


def test_semi_gan_kltv_appau_composes_with_semi_supervised_json(tmp_path: Path, tiny_datalist: Path) -> None:
    """The paper's setting: train.json + semi_supervised.json + kltv_appau.json keeps every part by name, and the
    bridged attention pyramid network runs with deep supervision."""
    parser = ConfigParser()
    parser.read_config([str(ROOT / "configs" / name) for name in ("train.json", "semi_supervised.json", "kltv_appau.json")])
    parser.update({"network_def#backbone": "efficientnet-b0", "image_size": [64, 64], "datalist_file": str(tiny_datalist),
                   "device": "$torch.device('cpu')", "ckpt_dir": str(tmp_path), "num_workers": 0,
                   "unlabelled#batches": "$iter([])"})
    parts = parser.get_parsed_content("train#parts")
    assert set(parts) == {"semi", "adversarial"}
    net = parser.get_parsed_content("network_def").train()
    assert net.init_args["saliency_bridge"] and net.init_args["seg_decoder"] == "attention_pyramid"
    out = net(torch.rand(2, 1, 64, 64), ["cls", "seg"])
    assert {"cls", "seg", "seg_ds1"} <= set(out) and out["seg"].shape == (2, 1, 64, 64)
