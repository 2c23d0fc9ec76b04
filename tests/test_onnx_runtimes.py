"""ONNX export (scripts/export_onnx.py) and the runtime backends: eager, TorchScript and ONNX Runtime give the same
outputs and gate decisions on the real shared images, at any batch and image size."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

onnx = pytest.importorskip("onnx", reason="the ONNX extra is not installed: pip install -e '.[onnx]'")
pytest.importorskip("onnxruntime", reason="the ONNX extra is not installed: pip install -e '.[onnx]'")

from monai.bundle import ConfigParser  # noqa: E402
from monai.transforms import Resize  # noqa: E402

from bundle.data import load_cxr  # noqa: E402
from bundle.export import check_network_io, max_output_difference  # noqa: E402
from bundle.onnx_export import ONNX_OPSET, OPSET_KEY, OUTPUT_NAMES, export_onnx, read_onnx_metadata  # noqa: E402
from bundle.runtimes import BACKENDS, OnnxRuntimeBackend, gate_outputs, load_backend  # noqa: E402

from .conftest import ROOT, SHARED  # noqa: E402

DATA = SHARED / "data"
CONFIG = ROOT / "configs" / "inference.json"
META = ROOT / "configs" / "metadata.json"


def _export_cmd(ckpt: Path, filepath: Path, config: Path = CONFIG, meta: Path = META) -> list[str]:
    return [
        sys.executable, "scripts/export_onnx.py", "--ckpt_file", str(ckpt), "--config_file", str(config),
        "--meta_file", str(meta), "--filepath", str(filepath),
    ]


@pytest.fixture(scope="module")
def exported(random_export: dict[str, Path]) -> dict[str, Path]:
    """The session's random-initialised checkpoint and TorchScript, and its ONNX export by the command (from
    copies of the configs, ``config`` and ``meta``; the config's ``ckpt_dir`` overridden to the checkpoint's)."""
    work = random_export["ckpt"].parent
    onnx_file, config, meta = work / "model.onnx", work / "inference.json", work / "metadata.json"
    shutil.copy(CONFIG, config)
    shutil.copy(META, meta)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [*_export_cmd(random_export["ckpt"], onnx_file, config, meta), "--ckpt_dir", str(work)]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert summary["outputs"] == list(OUTPUT_NAMES)
    return {**random_export, "onnx": onnx_file, "config": config, "meta": meta}


def _parser(exported: dict[str, Path]) -> ConfigParser:
    parser = ConfigParser(json.loads(exported["config"].read_text()))
    parser["ckpt_dir"] = str(exported["ckpt"].parent)
    return parser


@pytest.fixture(scope="module")
def eager(exported: dict[str, Path]) -> torch.nn.Module:
    network = _parser(exported).get_parsed_content("network_def")
    network.load_state_dict(torch.load(exported["ckpt"], map_location="cpu", weights_only=True))
    return network.eval()


@pytest.fixture(scope="module")
def real_images(exported: dict[str, Path]) -> torch.Tensor:
    """SIIM DICOMs (MONOCHROME2 and 1), NIH full-resolution PNGs and COVID JPEGs, resized as inference.json does."""
    files = [
        *sorted((DATA / "siim" / "dicom").glob("*.dcm")),
        *sorted((DATA / "nih_fullres").glob("*.png"))[:2],
        *sorted((DATA / "covid" / "images").glob("*.jpg"))[:2],
    ]
    if len(files) < 6:
        pytest.skip(f"real samples not found under {DATA}")
    resize = Resize(spatial_size=_parser(exported).get_parsed_content("image_size"), mode="area")
    return torch.stack([resize(load_cxr(f)).as_tensor() for f in files]).float()


def _splitting_gates(network: torch.nn.Module, images: torch.Tensor) -> tuple[float, float]:
    """Gate thresholds that let half the images through: midway between the two middle gate probabilities, so
    that no image sits at its threshold (a 1e-7 difference there would flip its decision)."""
    with torch.no_grad():
        out = network(images)
    thresholds = []
    for key in ("det_gate", "seg_gate"):
        prob = torch.sigmoid(out[key][:, 0]).sort().values
        middle = len(prob) // 2
        assert prob[middle] - prob[middle - 1] > 1e-5, f"{key} probabilities too close to split: {prob.tolist()}"
        thresholds.append(float(prob[middle - 1] + prob[middle]) / 2)
    return tuple(thresholds)


def test_onnx_export_passes_checker_and_records_opset_and_metadata(exported: dict[str, Path]) -> None:
    onnx.checker.check_model(str(exported["onnx"]), full_check=True)
    model = onnx.load_model(str(exported["onnx"]))
    assert {o.domain: o.version for o in model.opset_import}[""] == ONNX_OPSET
    props = read_onnx_metadata(exported["onnx"])
    assert props[OPSET_KEY] == str(ONNX_OPSET)
    assert json.loads(props["metadata.json"]) == json.loads(exported["meta"].read_text())
    assert json.loads(props["inference.json"]) == _parser(exported).get()
    assert OnnxRuntimeBackend(exported["onnx"]).metadata == props


def test_onnx_export_has_dynamic_batch_and_image_size(exported: dict[str, Path], eager: torch.nn.Module) -> None:
    model = onnx.load_model(str(exported["onnx"]), load_external_data=False)
    (image,) = model.graph.input
    dims = image.type.tensor_type.shape.dim
    assert [bool(d.dim_param) for d in dims] == [True, False, True, True] and dims[1].dim_value == 1
    backend = load_backend("onnxruntime", path=exported["onnx"])
    metadata = json.loads(read_onnx_metadata(exported["onnx"])["metadata.json"])
    for batch in (1, 3):  # 128 and 192 px, forward and forward_gated shapes against metadata.json
        assert check_network_io(backend, metadata, sizes=(4, 6), batch=batch) == []
    tall = torch.rand(2, 1, 128, 192)
    got, want = backend(tall), eager(tall)
    assert {k: tuple(v.shape) for k, v in got.items()} == {k: tuple(v.shape) for k, v in want.items()}


def test_onnx_runtime_matches_eager_on_real_images(
    exported: dict[str, Path], eager: torch.nn.Module, real_images: torch.Tensor
) -> None:
    backend = load_backend("onnxruntime", path=exported["onnx"])
    thresholds = _splitting_gates(eager, real_images)
    with torch.no_grad():
        gated = eager.forward_gated(real_images, *thresholds)
    for key in ("det_gated_in", "seg_gated_in"):  # both branches of the gating are exercised
        assert 0 < int(gated[key].sum()) < len(real_images)
    diffs = max_output_difference(backend, eager, real_images, thresholds)
    assert set(diffs) == set(OUTPUT_NAMES) | {f"gated_{k}" for k in (*OUTPUT_NAMES, "det_gated_in", "seg_gated_in")}
    assert max(diffs.values()) <= 1e-4, diffs


def test_onnx_backends_give_identical_outputs(
    exported: dict[str, Path], eager: torch.nn.Module, real_images: torch.Tensor
) -> None:
    backends = {
        "eager": load_backend("eager", network=eager),
        "torchscript": load_backend("torchscript", path=exported["ts"]),
        "onnxruntime": load_backend("onnxruntime", path=exported["onnx"], threads=1),
    }
    assert tuple(backends) == BACKENDS and all(b.name == n for n, b in backends.items())
    thresholds = _splitting_gates(eager, real_images)
    results = {
        name: {"all": b(real_images), "gated": b.forward_gated(real_images, *thresholds)} for name, b in backends.items()
    }
    want = results["eager"]
    for name, got in results.items():
        for mode in ("all", "gated"):
            assert set(got[mode]) == set(want[mode]), (name, mode)
            for key, value in want[mode].items():
                assert got[mode][key].dtype == value.dtype and got[mode][key].shape == value.shape, (name, key)
                assert torch.allclose(got[mode][key].float(), value.float(), atol=1e-4, rtol=0), (name, mode, key)


def test_onnx_gate_outputs_follow_forward_gated(eager: torch.nn.Module) -> None:
    torch.manual_seed(1)
    images = torch.rand(4, 1, 64, 64)
    thresholds = _splitting_gates(eager, images)
    with torch.no_grad():
        want, got = eager.forward_gated(images, *thresholds), gate_outputs(eager(images), *thresholds)
    assert set(got) == set(want)
    for key in want:
        assert torch.allclose(got[key].float(), want[key].float(), atol=1e-5, rtol=0), key


def test_onnx_backend_errors_name_the_problem(exported: dict[str, Path], tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown backend 'tensorrt': choose one of eager, torchscript, onnxruntime"):
        load_backend("tensorrt", path=exported["onnx"])
    with pytest.raises(ValueError, match="needs a network or a model file path"):
        load_backend("onnxruntime")
    with pytest.raises(ValueError, match="eager backend needs the network module"):
        load_backend("eager", path=exported["ts"])
    with pytest.raises(FileNotFoundError, match="missing.onnx: ONNX model not found"):
        load_backend("onnxruntime", path=tmp_path / "missing.onnx")
    with pytest.raises(ValueError, match=r"multiples of 32, got \(1, 1, 100, 128\)"):
        load_backend("onnxruntime", path=exported["onnx"])(torch.rand(1, 1, 100, 128))
    with pytest.raises(ValueError, match="'opset' is reserved"):
        export_onnx(torch.nn.Identity(), metadata={OPSET_KEY: "7"})


def test_onnx_export_command_names_missing_checkpoint(tmp_path: Path) -> None:
    missing = tmp_path / "none.pt"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(
        _export_cmd(missing, tmp_path / "m.onnx"), cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode != 0
    assert f"{missing}: checkpoint not found" in result.stderr
