"""ONNX export (scripts/export_onnx.py) and the runtime backends: eager, TorchScript and ONNX Runtime give the same
outputs and gate decisions on the real shared images, at any batch and image size; every export carries the model
package."""

from __future__ import annotations

import json
import os
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
from bundle.onnx_export import (  # noqa: E402
    GATED_NAMES,
    ONNX_OPSET,
    OPSET_KEY,
    OUTPUT_NAMES,
    THRESHOLD_NAMES,
    export_onnx,
    read_onnx_metadata,
)
from bundle.packaging import EXTRA_FILE, ModelPackage, read_checkpoint, read_package  # noqa: E402
from bundle.runtimes import (  # noqa: E402
    BACKENDS,
    EMBEDDED_FILES,
    OnnxRuntimeBackend,
    gate_outputs,
    load_backend,
    read_embedded,
    read_model_package,
)

from .conftest import ROOT, SHARED  # noqa: E402

DATA = SHARED / "data"
CONFIG = ROOT / "configs" / "inference.json"
META = ROOT / "configs" / "metadata.json"


def _export_cmd(ckpt_dir: Path, filepath: Path, config: Path = CONFIG, meta: Path = META) -> list[str]:
    return [
        sys.executable, "scripts/export_onnx.py", "--ckpt_dir", str(ckpt_dir), "--config_file", str(config),
        "--meta_file", str(meta), "--filepath", str(filepath),
    ]


@pytest.fixture(scope="module")
def exported(random_onnx: dict[str, Path]) -> dict[str, Path]:
    """The session's random-initialised packaged model, its TorchScript and its ONNX export by the command."""
    assert random_onnx["summary"]["outputs"] == [*OUTPUT_NAMES, *GATED_NAMES]
    assert random_onnx["summary"]["thresholds"] == list(THRESHOLD_NAMES)
    return random_onnx


def _parser(exported: dict[str, Path]) -> ConfigParser:
    parser = ConfigParser(json.loads(exported["config"].read_text()))
    parser["ckpt_dir"] = str(exported["ckpt"].parent)
    return parser


@pytest.fixture(scope="module")
def eager(exported: dict[str, Path]) -> torch.nn.Module:
    """The network the model file's package describes, with its weights."""
    network = read_package(exported["ckpt"]).network()
    network.load_state_dict(read_checkpoint(exported["ckpt"])["model"])
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
    resize = Resize(spatial_size=read_package(exported["ckpt"]).policy.image_size, mode="area")
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


def test_onnx_export_carries_the_model_package(exported: dict[str, Path]) -> None:
    """The package round-trips through the session's metadata, and both exports carry the model file's package
    and the same embedded texts."""
    want = read_package(exported["ckpt"]).state_dict()
    session = OnnxRuntimeBackend(exported["onnx"]).metadata
    assert ModelPackage.from_json(session[EXTRA_FILE]).state_dict() == want
    assert read_model_package(exported["onnx"]).state_dict() == want
    assert read_model_package(exported["ts"]).state_dict() == want
    onnx_texts, ts_texts = read_embedded(exported["onnx"]), read_embedded(exported["ts"])
    assert tuple(onnx_texts) == EMBEDDED_FILES and onnx_texts == {k: session[k] for k in EMBEDDED_FILES}
    assert {k: json.loads(v) for k, v in onnx_texts.items()} == {k: json.loads(v) for k, v in ts_texts.items()}


def test_onnx_embedded_texts_missing_name_the_export_command(exported: dict[str, Path], tmp_path: Path) -> None:
    model = onnx.load_model(str(exported["onnx"]))
    kept = [p for p in model.metadata_props if p.key != EXTRA_FILE]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    bare_onnx, bare_ts = tmp_path / "bare.onnx", tmp_path / "bare.ts"
    onnx.save_model(model, str(bare_onnx))
    torch.jit.save(torch.jit.script(torch.nn.Identity()), str(bare_ts))
    with pytest.raises(ValueError, match=f"bare.onnx: no embedded {EXTRA_FILE}; export it again with scripts/export_onnx"):
        read_model_package(bare_onnx)
    with pytest.raises(ValueError, match="bare.ts: no embedded metadata.json, inference.json, bundle_package.json; "
                                         "export it again with scripts/export_torchscript.py"):
        read_embedded(bare_ts)
    with pytest.raises(FileNotFoundError, match="none.onnx: exported model not found"):
        read_embedded(tmp_path / "none.onnx")


def test_onnx_export_has_dynamic_batch_and_image_size(exported: dict[str, Path], eager: torch.nn.Module) -> None:
    model = onnx.load_model(str(exported["onnx"]), load_external_data=False)
    image, *thresholds = model.graph.input
    assert [t.name for t in thresholds] == list(THRESHOLD_NAMES)
    assert all(len(t.type.tensor_type.shape.dim) == 0 for t in thresholds)  # scalars
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


