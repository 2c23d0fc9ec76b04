"""TorchScript export (scripts/export_torchscript.py) of all heads and gating: shapes against metadata.json, the
model package carried inside, parity with eager on real images (scripts/check_export.py)."""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bundle.export import check_network_io, eval_dim, load_exported
from bundle.packaging import ModelPackage, read_package, save_model

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


def _check(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "scripts/check_export.py", *args]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


def test_exported_heads_and_gating_match_metadata(exported: dict[str, Path]) -> None:
    model, metadata, config, package = load_exported(str(exported["ts"]))
    assert config["network_def"] == "$bundle.networks.build_network(**@network_args)"
    assert config["ckpt_dir"] == str(exported["ckpt"].parent)
    assert package.state_dict() == read_package(exported["ckpt"]).state_dict()
    assert check_network_io(model, metadata) == []
    assert check_network_io(package.network().eval(), metadata) == []


def test_export_names_a_file_without_package_or_weights(exported: dict[str, Path], tmp_path: Path) -> None:
    bare = tmp_path / "bare.ts"
    torch.jit.save(torch.jit.script(torch.nn.Identity()), str(bare))
    with pytest.raises(ValueError, match="no embedded metadata.json, inference.json, bundle_package.json; export "
                                         "with scripts/export_torchscript.py"):
        load_exported(str(bare))
    result = _check(str(bare))
    assert result.returncode == 1 and f"{bare}: no embedded metadata.json" in result.stderr
    result = _check(str(exported["ts"]), "--ckpt_dir", str(tmp_path))
    assert result.returncode == 1 and f"{tmp_path / 'model.pt'}: model file not found" in result.stderr


def test_io_check_names_each_mismatch(exported: dict[str, Path]) -> None:
    model, metadata, _, _ = load_exported(str(exported["ts"]))
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
    result = _check(str(exported["ts"]), "--ckpt_dir", str(exported["ckpt"].parent), "--images", str(images))
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(result.stdout)
    assert report["io_problems"] == [] and report["package_problems"] == [] and len(report["images"]) == 6
    assert report["gate_thresholds"] == read_package(exported["ckpt"]).policy.forward_gate_thresholds()
    keys = {"cls", "seg", "det_cls", "det_box", "det_gate", "seg_gate"}
    assert set(report["max_difference"]) == keys | {f"gated_{k}" for k in keys | {"det_gated_in", "seg_gated_in"}}
    assert max(report["max_difference"].values()) <= 1e-4


def test_check_export_names_a_package_of_another_model(exported: dict[str, Path], tmp_path: Path) -> None:
    """The export's package must describe the model file it is compared with: a detector with other anchors is named."""
    stored = read_package(exported["ckpt"])
    other = ModelPackage(stored.network_args, {**stored.detector_args, "base_anchor_shapes": [[8, 8]]}, stored.policy)
    save_model(tmp_path / "model.pt", torch.load(exported["ckpt"], weights_only=True)["model"], other)
    result = _check(str(exported["ts"]), "--ckpt_dir", str(tmp_path))
    assert result.returncode == 1
    problems = json.loads(result.stdout)["package_problems"]
    assert len(problems) == 1 and problems[0].startswith("detector_args: the export has {") and "[[8, 8]]" in problems[0]
