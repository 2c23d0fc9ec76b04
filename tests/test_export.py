"""TorchScript export of all heads and gating: shapes against metadata.json, parity with eager on real images."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from bundle.export import check_network_io, eval_dim, load_exported
from bundle.networks import MultiCheXNet

from .conftest import ROOT, SHARED

DATA = SHARED / "data"


@pytest.fixture(scope="module")
def exported(random_export: dict[str, Path]) -> dict[str, Path]:
    return random_export


def test_eval_dim() -> None:
    assert eval_dim(7, 3) == 7
    assert eval_dim("32*n", 3) == 96
    assert eval_dim("84*n*n", 2) == 336
    with pytest.raises(ValueError, match="only integers"):
        eval_dim("__import__('os')", 1)


def test_exported_heads_and_gating_match_metadata(exported: dict[str, Path]) -> None:
    model, metadata, config = load_exported(str(exported["ts"]))
    assert config["network_def"]["_target_"] == "bundle.networks.MultiCheXNet"
    assert check_network_io(model, metadata) == []
    assert check_network_io(MultiCheXNet(num_anchors=4).eval(), metadata) == []


def test_io_check_names_each_mismatch(exported: dict[str, Path]) -> None:
    model, metadata, _ = load_exported(str(exported["ts"]))
    wrong = copy.deepcopy(metadata)
    wrong["network_data_format"]["outputs"]["cls"]["num_channels"] = 13
    wrong["network_data_format"]["outputs"]["det_box"]["spatial_shape"] = ["80*n*n"]
    del wrong["network_data_format"]["outputs"]["seg_gate"]
    problems = check_network_io(model, wrong, sizes=(2,))
    assert "forward: cls has shape (2, 14), expected (2, 13) (n=2)" in problems
    assert "forward: det_box has shape (2, 336, 4), expected (2, 320, 4) (n=2)" in problems
    assert "forward_gated: output 'seg_gate' is not described in network_data_format" in problems


def test_exported_matches_eager_on_real_images(exported: dict[str, Path], tmp_path: Path) -> None:
    sources = [
        *sorted((DATA / "siim" / "dicom").glob("*.dcm")),
        *sorted((DATA / "nih1000" / "images").glob("*.png"))[:2],
        *sorted((DATA / "covid" / "images").glob("*.jpg"))[:2],
    ]
    if len(sources) < 6:
        pytest.skip(f"real samples not found under {DATA}")
    images = tmp_path / "images"
    images.mkdir()
    for src in sources:
        shutil.copy(src, images / src.name)
    cmd = [
        sys.executable, "scripts/check_export.py", str(exported["ts"]), "--ckpt_file", str(exported["ckpt"]),
        "--images", str(images),
    ]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["io_problems"] == [] and len(report["images"]) == 6
    keys = {"cls", "seg", "det_cls", "det_box", "det_gate", "seg_gate"}
    assert set(report["max_difference"]) == keys | {f"gated_{k}" for k in keys | {"det_gated_in", "seg_gated_in"}}
    assert max(report["max_difference"].values()) <= 1e-4
