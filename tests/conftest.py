"""Shared fixtures: a small synthetic dataset and a random-initialised packaged model with its TorchScript and ONNX
exports, made once per session (an ONNX export of DenseNet121 takes minutes on a small CPU)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.bundle import ConfigParser

from bundle.data import make_demo_dataset
from bundle.packaging import ModelPackage, save_model

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="session")
def tiny_datalist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 64-pixel synthetic dataset: 32 training, 12 validation, 12 testing images."""
    return make_demo_dataset(tmp_path_factory.mktemp("demo"), num_train=32, num_val=12, num_test=12, size=64)


@pytest.fixture(scope="session")
def random_export(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A seeded random-initialised packaged model file (``ckpt``: ``model.pt`` with the network, detector and
    default decision policy of ``configs/inference.json``) and its ``scripts/export_torchscript.py`` export (``ts``).
    The box classifier's bias is zeroed (box scores near 0.5 rather than the 0.01 prior), so boxes are compared."""
    work = tmp_path_factory.mktemp("export")
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "inference.json"))
    parser["ckpt_dir"] = str(work)
    torch.manual_seed(0)
    network = parser.get_parsed_content("network_def")
    with torch.no_grad():
        network.det_head.cls_subnet.cls_logits.bias.zero_()
    package = ModelPackage(
        network.init_args, parser.get_parsed_content("detector").init_args, parser.get_parsed_content("decision_policy")
    )
    save_model(work / "model.pt", network.state_dict(), package)
    cmd = [sys.executable, "scripts/export_torchscript.py", "--ckpt_dir", str(work), "--filepath", str(work / "model.ts")]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return {"ckpt": work / "model.pt", "ts": work / "model.ts"}


@pytest.fixture(scope="session")
def random_onnx(random_export: dict[str, Path]) -> dict[str, Path]:
    """``random_export`` plus its ``scripts/export_onnx.py`` export (``onnx``), made from copies of the configs
    (``config``, ``meta``) so that tests can check what the export embeds."""
    pytest.importorskip("onnx", reason="the ONNX extra is not installed: pip install -e '.[onnx]'")
    pytest.importorskip("onnxruntime", reason="the ONNX extra is not installed: pip install -e '.[onnx]'")
    work = random_export["ckpt"].parent
    onnx_file, config, meta = work / "model.onnx", work / "inference.json", work / "metadata.json"
    shutil.copy(ROOT / "configs" / "inference.json", config)
    shutil.copy(ROOT / "configs" / "metadata.json", meta)
    cmd = [sys.executable, "scripts/export_onnx.py", "--ckpt_dir", str(work), "--config_file", str(config),
           "--meta_file", str(meta), "--filepath", str(onnx_file)]
    result = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True,
                            text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    return {**random_export, "onnx": onnx_file, "config": config, "meta": meta, "summary": summary}
