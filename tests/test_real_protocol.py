"""The real-data protocol configs on ../shared/data: NIH classes, RSNA boxes, COVID lung masks, COVID transfer."""

from __future__ import annotations

import csv
import re
from pathlib import Path

import pytest
import torch

from .conftest import SHARED
from .test_real_data_training import _run

DATA = SHARED / "data"
pytestmark = pytest.mark.skipif(not (DATA / "covid").is_dir(), reason=f"real samples not found at {DATA}")
ONE_EPOCH_EACH = '{"cls": 1, "det_gate": 1, "det": 1, "seg_gate": 1, "seg": 1, "mtl": 1}'
SMALL = ["--image_size", "[64,64]", "--batch_size", "16", "--network_def#backbone", "resnet18"]


def _nih_subset(path: Path) -> Path:
    """The official NIH label file cut to the RSNA-labelled images and 100 others."""
    nih = DATA / "nih1000"
    with open(nih / "rsna" / "patient_to_nih.csv", newline="") as handle:
        in_rsna = {row["Image Index"] for row in csv.DictReader(handle)}
    with open(nih / "Data_Entry_2017.csv", newline="") as handle:
        header, *rows = list(csv.reader(handle))
    keep = [r for r in rows if r[0] in in_rsna] + [r for r in rows if r[0] not in in_rsna][:100]
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows([header, *keep])
    return path


@pytest.fixture(scope="module")
def real_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("real")
    nih = DATA / "nih1000"
    _run(
        "scripts/prepare.py", "nih", str(_nih_subset(root / "entries.csv")), str(root / "data/real/nih.json"),
        "--images_dir", str(nih / "images"), "--rsna_labels", str(nih / "rsna" / "stage_2_train_labels.csv"),
        "--rsna_map", str(nih / "rsna" / "patient_to_nih.csv"),
    )
    _run(
        "scripts/prepare.py", "covid", str(DATA / "covid" / "metadata.csv"), str(root / "data/real/covid.json"),
        "--images_dir", str(DATA / "covid" / "images"), "--masks_dir", str(DATA / "covid" / "lung_masks"),
    )
    return root


def test_real_protocol_then_covid_transfer(real_dir: Path) -> None:
    result = _run(
        "-m", "monai.bundle", "run", "training", "--config_file",
        "['configs/train.json','configs/protocol.json','configs/real_protocol.json']",
        "--bundle_root", str(real_dir), "--ckpt_dir", str(real_dir / "models/real"),
        "--protocol_epochs", ONE_EPOCH_EACH, "--val_interval", "3", *SMALL,
    )
    log = result.stdout + result.stderr
    assert re.findall(r"phase '(\w+)' \(tasks", log) == [
        "cls_pretrain", "det_classifier", "det_head", "seg_classifier", "seg_head", "mtl_alternating"
    ]
    dice = [float(v) for v in re.findall(r"val_dice_pos: ([0-9.]+)", log)]
    assert dice and all(0.0 <= d <= 1.0 for d in dice)  # COVID lung masks reach the validation metrics
    _run(
        "-m", "monai.bundle", "run", "training", "--config_file",
        "['configs/train.json','configs/transfer.json','configs/real_transfer.json']",
        "--bundle_root", str(real_dir), "--pretrained_ckpt", str(real_dir / "models/real/phase_mtl_alternating.pt"),
        "--warmup_epochs", "1", "--finetune_epochs", "1", *SMALL,
    )
    state = torch.load(real_dir / "models/real_transfer/phase_transfer_finetune.pt", weights_only=True)
    assert state["cls_head.dec.weight"].shape[0] == 1
