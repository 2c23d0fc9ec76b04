"""The inference benchmarks run and report their ratios: multi-task vs single-task models, and the runtimes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bundle.runtimes import BACKENDS

from .conftest import ROOT


def _run(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "scripts/benchmark.py", "--sizes", "[64]", "--batch_size", "1", "--iterations", "1", *args]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)


def test_benchmark_reports_ratio(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    result = _run("--backbone", "resnet18", "--output", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = json.loads(out.read_text())
    assert row["size"] == 64 and row["multitask_images_per_s"] > 0 and row["three_single_task_images_per_s"] > 0
    assert row["throughput_ratio"] > 0
    assert row["multitask_peak_mib"] > 0


def test_benchmark_compares_runtimes(tmp_path: Path) -> None:
    pytest.importorskip("onnxruntime", reason="the ONNX extra is not installed: pip install -e '.[onnx]'")
    out = tmp_path / "runtimes.json"
    result = _run("--compare", "runtimes", "--rounds", "1", "--backbone", "efficientnet-b0", "--output", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = json.loads(out.read_text())
    assert row["size"] == 64 and row["device"] == "cpu" and row["threads"] >= 1
    for mode in ("all_heads", "gated"):
        report = row[mode]
        assert set(report["images_per_s"]) == set(BACKENDS) and min(report["images_per_s"].values()) > 0
        assert report["ratio_to_eager"]["eager"] == 1.0
        assert report["fastest"] in BACKENDS
        assert report["fastest_speedup_over_eager"] == report["ratio_to_eager"][report["fastest"]] >= 1.0
        assert max(report["max_abs_diff_vs_eager"].values()) <= 1e-4
    assert all(0.0 <= share <= 1.0 for share in row["gated"]["gated_in"].values())


def test_benchmark_rejects_unknown_comparison() -> None:
    result = _run("--compare", "backends")
    assert result.returncode != 0 and "--compare must be 'tasks' or 'runtimes', got 'backends'" in result.stderr