def test_onnx_export_command_names_missing_model_file_and_config(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    for cmd, message in (
        (_export_cmd(tmp_path, tmp_path / "m.onnx"), f"{tmp_path / 'model.pt'}: model file not found"),
        (_export_cmd(tmp_path, tmp_path / "m.onnx", config=tmp_path / "none.json"),
         f"{tmp_path / 'none.json'}: inference config not found; pass the bundle's file with --config_file"),
    ):
        result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert result.returncode == 1 and message in result.stderr, result.stderr[-2000:]
        assert not (tmp_path / "m.onnx").exists()


def _conv_batches(exported: dict[str, Path], images: torch.Tensor, thresholds: tuple[float, float]) -> dict[int, int]:
    """How many Conv nodes ONNX Runtime ran at each batch size in one gated call (from its profile)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.enable_profiling = True
    options.profile_file_prefix = str(exported["onnx"].parent / "profile")
    session = ort.InferenceSession(str(exported["onnx"]), options, providers=["CPUExecutionProvider"])
    feeds = {"image": images.numpy(), **{n: torch.tensor(t).numpy() for n, t in zip(THRESHOLD_NAMES, thresholds)}}
    session.run(None, feeds)
    events = json.loads(Path(session.end_profiling()).read_text())
    batches: dict[int, int] = {}
    for event in events:
        args = event.get("args", {})
        if event.get("cat") == "Node" and args.get("op_name") == "Conv":
            batch = int(next(iter(args["input_type_shape"][0].values()))[0])
            batches[batch] = batches.get(batch, 0) + 1
    return batches


def test_onnx_graph_runs_the_heads_on_passing_images_only(exported: dict[str, Path], eager: torch.nn.Module) -> None:
    """The exported gating: with thresholds that pass 1 of 4 images the seg and det heads' convolutions run on one
    row; with thresholds 0 every convolution sees the whole batch; with none passing, one stand-in row runs and its
    outputs are dropped; the two thresholds act apart (outputs equal eager ``forward_gated`` in every case)."""
    torch.manual_seed(2)
    images = torch.rand(4, 1, 64, 64)
    with torch.no_grad():
        gates = {k: torch.sigmoid(v[:, 0]).sort().values for k, v in eager(images).items() if k.endswith("_gate")}
    one_of_four = tuple(float(gates[k][-2] + gates[k][-1]) / 2 for k in ("det_gate", "seg_gate"))
    backend = OnnxRuntimeBackend(exported["onnx"], threads=1)
    assert backend.gated
    cases = ((one_of_four, 1, 1), ((0.0, 0.0), 4, 4), ((2.0, 2.0), 0, 0), ((2.0, 0.0), 0, 4))
    for thresholds, det_passed, seg_passed in cases:
        got = backend.forward_gated(images, *thresholds)
        with torch.no_grad():
            want = eager.forward_gated(images, *thresholds)
        assert (int(got["det_gated_in"].sum()), int(got["seg_gated_in"].sum())) == (det_passed, seg_passed)
        for key, value in want.items():
            assert torch.allclose(got[key].float(), value.float(), atol=1e-4, rtol=0), (thresholds, key)
        batches = _conv_batches(exported, images, thresholds)
        assert set(batches) == ({4} if det_passed == seg_passed == 4 else {4, 1}), (thresholds, batches)
    assert _conv_batches(exported, images, one_of_four)[1] >= 10  # FPN, both subnets and the decoder


def test_onnx_all_heads_graph_of_an_earlier_export_is_gated_on_its_outputs(tmp_path: Path) -> None:
    """A graph with the image as its only input (exports before the gated graph) still serves both calls."""

    class AllHeads(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = torch.nn.Conv2d(1, 2, 3, padding=1)

        def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
            maps = self.conv(image)
            pooled = maps.mean((2, 3))
            boxes = maps.flatten(2).transpose(1, 2)
            return (pooled.repeat(1, 7), maps[:, :1], boxes[..., :1], boxes.repeat(1, 1, 2), pooled[:, :1],
                    pooled[:, 1:])

    torch.manual_seed(0)
    images = torch.rand(3, 1, 32, 32)
    program = torch.onnx.export(AllHeads().eval(), (images,), dynamo=True, input_names=["image"],
                                output_names=list(OUTPUT_NAMES))
    path = tmp_path / "all_heads.onnx"
    onnx.save_model(program.model_proto, str(path))
    backend = OnnxRuntimeBackend(path)
    assert not backend.gated
    outputs = backend(images)
    assert list(outputs) == list(OUTPUT_NAMES)
    thresholds = tuple(float(torch.sigmoid(outputs[k][:, 0]).median()) for k in ("det_gate", "seg_gate"))
    gated = backend.forward_gated(images, *thresholds)
    want = gate_outputs(outputs, *thresholds)
    assert set(gated) == set(want) and all(torch.equal(gated[k], want[k]) for k in want)
