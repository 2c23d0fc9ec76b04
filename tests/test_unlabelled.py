"""Unlabelled images: the datalist section, prepare.py unlabelled, aligned weak/strong views, the unlabelled stream,
and a corrupt unlabelled file named and skipped while training goes on."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.data import DataLoader
from PIL import Image

from bundle.data import DatalistError, multitask_collate, unlabelled_entries, unlabelled_loader, weak_strong_views
from bundle.data.sources import unlabelled_entry
from bundle.data.views import STRONG_KEY, WEAK_KEY
from bundle.detection import CheXDetector
from bundle.engines import MultiTaskTrainer, SemiSupervised
from bundle.losses import FixMatchLoss, MultiTaskLoss, SegConsistencyLoss
from bundle.networks import MultiCheXNet

from .conftest import ROOT, SHARED

NIH_IMAGES = SHARED / "data" / "nih1000" / "images"


def _png(path: Path, seed: int, size: int = 48) -> str:
    pixels = np.random.default_rng(seed).integers(0, 255, (size, size), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path.name


def _datalist(folder: Path, unlabelled: list[dict], testing: list[dict] | None = None) -> Path:
    mask = _png(folder / "m.png", 9)
    content = {
        "source": "toy",
        "training": [{"image": _png(folder / "a.png", 1), "mask": mask, "patient_id": "a"},
                     {"image": _png(folder / "b.png", 2), "patient_id": "b"}],
        "validation": [{"image": _png(folder / "v.png", 3), "patient_id": "v"}],
        "testing": testing or [{"image": _png(folder / "t.png", 4), "patient_id": "t"}],
        "unlabelled": unlabelled,
    }
    path = folder / "datalist.json"
    path.write_text(json.dumps(content))
    return path


def test_unlabelled_entries_join_the_section_and_training_entries_without_the_label(tmp_path: Path) -> None:
    path = _datalist(tmp_path, [{"image": _png(tmp_path / "u.png", 5), "patient_id": "u"}])
    found = unlabelled_entries(path, ["seg"])
    assert [Path(e["image"]).name for e in found] == ["u.png", "b.png"]  # a.png has a mask
    assert [Path(e["image"]).name for e in unlabelled_entries(path, ["seg"], include_training=False)] == ["u.png"]


def test_unlabelled_image_of_a_test_patient_is_refused(tmp_path: Path) -> None:
    path = _datalist(tmp_path, [{"image": _png(tmp_path / "u.png", 5), "patient_id": "t"}])
    with pytest.raises(DatalistError, match=r"held-out patients: .*toy patient t .*testing"):
        unlabelled_entries(path, ["seg"])


def test_unlabelled_nih_image_is_kept_apart_from_another_datasets_patient_numbers(tmp_path: Path) -> None:
    nih = unlabelled_entry(tmp_path / _png(tmp_path / "00000102_000.png", 5))
    assert nih["patient_id"] == "nih-102"
    covid = _datalist(tmp_path, [nih], testing=[{"image": _png(tmp_path / "t.png", 4), "patient_id": "102"}])
    assert [e["image"] for e in unlabelled_entries(covid, [])] == [nih["image"]]  # COVID patient 102 is not NIH's
    content = json.loads(covid.read_text())
    content["testing"] = [{"image": _png(tmp_path / "00000102_001.png", 6), "patient_id": "102"}]
    covid.write_text(json.dumps(content))
    with pytest.raises(DatalistError, match="NIH patient 102"):  # the same NIH patient is still found
        unlabelled_entries(covid, [])


def test_unlabelled_weak_and_strong_views_are_pixel_aligned() -> None:
    views = weak_strong_views(rotate_degrees=20.0, scale=0.2, translate=8.0, cutout=0.0)
    views.set_random_state(3)
    image = torch.zeros(1, 64, 64)
    image[0, 10:22, 30:44] = 1.0  # an off-centre block: any rotation or shift moves it
    moved = 0
    for _ in range(12):
        out = views({"image": image})
        weak, strong = out[WEAK_KEY], out[STRONG_KEY]
        assert weak.shape == strong.shape == image.shape
        inside = weak > 0.5
        if not torch.equal(inside, image > 0.5):
            moved += 1
        # photometric changes keep the block brighter than its surroundings at the same pixels
        assert strong[inside].mean() > strong[weak < 0.05].mean() + 0.2
        corr = torch.corrcoef(torch.stack([weak.flatten(), strong.flatten()]))[0, 1]
        shifted = torch.corrcoef(torch.stack([weak.flatten(), torch.roll(strong, 6, dims=1).flatten()]))[0, 1]
        assert corr > 0.8 and corr > shifted + 0.2
    assert moved >= 8  # the weak view itself is a geometric augmentation


def test_unlabelled_prepare_from_a_csv_names_and_leaves_out_an_unreadable_file(tmp_path: Path) -> None:
    names = [_png(tmp_path / f"x{i}.png", i) for i in range(2)]
    (tmp_path / "cut.png").write_bytes((tmp_path / "x0.png").read_bytes()[:200])
    csv = tmp_path / "list.csv"
    csv.write_text("image\n" + "\n".join([*names, "cut.png"]) + "\n")
    datalist = _datalist(tmp_path, [])
    cmd = [sys.executable, "scripts/prepare.py", "unlabelled", str(csv), str(datalist)]
    result = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "cut.png" in result.stdout and "truncated or corrupt" in result.stdout
    content = json.loads(datalist.read_text())
    assert [e["image"] for e in content["unlabelled"]] == names
    assert content["training"][0]["mask"] == "m.png"  # the labelled lists are kept


@pytest.mark.skipif(not NIH_IMAGES.is_dir(), reason="shared real data (../shared/data) not present")
def test_unlabelled_real_nih_thumbnails_stream_with_their_batch_size(tmp_path: Path) -> None:
    entries = [{"image": str(p), "patient_id": p.stem} for p in sorted(NIH_IMAGES.glob("*.png"))[:6]]
    batches = unlabelled_loader(entries, (64, 64), weak_strong_views(), batch_size=4)
    sizes = [next(batches)[WEAK_KEY].shape for _ in range(3)]  # 6 images, batch 4, drop_last: restarts each time
    assert sizes == [torch.Size([4, 1, 64, 64])] * 3
    assert next(batches)[STRONG_KEY].shape == (4, 1, 64, 64)


def test_unlabelled_corrupt_file_is_named_and_skipped_without_stopping_training(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    entries = [{"image": str(tmp_path / _png(tmp_path / f"u{i}.png", i, 64)), "patient_id": str(i)} for i in range(3)]
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\nnot really")
    entries.insert(1, {"image": str(broken), "patient_id": "x"})
    part = SemiSupervised(
        unlabelled_loader(entries, (64, 64), weak_strong_views(), batch_size=2),
        terms={"cls": FixMatchLoss(0.7), "seg": SegConsistencyLoss("kl")}, weights={"cls": 0.25, "seg": 1.0},
    )
    labelled = [{"image": torch.rand(1, 64, 64), "mask": torch.zeros(1, 64, 64), "has_seg": True,
                 "cls": torch.zeros(14), "cls_known": torch.ones(14, dtype=torch.bool), "has_cls": True,
                 "boxes": torch.zeros(0, 4), "box_labels": torch.zeros(0, dtype=torch.int64), "has_det": False}] * 2
    net = MultiCheXNet(backbone="resnet18", seg_channels=(16, 16, 8, 8, 8))
    trainer = MultiTaskTrainer(
        device=torch.device("cpu"), max_epochs=2, network=net, tasks=["cls", "seg"], amp=False,
        train_data_loader=DataLoader(labelled, batch_size=2, collate_fn=multitask_collate),
        optimizer=torch.optim.SGD(net.parameters(), lr=0.01), loss_function=MultiTaskLoss(CheXDetector()),
        parts={"semi": part},
    )
    with caplog.at_level(logging.WARNING, logger="bundle.data"):
        trainer.run()
    assert trainer.state.iteration == 2  # two unlabelled batches: all four entries drawn
    warnings = [r.getMessage() for r in caplog.records if "broken.png" in r.getMessage()]
    assert len(warnings) == 1 and "skipped, training goes on" in warnings[0]
