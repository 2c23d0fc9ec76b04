"""JSRT (+ SCR masks), Montgomery County and Shenzhen readers on tiny files written in their published layouts
and formats, and their one-line errors naming the bad file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bundle.data import lung_sources
from bundle.data.sources import SourceError

from .conftest import ROOT


def _write_jsrt(folder: Path, stem: str, value: int = 1000) -> Path:
    """A JSRT .IMG: 2048 x 2048 big-endian 16-bit words, 12-bit values, no header; a bright left half."""
    raw = np.full((2048, 2048), value, dtype=">u2")
    raw[:, :1024] = 4000  # raw 4000 = nearly black on film
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{stem}.IMG"
    raw.tofile(path)
    return path


def _write_gif(path: Path, box: tuple[int, int, int, int], size: tuple[int, int] = (1024, 1024)) -> None:
    mask = np.zeros(size[::-1], np.uint8)
    x1, y1, x2, y2 = box
    mask[y1:y2, x1:x2] = 255
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(mask).save(path, format="GIF")


def _scr(root: Path, fold: str, stem: str, lungs: tuple[str, ...] = ("left lung", "right lung")) -> None:
    boxes = {"right lung": (100, 200, 450, 800), "left lung": (570, 200, 920, 800)}
    for lung in lungs:
        _write_gif(root / "scratch" / fold / "masks" / lung / f"{stem}.gif", boxes[lung])


def test_jsrt_reader_converts_img_and_unites_scr_lungs(tmp_path: Path) -> None:
    images = tmp_path / "All247images"
    _write_jsrt(images, "JPCLN001")
    _write_jsrt(images, "JPCNN010")
    _scr(tmp_path / "scr", "fold1", "JPCLN001")
    _scr(tmp_path / "scr", "fold2", "JPCNN010")
    result = lung_sources.jsrt(images, tmp_path / "scr", tmp_path / "converted")
    assert [e["patient_id"] for e in result.entries] == ["JPCLN001", "JPCNN010"]
    image = np.asarray(Image.open(result.entries[0]["image"]))
    assert image.shape == (1024, 1024) and image.dtype == np.uint16
    assert image[0, 0] == 4095 - 4000 and image[0, -1] == 4095 - 1000  # inverted: film-dark is low
    mask = np.asarray(Image.open(result.entries[0]["mask"])) > 0
    assert mask.shape == (1024, 1024) and mask[500, 300] and mask[500, 700] and not mask[500, 512]


def test_jsrt_reader_names_truncated_img_and_half_mask(tmp_path: Path) -> None:
    images = tmp_path / "All247images"
    _write_jsrt(images, "JPCLN001")
    _scr(tmp_path / "scr", "fold1", "JPCLN001", lungs=("left lung",))
    with pytest.raises(SourceError, match=r"JPCLN001\.IMG: SCR has \['left lung'\] but no \['right lung'\]"):
        lung_sources.jsrt(images, tmp_path / "scr", tmp_path / "converted")
    (images / "JPCLN001.IMG").unlink()
    bad = images / "JPCLN002.IMG"
    bad.write_bytes(b"\x00" * 1000)
    with pytest.raises(SourceError, match=r"JPCLN002\.IMG: 1000 bytes; a JSRT \.IMG is 2048x2048") as err:
        lung_sources.jsrt(images, tmp_path / "scr", tmp_path / "converted")
    assert "\n" not in str(err.value)


def _montgomery(root: Path, stem: str, size: tuple[int, int] = (200, 240)) -> None:
    width, height = size
    image = (np.random.default_rng(0).random((height, width)) * 4095).astype(np.uint16)
    (root / "CXR_png").mkdir(parents=True, exist_ok=True)
    Image.fromarray(image).save(root / "CXR_png" / f"{stem}.png")
    for lung, (x1, x2) in (("rightMask", (20, 90)), ("leftMask", (110, 180))):
        mask = np.zeros((height, width), np.uint8)
        mask[40:200, x1:x2] = 255
        (root / "ManualMask" / lung).mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask).save(root / "ManualMask" / lung / f"{stem}.png")


def test_montgomery_reader_unites_left_and_right_masks(tmp_path: Path) -> None:
    root = tmp_path / "MontgomerySet"
    _montgomery(root, "MCUCXR_0001_0")
    _montgomery(root, "MCUCXR_0002_1")
    result = lung_sources.montgomery(root, tmp_path / "converted")
    assert [e["patient_id"] for e in result.entries] == ["MCUCXR_0001_0", "MCUCXR_0002_1"]
    assert result.entries[0]["image"] == str(root / "CXR_png" / "MCUCXR_0001_0.png")
    mask = np.asarray(Image.open(result.entries[0]["mask"])) > 0
    assert mask.shape == (240, 200) and mask[100, 50] and mask[100, 150] and not mask[100, 100]


def test_montgomery_reader_names_missing_and_wrong_size_masks(tmp_path: Path) -> None:
    root = tmp_path / "MontgomerySet"
    _montgomery(root, "MCUCXR_0001_0")
    (root / "ManualMask" / "leftMask" / "MCUCXR_0001_0.png").unlink()
    with pytest.raises(SourceError, match=r"MCUCXR_0001_0\.png: lung mask\(s\) missing: .*leftMask"):
        lung_sources.montgomery(root, tmp_path / "converted")
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(root / "ManualMask" / "leftMask" / "MCUCXR_0001_0.png")
    with pytest.raises(SourceError, match=r"leftMask/MCUCXR_0001_0\.png: mask is 10x10, the image is 200x240"):
        lung_sources.montgomery(root, tmp_path / "converted")


def _shenzhen(root: Path, stems: list[str], masked: list[str]) -> None:
    (root / "CXR_png").mkdir(parents=True, exist_ok=True)
    (root / "mask").mkdir(parents=True, exist_ok=True)
    for stem in stems:
        Image.fromarray((np.random.default_rng(1).random((120, 100, 3)) * 255).astype(np.uint8)).save(
            root / "CXR_png" / f"{stem}.png")
    for stem in masked:
        mask = np.zeros((120, 100), np.uint8)
        mask[20:100, 10:90] = 255
        Image.fromarray(mask).save(root / "mask" / f"{stem}_mask.png")


def test_shenzhen_reader_matches_mask_suffix_and_keeps_unmasked_images(tmp_path: Path) -> None:
    _shenzhen(tmp_path, ["CHNCXR_0001_0", "CHNCXR_0002_1"], ["CHNCXR_0001_0"])
    result = lung_sources.shenzhen(tmp_path / "CXR_png", tmp_path / "mask")
    first, second = result.entries
    assert first["mask"] == str(tmp_path / "mask" / "CHNCXR_0001_0_mask.png") and "mask" not in second
    assert {first["patient_id"], second["patient_id"]} == {"CHNCXR_0001_0", "CHNCXR_0002_1"}


def test_shenzhen_reader_names_unreadable_mask_and_orphan_mask(tmp_path: Path) -> None:
    _shenzhen(tmp_path, ["CHNCXR_0001_0"], ["CHNCXR_0001_0"])
    (tmp_path / "mask" / "CHNCXR_0001_0_mask.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with pytest.raises(SourceError, match=r"CHNCXR_0001_0_mask\.png: cannot read the mask"):
        lung_sources.shenzhen(tmp_path / "CXR_png", tmp_path / "mask")
    _shenzhen(tmp_path, [], ["CHNCXR_0001_0", "CHNCXR_0099_1"])
    with pytest.raises(SourceError, match=r"CHNCXR_0099_1_mask\.png: mask without an image"):
        lung_sources.shenzhen(tmp_path / "CXR_png", tmp_path / "mask")


def test_prepare_shenzhen_writes_patient_split_datalist(tmp_path: Path) -> None:
    stems = [f"CHNCXR_{i:04d}_{i % 2}" for i in range(1, 11)]
    _shenzhen(tmp_path, stems, stems[:8])
    output = tmp_path / "shenzhen.json"
    subprocess.run(
        [sys.executable, "scripts/prepare.py", "shenzhen", str(tmp_path / "CXR_png"), str(tmp_path / "mask"),
         str(output), "--fractions", "0.6,0.2,0.2"], cwd=ROOT, check=True, capture_output=True,
    )
    content = json.loads(output.read_text())
    splits = {k: {e["patient_id"] for e in content[k]} for k in ("training", "validation", "testing")}
    assert sum(map(len, splits.values())) == 10 and not splits["training"] & (splits["validation"] | splits["testing"])
    assert sum("mask" in e for k in splits for e in content[k]) == 8
