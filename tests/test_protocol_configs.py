"""The protocol configs run end to end: phased protocol, BigBang, single-task baselines, transfer learning."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import torch

from bundle.packaging import read_package

from .test_bundle_commands import _bundle

SMALL = ["--image_size", "[64,64]", "--batch_size", "8", "--network_def#backbone", "resnet18"]
ONE_EPOCH_EACH = '{"cls": 1, "det_gate": 1, "det": 1, "seg_gate": 1, "seg": 1, "mtl": 1}'


def _train(configs: list[str], datalist: Path, ckpt: Path, *extra: str) -> str:
    files = "[" + ",".join(f"'configs/{c}.json'" for c in ["train", *configs]) + "]"
    result = _bundle(
        "run", "training", "--config_file", files, "--datalist_file", str(datalist), "--ckpt_dir", str(ckpt),
        "--output_dir", str(ckpt / "eval"), *SMALL, *extra,
    )
    return result.stdout + result.stderr


@pytest.fixture(scope="module")
def protocol_run(tmp_path_factory: pytest.TempPathFactory, tiny_datalist: Path) -> tuple[Path, str]:
    ckpt = tmp_path_factory.mktemp("protocol")
    return ckpt, _train(["protocol"], tiny_datalist, ckpt, "--protocol_epochs", ONE_EPOCH_EACH)


def test_protocol_runs_phases_in_paper_order(protocol_run: tuple[Path, str]) -> None:
    ckpt, log = protocol_run
    order = re.findall(r"phase '(\w+)' \(tasks", log)
    assert order == ["cls_pretrain", "det_classifier", "det_head", "seg_classifier", "seg_head", "mtl_alternating"]
    assert {p.name for p in ckpt.glob("phase_*.pt")} == {f"phase_{n}.pt" for n in order}
    assert "teacher forcing:" in log


def test_bigbang_skips_pretraining(tmp_path: Path, tiny_datalist: Path) -> None:
    log = _train(["protocol", "bigbang"], tiny_datalist, tmp_path, "--protocol_epochs", ONE_EPOCH_EACH)
    assert re.findall(r"phase '(\w+)' \(tasks", log) == ["bigbang_mtl"] * 6
    assert [p.name for p in tmp_path.glob("phase_*.pt")] == ["phase_bigbang_mtl.pt"]


def test_joint_mtl_derives_boxes_from_masks(tmp_path: Path, tiny_datalist: Path) -> None:
    log = _train(["protocol", "joint_mtl"], tiny_datalist, tmp_path, "--protocol_epochs", ONE_EPOCH_EACH)
    assert re.findall(r"phase '(\w+)' \(tasks", log)[-1] == "mtl_joint"
    joint = [line for line in log.splitlines() if "Epoch: 6/6, Iter:" in line]
    assert joint and all(" cls: " in line and " seg: " in line and " det_cls: " in line for line in joint)


def test_single_task_baseline_trains_one_head(tmp_path: Path, tiny_datalist: Path) -> None:
    log = _train(["single_seg"], tiny_datalist, tmp_path, "--epochs", "1")
    losses = [line for line in log.splitlines() if "Iter:" in line]
    assert losses and all(" seg: " in line and " cls: " not in line and "det_cls" not in line for line in losses)


def test_transfer_swaps_classifier_and_keeps_encoder(
    protocol_run: tuple[Path, str], tiny_datalist: Path, tmp_path: Path
) -> None:
    source = protocol_run[0] / "phase_mtl_alternating.pt"
    content = json.loads(tiny_datalist.read_text())
    pneumonia = 6  # index of "Pneumonia" in NIH_FINDINGS
    for split in ("training", "validation", "testing"):
        for entry in content[split]:
            other = int(any(v == 1 for i, v in enumerate(entry["cls"]) if i != pneumonia))
            entry["cls"] = [entry["cls"][pneumonia], other]
            entry["image"] = str(tiny_datalist.parent / entry["image"])
            entry["mask"] = str(tiny_datalist.parent / entry["mask"])
    datalist = tmp_path / "covid_like.json"
    datalist.write_text(json.dumps(content))
    log = _train(
        ["transfer"], datalist, tmp_path / "out", "--pretrained_ckpt", str(source),
        "--warmup_epochs", "1", "--finetune_epochs", "1",
    )
    assert re.findall(r"phase '(\w+)' \(tasks", log) == ["transfer_warmup", "transfer_finetune"]
    warm = torch.load(tmp_path / "out" / "phase_transfer_warmup.pt", weights_only=True)
    pre = torch.load(source, weights_only=True)
    assert warm["cls_head.dec.weight"].shape == (2, pre["cls_head.dec.weight"].shape[1])
    for key in pre:
        if key.startswith(("encoder.", "cls_head.feats.")) and "num_batches_tracked" not in key:
            torch.testing.assert_close(warm[key], pre[key], msg=f"{key} changed during the frozen warm-up")
    # the model file describes the network it holds (two classes), so inference and evaluation rebuild it
    package = read_package(tmp_path / "out" / "model.pt")
    assert package.network_args["num_classes"] == 2 and package.policy.class_names == ("Pneumonia", "Other")
    package.network().load_state_dict(torch.load(tmp_path / "out" / "model.pt", weights_only=True)["model"])
