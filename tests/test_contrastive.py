"""Contrastive pretraining: NT-Xent / supervised contrastive, the ssl_pretrain phase, and its encoder file loading
into train.json (strict, with a clear error)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser
from monai.data import DataLoader

from bundle.data import multitask_collate
from bundle.detection import CheXDetector
from bundle.engines import ContrastivePretraining, MultiTaskTrainer
from bundle.engines.phases import PhaseSchedule, ssl_pretrain, total_epochs
from bundle.handlers.encoder_checkpoint import EncoderCheckpoint
from bundle.losses import ContrastiveLoss, MultiTaskLoss, label_groups
from bundle.networks import MultiCheXNet, encoder_file, load_pretrained_encoder

from .conftest import ROOT
from .test_phases import _sample


def test_contrastive_nt_xent_is_lowest_for_matched_pairs() -> None:
    torch.manual_seed(0)
    first = torch.randn(8, 16)
    loss = ContrastiveLoss(temperature=0.2)
    matched = loss(first, first + 0.05 * torch.randn(8, 16))
    shuffled = loss(first, first[torch.randperm(8)])
    unrelated = loss(first, torch.randn(8, 16))
    assert matched < unrelated < shuffled + 1.0 and matched < shuffled
    assert matched < 0.5 * unrelated


def test_contrastive_supervised_groups_pull_same_label_images_together() -> None:
    torch.manual_seed(0)
    centres = torch.randn(2, 16) * 3
    labels = torch.tensor([0, 0, 1, 1])
    clustered = centres[labels] + 0.1 * torch.randn(4, 16)
    spread = torch.randn(4, 16) * 3
    loss = ContrastiveLoss(0.2)
    groups = torch.tensor([0, 0, 1, 1])
    assert loss(clustered, clustered, groups) < loss(spread, spread, groups)
    # without groups (NT-Xent) same-label images are negatives: clustering them costs instead
    assert loss(clustered, clustered) > loss(spread, spread)


def test_contrastive_label_groups_leave_ungraded_images_alone() -> None:
    cls = torch.tensor([[1, 0], [1, 0], [0, 1], [1, 0]]).float()
    known = torch.tensor([[True, True], [True, True], [True, True], [True, False]])
    assert label_groups(cls, known).tolist()[3] == -1
    groups = label_groups(cls, known)
    assert groups[0] == groups[1] != groups[2]


def _two_view_batches(n: int = 4) -> DataLoader:
    samples = [{**_sample("cls", i), "image_view": torch.rand(1, 64, 64)} for i in range(n)]
    return DataLoader(samples, batch_size=4, collate_fn=multitask_collate)


def test_contrastive_ssl_pretrain_phase_trains_only_the_encoder_and_its_file_loads_into_train_json(
    tmp_path: Path,
) -> None:
    torch.manual_seed(0)
    net = MultiCheXNet(backbone="resnet18")
    part = ContrastivePretraining(net.encoder.out_channels[-1], lr=1e-3)
    phases = [ssl_pretrain(_two_view_batches(), epochs=2)]
    heads = {k: v.clone() for k, v in net.state_dict().items() if not k.startswith("encoder.")}
    encoder = {k: v.clone() for k, v in net.encoder.state_dict().items()}
    head_weights = part.head.net[2].weight.clone()
    trainer = MultiTaskTrainer(
        device=torch.device("cpu"), max_epochs=total_epochs(phases), train_data_loader=phases[0].data, network=net,
        optimizer=torch.optim.AdamW(net.parameters(), lr=1e-3), loss_function=MultiTaskLoss(CheXDetector()),
        parts={"contrastive": part}, amp=False,
    )
    PhaseSchedule(phases, str(tmp_path)).attach(trainer)
    path = tmp_path / "ssl" / "model.pt"
    EncoderCheckpoint(net, str(path), part).attach(trainer)
    trainer.run()
    assert set(trainer.state.output) == {"loss", "contrastive_contrastive"}
    assert all(torch.equal(v, net.state_dict()[k]) for k, v in heads.items())  # no head trained
    assert any(not torch.equal(v, net.encoder.state_dict()[k]) for k, v in encoder.items())
    assert not torch.equal(head_weights, part.head.net[2].weight)  # the part's own optimiser stepped

    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "train.json"))
    overrides = {"network_def#backbone": "resnet18", "pretrained_encoder": str(path), "device": "$torch.device('cpu')"}
    parser.update(overrides)
    loaded = parser.get_parsed_content("network")
    assert all(torch.equal(v, loaded.encoder.state_dict()[k]) for k, v in net.encoder.state_dict().items())
    parser["pretrained_encoder"] = None
    fresh = parser.get_parsed_content("network", lazy=False)
    assert not all(torch.equal(v, fresh.encoder.state_dict()[k]) for k, v in net.encoder.state_dict().items())


def test_contrastive_mismatched_encoder_file_fails_naming_the_file_and_backbones(tmp_path: Path) -> None:
    path = tmp_path / "effnet.pt"
    torch.save(encoder_file(MultiCheXNet(backbone="efficientnet-b0")), path)
    with pytest.raises(ValueError, match=rf"{path}: encoder of backbone 'efficientnet-b0'.*backbone is 'resnet18'"):
        load_pretrained_encoder(MultiCheXNet(backbone="resnet18"), path)
    state = encoder_file(MultiCheXNet(backbone="resnet18"))
    state["encoder"] = {k: v[..., :1] if v.dim() == 4 else v for k, v in state["encoder"].items()}
    torch.save(state, path)
    with pytest.raises(ValueError, match=rf"{path}: the resnet18 encoder weights do not fit.*size mismatch"):
        load_pretrained_encoder(MultiCheXNet(backbone="resnet18"), path)
    torch.save({"model": {}}, path)
    with pytest.raises(ValueError, match=rf"{path}: not an encoder file"):
        load_pretrained_encoder(MultiCheXNet(backbone="resnet18"), path)
