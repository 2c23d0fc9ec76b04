"""The MONAI Deploy application (scripts/deploy/app.py) on a real SIIM CR DICOM, in its own environment."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
import torch.nn.functional as F

from bundle.data.readers import load_cxr

from .conftest import ROOT, SHARED

VENV_PYTHON = ROOT / ".venv-deploy" / "bin" / "python"
SOURCE = SHARED / "data" / "siim" / "dicom" / "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"


@pytest.fixture(scope="module")
def app_run(tmp_path_factory: pytest.TempPathFactory, random_export: dict[str, Path]) -> dict[str, Path]:
    if not VENV_PYTHON.is_file():
        pytest.skip("no .venv-deploy: run scripts/deploy/setup_venv.sh (as .ci/run does)")
    if not SOURCE.is_file():
        pytest.skip(f"real SIIM DICOM not found at {SOURCE}")
    work = tmp_path_factory.mktemp("deploy")
    shutil.copy(random_export["ts"], work / "model.ts")
    (work / "in").mkdir()
    shutil.copy(SOURCE, work / "in" / SOURCE.name)
    app = [str(VENV_PYTHON), "scripts/deploy/app.py", "-i", str(work / "in"), "-o", str(work / "out"), "-m", str(work / "model.ts")]
    result = subprocess.run(app, cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {"work": work, "out": work / "out"}


def _outputs(out: Path) -> dict[str, pydicom.Dataset]:
    found = {ds.Modality: ds for ds in (pydicom.dcmread(p) for p in out.glob("*.dcm"))}
    assert set(found) == {"SEG", "SR"}
    return found


def _expected(model_ts: Path) -> dict[str, torch.Tensor]:
    """The same model on the same file through the bundle's own reader, in this process."""
    model = torch.jit.load(str(model_ts), map_location="cpu").eval()
    image = F.interpolate(load_cxr(SOURCE).as_tensor()[None], size=(128, 128), mode="area")
    with torch.no_grad():
        return model.forward_gated(image, 0.5, 0.5)


def test_dicom_seg_references_the_source(app_run: dict[str, Path]) -> None:
    seg = _outputs(app_run["out"])["SEG"]
    source = pydicom.dcmread(SOURCE)
    assert seg.SOPClassUID == pydicom.uid.SegmentationStorage
    assert (seg.Rows, seg.Columns) == (source.Rows, source.Columns) == (1024, 1024)
    assert seg.StudyInstanceUID == source.StudyInstanceUID and seg.PatientID == source.PatientID
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == source.SeriesInstanceUID
    assert referenced.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == source.SOPInstanceUID
    assert seg.SegmentSequence[0].SegmentLabel == "lesion"
    pixels = seg.pixel_array
    assert pixels.shape == (1024, 1024) and set(np.unique(pixels)) <= {0, 1}


def test_findings_match_the_bundle_on_the_same_image(app_run: dict[str, Path]) -> None:
    findings = json.loads((app_run["out"] / "findings.json").read_text())
    expected = _expected(app_run["work"] / "model.ts")
    assert len(findings["findings"]) == 14
    got = torch.tensor(list(findings["findings"].values()))
    torch.testing.assert_close(got, torch.sigmoid(expected["cls"][0]), atol=2e-3, rtol=0)
    for gate, decision in (("det_gate", "det_gated_in"), ("seg_gate", "seg_gated_in")):
        assert findings["gates"][gate]["head_ran"] == bool(expected[decision][0])
        assert findings["gates"][gate]["threshold"] == 0.5
    seg = _outputs(app_run["out"])["SEG"]
    assert findings["lesion_pixels"] == int(seg.pixel_array.sum())


def test_text_sr_lists_every_finding(app_run: dict[str, Path]) -> None:
    sr = _outputs(app_run["out"])["SR"]
    text = sr.ContentSequence[0].TextValue
    findings = json.loads((app_run["out"] / "findings.json").read_text())["findings"]
    for name, probability in findings.items():
        assert f"{name}: {probability:.3f}" in text
    assert sr.StudyInstanceUID == pydicom.dcmread(SOURCE).StudyInstanceUID
