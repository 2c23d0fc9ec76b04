"""The inference benchmark runs and reports both variants."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from .conftest import ROOT


def test_benchmark_reports_ratio(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    subprocess.run(
        [sys.executable, "scripts/benchmark.py", "--sizes", "[64]", "--batch_size", "1", "--iterations", "1",
         "--backbone", "resnet18", "--output", str(out)],
        cwd=ROOT, check=True, capture_output=True, timeout=300,
    )
    (row,) = json.loads(out.read_text())
    assert row["size"] == 64 and row["multitask_images_per_s"] > 0 and row["three_single_task_images_per_s"] > 0
    assert row["throughput_ratio"] > 0
    assert row["multitask_peak_mib"] > 0
