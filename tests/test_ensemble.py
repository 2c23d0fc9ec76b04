"""MultiCheXNetEnsemble: the members' mean probabilities in evaluation, each member on its own loss in training, a
model file that rebuilds it, and a TorchScript export that gives the eager outputs."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from bundle.detection import CheXDetector
from bundle.losses import EnsembleLoss, MultiTaskLoss
from bundle.networks import MultiCheXNet, MultiCheXNetEnsemble, build_network, member_outputs
from bundle.networks.multichexnet import gate_outputs
from bundle.packaging import ModelPackage, read_checkpoint, read_package, save_model

ARGS = {"backbone": "resnet18", "num_classes": 3, "num_anchors": CheXDetector().num_anchors, "saliency_head": True}


@pytest.fixture(scope="module")
def ensemble() -> MultiCheXNetEnsemble:
    torch.manual_seed(0)
    return MultiCheXNetEnsemble(2, **ARGS).eval()


def test_evaluation_outputs_are_the_members_mean_probabilities(ensemble: MultiCheXNetEnsemble) -> None:
    image = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        got = ensemble(image)
        members = [m(image) for m in ensemble.members]
    assert set(got) == set(members[0])
    for key in ("cls", "seg", "det_cls", "det_gate", "seg_gate"):
        want = torch.stack([torch.sigmoid(m[key]) for m in members]).mean(0)
        torch.testing.assert_close(torch.sigmoid(got[key]), want, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(got["det_box"], (members[0]["det_box"] + members[1]["det_box"]) / 2)
    sal = (members[0]["sal"].exp() + members[1]["sal"].exp()) / 2  # mean of the two distributions
    torch.testing.assert_close(got["sal"].exp(), sal, atol=1e-7, rtol=1e-4)
    assert not torch.allclose(members[0]["seg"], members[1]["seg"])  # the members differ: the mean is not trivial
    assert ensemble(image, []) == {}


def test_training_mode_gives_each_members_outputs(ensemble: MultiCheXNetEnsemble) -> None:
    ensemble.train()
    try:
        pred = ensemble(torch.rand(2, 1, 64, 64), ["seg", "cls"])
    finally:
        ensemble.eval()
    assert sorted(pred) == ["cls/0", "cls/1", "seg/0", "seg/1"]
    split = member_outputs(pred, 2)
    assert [sorted(s) for s in split] == [["cls", "seg"], ["cls", "seg"]]
    with pytest.raises(KeyError, match="seg/2"):
        member_outputs({"seg/2": pred["seg/0"]}, 2)


def test_ensemble_loss_trains_each_member_on_its_own_loss() -> None:
    torch.manual_seed(0)
    net = MultiCheXNetEnsemble(2, backbone="resnet18", num_classes=3).train()
    loss = MultiTaskLoss(CheXDetector(), weights={"seg": 1.0, "cls": 1.0})
    mask = (torch.rand(2, 1, 64, 64) > 0.5).float()
    batch = {"image": torch.rand(2, 1, 64, 64), "mask": mask, "has_seg": torch.ones(2, dtype=torch.bool),
             "cls": torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0]]), "cls_known": torch.tensor([[True, True, False],
             [True, True, True]]), "has_cls": torch.ones(2, dtype=torch.bool)}
    pred = net(batch["image"], ["seg", "cls"])
    terms = EnsembleLoss(loss, 2)(pred, batch)
    each = [loss(m, batch) for m in member_outputs(pred, 2)]
    for key in ("loss", "seg", "cls"):
        want = (each[0][key].item() + each[1][key].item()) / 2
        assert terms[key].item() == pytest.approx(want, rel=1e-6)
    terms["loss"].backward(retain_graph=True)
    member_grad = net.members[1].seg_head.head[0].bias.grad.clone()
    net.zero_grad()
    (each[1]["loss"] / 2).backward()
    torch.testing.assert_close(net.members[1].seg_head.head[0].bias.grad, member_grad)
    assert net.members[0].seg_head.head[0].bias.grad is None  # member 1's loss leaves member 0 alone


def test_model_file_rebuilds_the_ensemble(tmp_path: Path, ensemble: MultiCheXNetEnsemble) -> None:
    package = ModelPackage.of(ensemble, CheXDetector(), ["a", "b", "c"], (64, 64))
    assert package.network_args["members"] == 2 and package.network_args["backbone"] == "resnet18"
    save_model(tmp_path / "model.pt", ensemble.state_dict(), package)
    rebuilt = read_package(tmp_path / "model.pt").network()
    assert isinstance(rebuilt, MultiCheXNetEnsemble)
    rebuilt.load_state_dict(read_checkpoint(tmp_path / "model.pt")["model"])
    image = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt.eval()(image)["seg"], ensemble(image)["seg"])
    assert isinstance(build_network(**{**ARGS, "members": 1}), MultiCheXNet)
    with pytest.raises(ValueError, match="at least 2 members"):
        MultiCheXNetEnsemble(1, **ARGS)
    with pytest.raises(ValueError, match="members must be 1 .* got 0"):
        build_network(**{**ARGS, "members": 0})


def test_torchscript_export_gives_the_eager_outputs_and_gating() -> None:
    torch.manual_seed(0)  # EfficientNet-B0: MONAI's ResNet does not script; the lung recipe's ensemble is B0
    ensemble = MultiCheXNetEnsemble(2, **{**ARGS, "backbone": "efficientnet-b0", "saliency_head": False}).eval()
    scripted = torch.jit.script(ensemble)
    image = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        eager, exported = ensemble(image), scripted(image)
        for key in eager:
            torch.testing.assert_close(exported[key], eager[key], atol=1e-4, rtol=1e-4)
        gated = scripted.forward_gated(image, 0.0, 1.0)  # every image passes the det gate, none the seg gate
    assert gated["det_gated_in"].all() and not gated["seg_gated_in"].any()
    assert float(gated["seg"].max()) == ensemble.negative_logit
    want = gate_outputs(eager, 0.0, 1.0)
    torch.testing.assert_close(gated["det_cls"], want["det_cls"], atol=1e-4, rtol=1e-4)
    assert math.isfinite(float(gated["det_box"].abs().max()))


def test_explain_refuses_an_ensemble(ensemble: MultiCheXNetEnsemble) -> None:
    from bundle.engines.folder_inference import FolderInferenceEvaluator

    with pytest.raises(ValueError, match="explanation maps are of one network, and this model is an ensemble of 2"):
        FolderInferenceEvaluator(torch.device("cpu"), [], ensemble, detector=CheXDetector(), explain=True)


@pytest.mark.parametrize(("overlays", "members"), [(("lung",), 3), (("lung", "semi_supervised"), 1),
                                                   (("lung", "kltv_appau"), 1)])
def test_lung_recipe_trains_an_ensemble_and_its_one_network_overlays_do_not(
    tmp_path: Path, overlays: tuple[str, ...], members: int
) -> None:
    """lung.json's network and training loss are the ensemble's; the overlays whose parts read the network's own
    outputs (semi-supervised, adversarial) set ``ensemble_members`` to 1 and get one MultiCheXNet and its loss."""
    from monai.bundle import ConfigParser

    from .conftest import ROOT

    parser = ConfigParser()
    parser.read_config([str(ROOT / "configs" / f"{name}.json") for name in ("train", *overlays)])
    parser["datalist_file"] = str(tmp_path / "unused.json")
    network = parser.get_parsed_content("network_def")
    loss = parser.get_parsed_content("train#trainer#loss_function")
    if members == 1:
        assert type(network) is MultiCheXNet and isinstance(loss, MultiTaskLoss)
    else:
        assert isinstance(network, MultiCheXNetEnsemble) and network.init_args["members"] == members
        assert isinstance(loss, EnsembleLoss) and loss.members == members and loss.loss is parser.get_parsed_content("loss")
