"""Shared fixtures: a small synthetic dataset and a random-initialised exported model, made once per session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bundle.data import make_demo_dataset
from bundle.networks import MultiCheXNet

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="session")
def tiny_datalist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 64-pixel synthetic dataset: 32 training, 12 validation, 12 testing images."""
    return make_demo_dataset(tmp_path_factory.mktemp("demo"), num_train=32, num_val=12, num_test=12, size=64)


@pytest.fixture(scope="session")
def random_export(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A seeded random-initialised checkpoint (``ckpt``) and its ``ckpt_export`` TorchScript (``ts``)."""
    work = tmp_path_factory.mktemp("export")
    torch.manual_seed(0)
    torch.save(MultiCheXNet(num_anchors=4).state_dict(), work / "model.pt")
    cmd = [
        sys.executable, "-m", "monai.bundle", "ckpt_export", "network_def", "--filepath", str(work / "model.ts"),
        "--ckpt_file", str(work / "model.pt"), "--meta_file", "configs/metadata.json",
        "--config_file", "configs/inference.json",
    ]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    return {"ckpt": work / "model.pt", "ts": work / "model.ts"}
