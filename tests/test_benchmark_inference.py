"""The folder-inference benchmark: its generated folder, its memory slope and one small run's report fields."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

from bundle.data.inputs import find_inputs

from .conftest import ROOT

SCRIPT = ROOT / "scripts" / "benchmark_inference.py"


def _script():
    spec = importlib.util.spec_from_file_location("benchmark_inference", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_make_folder_mixes_formats_nests_and_breaks_files_deterministically(tmp_path: Path) -> None:
    bench = _script()
    counts = bench.make_folder(tmp_path / "a", 20, broken_every=10, data=tmp_path / "no_data")
    generated = {kind: 3 if kind in bench.KINDS[:2] else 2 for kind in bench.KINDS}  # 18 files, 8 kinds in turn
    assert counts == {**generated, "truncated_png": 1, "text_named_dcm": 1}  # files 5 and 15
    found = find_inputs(tmp_path / "a")
    assert len(found.images) + len(found.others) == 20
    assert any(len(f.path.relative_to(tmp_path / "a").parts) == 4 for f in found.images)  # pacs/study/series/IM
    again = bench.make_folder(tmp_path / "b", 20, broken_every=10, data=tmp_path / "no_data")
    first = {p.relative_to(tmp_path / "a"): p.read_bytes() for p in (tmp_path / "a").rglob("*") if p.is_file()}
    second = {p.relative_to(tmp_path / "b"): p.read_bytes() for p in (tmp_path / "b").rglob("*") if p.is_file()}
    assert again == counts and first == second


def test_growth_is_the_second_half_slope_per_1000_images() -> None:
    bench = _script()
    flat_then_growing = [(n, 800.0 if n < 500 else 800.0 + 0.02 * (n - 500), 0.0) for n in range(0, 1001, 50)]
    assert abs(bench.growth_per_1000(flat_then_growing) - 20.0) < 1e-6
    assert abs(bench.growth_per_1000([(n, 900.0, 0.0) for n in range(0, 1001, 50)])) < 1e-6


def test_benchmark_reports_speed_shares_and_memory(tmp_path: Path) -> None:
    out = tmp_path / "rows.json"
    cmd = [sys.executable, str(SCRIPT), "--num_files", "8", "--workers", "[0]", "--formats", "['png']",
           "--broken_every", "4", "--sample_every", "2", "--threads", "1", "--work_dir", str(tmp_path / "work"),
           "--output", str(out)]
    result = subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = json.loads(out.read_text())
    assert row["num_workers"] == 0 and row["formats"] == ["png"] and row["threads"] == 1
    assert (row["files"], row["done"], row["failed"]) == (8, 6, 2)
    assert row["images_per_s"] > 0 and row["wall_s"] > 0
    assert set(row["share"]) == {"wait", "network", "writing", "other"}
    assert abs(sum(row["share"].values()) - 1.0) < 0.01 and min(row["share"].values()) >= 0.0
    assert set(row["steady_share"]) == set(row["share"]) and row["first_batch_s"] > 0
    assert set(row["rss_mib"]) == {"before_run", "start", "middle", "end", "max_sampled", "peak"}
    assert min(row["rss_mib"].values()) > 0
    assert [n for n, _, _ in row["rss_samples"]] == [4, 8]
    assert "| json+png | 0 |" in result.stdout and "fastest with formats png: num_workers=0" in result.stdout
    assert not (tmp_path / "work" / "outputs" / "png_nw0").exists()  # outputs are removed after the run
