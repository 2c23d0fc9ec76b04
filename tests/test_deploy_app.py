"""The MONAI Deploy application (scripts/deploy/app.py) on a real SIIM CR DICOM (its MONOCHROME1 variant: the
inversion and the header warning are exercised too), in its own environment: its findings are the prediction
record of the schema and equal the bundle's own ``run inference`` record on the same file, under the decision
policy the exported model carries."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from monai.transforms import Resize
from PIL import Image

from bundle.data.readers import load_cxr
from bundle.decisions import DecisionPolicy, MaskPostprocessing, validate_record
from bundle.packaging import ModelPackage, file_sha256, read_checkpoint, read_package, save_model

from .conftest import ROOT, SHARED

VENV_PYTHON = ROOT / ".venv-deploy" / "bin" / "python"
SOURCE = SHARED / "data" / "siim" / "dicom" / "monochrome1_variant.dcm"
#: Probabilities and scores: TorchScript (the app) against eager (``run inference``), same pixels in.
TOLERANCE = 1e-4


def _policy_fixed_gates_would_miss(package: ModelPackage, weights: dict[str, torch.Tensor]) -> tuple[DecisionPolicy, dict]:
    """A policy made for this image from the network's own outputs on it: the detection gate's threshold on the
    other side of its probability from 0.5 (so a fixed 0.5 gate decides otherwise), the segmentation gate open,
    some findings above their threshold and some below, a mask threshold at the median mask probability and mask
    post-processing on; no probability near its threshold. Also returns the gate probabilities."""
    network = package.network().eval()
    network.load_state_dict(weights)
    image = Resize(spatial_size=package.policy.image_size, mode="area")(load_cxr(SOURCE)).as_tensor()[None]
    with torch.no_grad():
        out = network(image)
    probs = torch.sigmoid(out["cls"][0]).sort().values
    split = 3 + int((probs[3:-2] - probs[2:-3]).argmax())  # the widest gap leaving 3 findings or more on each side
    assert probs[split] - probs[split - 1] > 1e-3, probs
    det, seg = (float(torch.sigmoid(out[g][0, 0])) for g in ("det_gate", "seg_gate"))
    policy = package.policy.override(
        findings=dict.fromkeys(package.policy.class_names, float(probs[split - 1] + probs[split]) / 2),
        gates={"det_gate": (det + 1) / 2 if det >= 0.5 else det / 2, "seg_gate": seg / 2},
        mask_threshold=float(torch.sigmoid(out["seg"]).median()),
        reason="chosen for this test image",
    )
    return replace(policy, mask=MaskPostprocessing(fill_holes=True, min_area_fraction=1e-3, keep_largest=2)), {
        "det_gate": det, "seg_gate": seg}


def _run(cmd: list[str], env: dict[str, str] | None = None) -> None:
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, random_export: dict[str, Path]) -> dict:
    """The session's random model with a policy of its own, exported; the app and ``run inference`` on SOURCE."""
    if not VENV_PYTHON.is_file():
        pytest.skip("no .venv-deploy: run scripts/deploy/setup_venv.sh (as .ci/run does)")
    if not SOURCE.is_file():
        pytest.skip(f"real SIIM DICOM not found at {SOURCE}")
    work = tmp_path_factory.mktemp("deploy")
    models, inputs = work / "models", work / "in"
    models.mkdir()
    inputs.mkdir()
    shutil.copy(SOURCE, inputs / SOURCE.name)
    stored, weights = read_package(random_export["ckpt"]), read_checkpoint(random_export["ckpt"])["model"]
    policy, gate_probs = _policy_fixed_gates_would_miss(stored, weights)
    save_model(models / "model.pt", weights, ModelPackage(stored.network_args, stored.detector_args, policy))
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    _run([sys.executable, "scripts/export_torchscript.py", "--ckpt_dir", str(models), "--filepath",
          str(models / "model.ts")], env)
    _run([str(VENV_PYTHON), "scripts/deploy/app.py", "-i", str(inputs), "-o", str(work / "out"), "-m",
          str(models / "model.ts")])  # the app finds the bundle itself: no PYTHONPATH
    _run([sys.executable, "-m", "monai.bundle", "run", "inference", "--config_file", "configs/inference.json",
          "--ckpt_dir", str(models), "--input_dir", str(inputs), "--output_dir", str(work / "pred"),
          "--output_formats", "['png']"], env)
    found = {ds.Modality: ds for ds in (pydicom.dcmread(p) for p in (work / "out").glob("*.dcm"))}
    assert set(found) == {"SEG", "SR"}
    stem = SOURCE.name[: -len(".dcm")]
    return {
        "app": json.loads((work / "out" / "findings.json").read_text()),
        "bundle": json.loads((work / "pred" / f"{stem}_pred.json").read_text()),
        "bundle_mask": np.asarray(Image.open(work / "pred" / f"{stem}_mask.png")) > 0,
        "dicom": found,
        "models": models,
        "policy": policy,
        "gate_probs": gate_probs,
    }


