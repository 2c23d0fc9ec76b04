"""Shared fixtures: a small synthetic dataset made once per test session."""

from __future__ import annotations

from pathlib import Path

import pytest

from bundle.data import make_demo_dataset

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"


@pytest.fixture(scope="session")
def tiny_datalist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 64-pixel synthetic dataset: 32 training, 12 validation, 12 testing images."""
    return make_demo_dataset(tmp_path_factory.mktemp("demo"), num_train=32, num_val=12, num_test=12, size=64)
