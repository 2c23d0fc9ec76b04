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
    result = _run("--backbone", "resnet18", "--output", str(out), "--network_args", "{'det_subnet_depth': 1}",
                  "--rounds", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = json.loads(out.read_text())
    spec = json.loads((ROOT / "configs" / "train.json").read_text())["network_def"]
    # --network_args goes over the bundle's defaults: the given argument replaced, the others kept
    assert row["network_args"]["det_subnet_depth"] == 1 != spec["det_subnet_depth"]
    assert row["network_args"]["seg_skip_channels"] == spec["seg_skip_channels"]
    assert row["size"] == 64 and row["multitask_images_per_s"] > 0 and row["three_single_task_images_per_s"] > 0
    assert row["throughput_ratio"] > 0 and len(row["round_ratios"]) == 2  # the two variants alternated twice
    assert min(row["round_ratios"]) * 0.99 <= row["throughput_ratio"] <= max(row["round_ratios"]) * 1.01
    assert row["multitask_peak_mib"] > 0


@pytest.mark.parametrize("backend", ["torchscript", "onnxruntime"])
def test_benchmark_reports_the_single_task_ratio_for_exported_models(backend: str, tmp_path: Path) -> None:
    """``--compare tasks --backend``: the multi-task model and the three single-task models all run exported."""
    if backend == "onnxruntime":
        pytest.importorskip("onnxruntime", reason="the ONNX extra is not installed: pip install -e '.[onnx]'")
    out = tmp_path / "tasks.json"
    result = _run("--backbone", "efficientnet-b0", "--backend", backend, "--rounds", "1", "--output", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = json.loads(out.read_text())
    assert row["backend"] == backend and row["size"] == 64
    assert row["multitask_images_per_s"] > 0 and row["three_single_task_images_per_s"] > 0
    ratio = row["multitask_images_per_s"] / row["three_single_task_images_per_s"]
    assert row["throughput_ratio"] == pytest.approx(ratio, rel=0.05)


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


def test_benchmark_heads_breaks_the_pass_down_by_module(tmp_path: Path) -> None:
    out = tmp_path / "heads.json"
    result = _run("--compare", "heads", "--batch_size", "4", "--rounds", "1", "--backbone", "resnet18",
                  "--output", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = json.loads(out.read_text())
    ratios, ms = row["ratio_to_encoder_cls"], row["module_ms_per_batch"]
    assert ratios["encoder_cls"] == 1.0 and set(ratios) == {"encoder_cls", "all_heads", "gated"}
    assert row["gated_in"] == {"det": 0.25, "seg": 0.25}  # one image of four through each gate
    assert set(ms) >= {"encoder", "seg_head.lateral", "seg_head.decoder", "det_head.fpn", "det_head.cls_subnet",
                       "det_head.box_subnet"}
    # the bundle's default network: configs/train.json's literal network_def arguments
    spec = json.loads((ROOT / "configs" / "train.json").read_text())["network_def"]
    assert {k: row["network_args"][k] for k in ("seg_output_stride", "seg_skip_channels", "det_subnet_depth")} == {
        k: spec[k] for k in ("seg_output_stride", "seg_skip_channels", "det_subnet_depth")}
    assert all(v > 0 for v in ms.values()) and row["decisions_ms_per_batch"] > 0
    # the modules are timed inside the passes they make up (no timing comparison across runs: load varies)
    assert 0 < sum(row["module_share_of_all_heads"].values()) <= 1.0


@pytest.mark.parametrize("backend", ["torchscript", "onnxruntime"])
def test_benchmark_heads_gives_the_same_ratios_for_exported_models(backend: str, tmp_path: Path) -> None:
    if backend == "onnxruntime":
        pytest.importorskip("onnxruntime", reason="the ONNX extra is not installed: pip install -e '.[onnx]'")
    out = tmp_path / "heads.json"
    result = _run("--compare", "heads", "--batch_size", "4", "--rounds", "1", "--backbone", "efficientnet-b0",
                  "--backend", backend, "--output", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = json.loads(out.read_text())
    assert row["backend"] == backend and set(row["ratio_to_encoder_cls"]) == {"encoder_cls", "all_heads", "gated"}
    assert row["ratio_to_encoder_cls"]["encoder_cls"] == 1.0 and min(row["ms_per_batch"].values()) > 0
    # (a random EfficientNet's gates give every image the same probability, so here all pass: the gating itself
    # is tested in test_onnx_runtimes and test_gating)
    assert all(0.0 <= share <= 1.0 for share in row["gated_in"].values())
    if backend == "torchscript":
        assert "module_ms_per_batch" not in row  # the breakdown hooks need the eager modules
        return
    # ONNX Runtime's profiler: its kernels attributed to the modules the exporter recorded, nearly all of them
    ms, share = row["module_ms_per_batch"], row["module_share_of_all_heads"]
    assert set(ms) >= {"encoder", "cls_head", "seg_head.decoder", "seg_head.head", "det_head.fpn",
                       "det_head.cls_subnet", "det_head.box_subnet"}
    assert min(ms.values()) > 0 and sum(share.values()) == pytest.approx(1.0, abs=0.01)
    # what has no module is ONNX Runtime's layout reorders: a large share only of a 64-pixel pass
    assert share["encoder"] > 0.3 and share.get("unattributed", 0.0) < 0.25


def test_benchmark_rejects_unknown_comparison() -> None:
    result = _run("--compare", "backends")
    assert result.returncode != 0
    assert "--compare must be 'tasks', 'runtimes', 'heads' or 'train', got 'backends'" in result.stderr


def test_benchmark_times_a_training_step_in_float32_and_bfloat16(tmp_path: Path) -> None:
    from bundle.engines.precision import native_bfloat16_cpu

    out = tmp_path / "train.json"
    result = _run("--compare", "train", "--backbone", "resnet18", "--output", str(out))
    assert result.returncode == 0, result.stderr[-3000:]
    (row,) = json.loads(out.read_text())
    assert row["native_bfloat16"] is native_bfloat16_cpu()
    assert set(row["s_per_step"]) == {"float32", "bfloat16_autocast"} and min(row["s_per_step"].values()) > 0
    assert 100 < row["float32_peak_rss_mib"] < 24 * 1024  # the process's resident peak: torch alone is over 100 MiB
    # the ratio of the unrounded times (rounded to 0.01) lies within what the times rounded to 1 ms allow
    autocast, float32 = row["s_per_step"]["bfloat16_autocast"], row["s_per_step"]["float32"]
    low, high = (autocast - 5e-4) / (float32 + 5e-4), (autocast + 5e-4) / max(float32 - 5e-4, 1e-9)
    assert low - 0.005 <= row["autocast_over_float32"] <= high + 0.005


def test_demo_benchmark_reports_its_three_comparisons(tmp_path: Path) -> None:
    out = tmp_path / "demo_parts.json"
    cmd = [sys.executable, "scripts/benchmark_demo.py", "--size", "64", "--num_images", "12", "--augment_images", "4",
           "--steps", "1", "--rounds", "1", "--output", str(out)]
    result = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    figures = json.loads(out.read_text())
    assert set(figures["generation_s"]) == {"one_process", "workers"}
    assert set(figures["augmentation_ms_per_image"]) == {"monai", "bundle"}
    assert set(figures["adamw_step_ms"]) == {"foreach", "fused"}
    for key in ("generation_s", "augmentation_ms_per_image", "adamw_step_ms"):
        assert all(value > 0 for value in figures[key].values()), key