def test_deploy_record_follows_the_schema_and_the_package_policy(runs: dict) -> None:
    record, policy = runs["app"], runs["policy"]
    validate_record(record)
    assert record["model"]["sha256"] == file_sha256(runs["models"] / "model.ts")
    gates = policy.forward_gate_thresholds()
    for name, gate in record["gates"].items():
        assert gate["threshold"] == pytest.approx(gates[name], abs=1e-6) and gate["head_ran"] == gate["open"]
        assert record["operating_points"]["gates"][name]["rule"] == "override"
    det = record["gates"]["det_gate"]  # a fixed 0.5 gate, as the app had, would have decided otherwise
    assert det["open"] != (runs["gate_probs"]["det_gate"] >= 0.5)
    assert record["gates"]["seg_gate"]["open"] and record["mask"]["pixels"] > 0
    assert 0 < sum(f["positive"] for f in record["findings"].values()) < len(record["findings"])
    assert record["postprocessing"]["mask"] == policy.mask.to_dict()
    assert record["spacing"] == {"mm_per_pixel": [0.168, 0.168], "source": "PixelSpacing"}
    assert [w["code"] for w in record["warnings"]] == ["inverted_photometric_corrected"]  # from the DICOM header


def test_deploy_findings_equal_run_inference_on_the_same_dicom(runs: dict) -> None:
    """Same decisions; probabilities and box scores within 1e-4 (TorchScript against eager on identical pixels:
    the app reads the data set through the bundle's grey-level pipeline and JPEG decoders)."""
    app, bundle = runs["app"], runs["bundle"]
    validate_record(bundle)
    for key in ("schema_version", "operating_points", "calibration", "postprocessing", "spacing", "warnings"):
        assert app[key] == bundle[key], key
    assert {**app["policy"], "source": None} == {**bundle["policy"], "source": None}  # read from model.ts / .pt
    assert app["policy"]["source"] == f"{runs['models'] / 'model.ts'}:bundle_package.json"
    assert app["input"]["image_size"] == bundle["input"]["image_size"] == [1024, 1024]
    assert Path(app["input"]["file"]).resolve() == Path(bundle["input"]["file"]).resolve()
    assert {k: v for k, v in app["model"].items() if k != "sha256"} == {k: v for k, v in bundle["model"].items() if k != "sha256"}
    assert set(app["findings"]) == set(bundle["findings"])
    for name, want in bundle["findings"].items():
        got = app["findings"][name]
        assert abs(got["probability"] - want["probability"]) <= TOLERANCE, name
        assert (got["positive"], got["threshold"]) == (want["positive"], want["threshold"]), name
    for name, want in bundle["gates"].items():
        got = app["gates"][name]
        assert abs(got["probability"] - want["probability"]) <= TOLERANCE, name
        assert {k: got[k] for k in ("threshold", "gated", "open", "head_ran")} == \
            {k: want[k] for k in ("threshold", "gated", "open", "head_ran")}, name
    pixels = bundle["mask"]["pixels"]
    assert pixels > 0 and abs(app["mask"]["pixels"] - pixels) <= max(2, TOLERANCE * pixels)
    assert len(app["boxes"]) == len(bundle["boxes"]) > 0
    for got, want in zip(app["boxes"], bundle["boxes"]):
        assert got["label"] == want["label"] and abs(got["score"] - want["score"]) <= TOLERANCE
        np.testing.assert_allclose(got["box"], want["box"], atol=0.05)
        np.testing.assert_allclose(got["box_mm"], want["box_mm"], atol=0.01)


def test_dicom_seg_is_the_decision_mask_and_references_the_source(runs: dict) -> None:
    seg, source = runs["dicom"]["SEG"], pydicom.dcmread(SOURCE)
    assert seg.SOPClassUID == pydicom.uid.SegmentationStorage
    assert (seg.Rows, seg.Columns) == (source.Rows, source.Columns) == (1024, 1024)
    assert seg.StudyInstanceUID == source.StudyInstanceUID and seg.PatientID == source.PatientID
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == source.SeriesInstanceUID
    assert referenced.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert seg.SegmentSequence[0].SegmentLabel == "lesion"  # the policy's segmentation task
    pixels = seg.pixel_array
    assert pixels.shape == (1024, 1024) and set(np.unique(pixels)) <= {0, 1}
    assert int(pixels.sum()) == runs["app"]["mask"]["pixels"]
    differ = int(((pixels > 0) != runs["bundle_mask"]).sum())  # rows first, as the bundle's PNG
    assert differ <= max(2, TOLERANCE * runs["bundle"]["mask"]["pixels"])


def test_text_sr_summarises_the_record(runs: dict) -> None:
    sr, record = runs["dicom"]["SR"], runs["app"]
    text = sr.ContentSequence[0].TextValue
    positive = [name for name, f in record["findings"].items() if f["positive"]]
    assert f"Positive: {', '.join(positive)}" in text
    for name, finding in record["findings"].items():
        assert f"{name}: {finding['probability']:.3f} (threshold {finding['threshold']:.3f}," in text
    assert f"boxes: {len(record['boxes'])}" in text and f"{record['mask']['pixels']} pixels" in text
    assert sr.StudyInstanceUID == pydicom.dcmread(SOURCE).StudyInstanceUID
