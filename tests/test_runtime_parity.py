"""The same radiographs give the same findings from every runtime: eager, TorchScript, ONNX Runtime and MONAI
Label's postprocessing, all through ``bundle.decisions`` and written as schema-valid prediction records."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser, ConfigWorkflow

from bundle.decisions import validate_record

from .conftest import ROOT, SHARED

DATA = SHARED / "data"
REAL = [
    *sorted((DATA / "siim" / "dicom").glob("*.dcm")),
    *sorted((DATA / "nih_fullres").glob("*.png"))[:1],
    *sorted((DATA / "covid" / "images").glob("*.jpg"))[:1],
]
TOLERANCE = 1e-4


#: Gates opened wider than the default 0.5, so that the random model's masks and boxes are compared too.
GATES = {"det_gate": 0.4, "seg_gate": 0.4}


@pytest.fixture(scope="module")
def model_dir(random_onnx: dict[str, Path]) -> Path:
    """The session's seeded random packaged model (box scores near 0.5, so that boxes are compared), with its
    TorchScript (``model.ts``) and ONNX (``model.onnx``) exports."""
    if len(REAL) < 4:
        pytest.skip(f"real samples not found under {DATA}")
    return random_onnx["ckpt"].parent


def _infer(model_dir: Path, inputs: Path, out: Path, backend: str, backend_file: str | None) -> dict[str, dict]:
    workflow = ConfigWorkflow(
        config_file=str(ROOT / "configs" / "inference.json"), meta_file=str(ROOT / "configs" / "metadata.json"),
        workflow_type="infer", bundle_root=str(ROOT), ckpt_dir=str(model_dir), input_dir=str(inputs),
        output_dir=str(out), backend=backend, backend_file=backend_file, output_formats=["png"], gate_thresholds=GATES,
    )
    workflow.initialize()
    workflow.run()
    workflow.finalize()
    return {p.name: json.loads(p.read_text()) for p in sorted(out.glob("*_pred.json"))}


def _comparable(record: dict) -> dict:
    return {
        "findings": {n: (f["probability"], f["positive"]) for n, f in record["findings"].items()},
        "gates": {n: (g["probability"], g["open"], g["head_ran"]) for n, g in record["gates"].items()},
        "mask": record["mask"]["pixels"] if record["mask"] else None,
        "boxes": [(b["label"], b["score"], b["box"]) for b in record["boxes"]],
    }


def _assert_same(got: dict, want: dict, where: str) -> None:
    got, want = _comparable(got), _comparable(want)
    for name, (p, positive) in want["findings"].items():
        assert abs(got["findings"][name][0] - p) <= TOLERANCE and got["findings"][name][1] == positive, (where, name)
    for name, (p, is_open, ran) in want["gates"].items():
        assert abs(got["gates"][name][0] - p) <= TOLERANCE and got["gates"][name][1:] == (is_open, ran), (where, name)
    assert got["mask"] is not None and abs(got["mask"] - want["mask"]) <= max(2, 1e-4 * want["mask"]), where
    assert len(got["boxes"]) == len(want["boxes"]), where
    for (label, score, box), (want_label, want_score, want_box) in zip(got["boxes"], want["boxes"]):
        assert label == want_label and abs(score - want_score) <= TOLERANCE, where
        np.testing.assert_allclose(box, want_box, atol=0.05, err_msg=where)


def test_runtimes_give_the_same_findings_on_real_images(model_dir: Path, tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    for path in REAL:
        shutil.copy(path, inputs / path.name)
    eager = _infer(model_dir, inputs, tmp_path / "eager", "eager", None)
    assert len(eager) == len(REAL)
    assert any(r["boxes"] for r in eager.values()) and any(r["mask"]["pixels"] for r in eager.values())
    runs = {
        "torchscript": _infer(model_dir, inputs, tmp_path / "ts", "torchscript", str(model_dir / "model.ts")),
        "onnxruntime": _infer(model_dir, inputs, tmp_path / "onnx", "onnxruntime", str(model_dir / "model.onnx")),
    }
    for backend, records in runs.items():
        assert set(records) == set(eager), backend
        for name, record in records.items():
            validate_record(record)
            _assert_same(record, eager[name], f"{backend} {name}")
    for record in eager.values():
        validate_record(record)


def test_monailabel_postprocessing_gives_the_run_inference_record(model_dir: Path, tmp_path: Path) -> None:
    """MONAI Label's path (preprocessing, inferer, un-batching, postprocessing) on one real DICOM and one PNG."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for path in (REAL[0], REAL[2]):
        shutil.copy(path, inputs / path.name)
    records = _infer(model_dir, inputs, tmp_path / "eager", "eager", None)
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "inference.json"))
    parser["bundle_root"], parser["ckpt_dir"], parser["gate_thresholds"] = str(ROOT), str(model_dir), GATES
    net = parser.get_parsed_content("network_def").eval()
    net.load_state_dict(torch.load(model_dir / "model.pt", weights_only=True)["model"])
    for path in sorted(inputs.iterdir()):
        data = parser.get_parsed_content("preprocessing")({"image": str(path)})
        with torch.no_grad():
            heads = parser.get_parsed_content("inferer")(data["image"][None], net)
        data["pred"] = {key: value[0] for key, value in heads.items()}
        result = parser.get_parsed_content("postprocessing")(data)["result"]
        validate_record(result)
        _assert_same(result, records[f"{path.name.rsplit('.', 1)[0]}_pred.json"], f"monailabel {path.name}")
