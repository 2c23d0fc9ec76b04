"""The prediction record against docs/schemas/prediction.schema.json, and DICOM input warnings."""

from __future__ import annotations

import copy
import re
import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
import torch.nn.functional as F
from jsonschema import Draft202012Validator
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from bundle.decisions import (
    SCHEMA_PATH,
    SCHEMA_VERSION,
    DecisionPolicy,
    OperatingPoint,
    decide,
    dicom_warnings,
    prediction_record,
    validate_record,
)

SIIM = Path(__file__).resolve().parents[2] / "shared" / "data" / "siim" / "dicom"
SEG = np.full((1, 32, 32), -4.0)  # not -5: no pixel exactly at 0.5 after resizing
SEG[0, 8:20, 8:20] = 5.0


def full_record() -> dict:
    """A record with every part filled: findings, gates, a mask, boxes in px and mm, files and warnings."""
    policy = DecisionPolicy.default(["Effusion", "Mass"], (32, 32)).override(gates={"det_gate": 0.2})
    heads = {
        "cls": np.array([0.3, -2.0]), "det_gate": np.array([0.5]), "seg_gate": np.array([1.0]), "seg": SEG,
        "boxes": np.array([[4.0, 6.0, 12.0, 20.0]]), "scores": np.array([0.77]), "labels": np.array([0]),
    }
    decision = decide(heads, policy, (128, 96))
    return prediction_record(
        decision, "case.dcm", "0.2.0", model_hash="0" * 64, spacing=((0.168, 0.2), "PixelSpacing"),
        warnings=[{"code": "lateral_view", "message": "case.dcm: ViewPosition LL is a lateral view"}],
        files={"mask": "case_mask.png", "overlay": "case_overlay.png", "nifti": "case_mask.nii.gz"},
    )


def test_schema_is_a_valid_2020_12_schema() -> None:
    schema = json.loads(SCHEMA_PATH.read_text())
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["properties"]["schema_version"]["const"] == SCHEMA_VERSION


def test_schema_full_record_validates_and_has_mm() -> None:
    record = full_record()
    validate_record(record)
    validate_record(json.loads(json.dumps(record)))  # and after a trip through JSON
    box = record["boxes"][0]
    assert box["box"] == [16.0, 18.0, 48.0, 60.0]  # 4x along x, 3x along y
    assert box["box_mm"] == pytest.approx([2.688, 3.6, 8.064, 12.0]) and box["size_mm"] == pytest.approx([5.376, 8.4])
    seg = torch.sigmoid(torch.from_numpy(SEG)[None].double())
    pixels = int((F.interpolate(seg, size=(128, 96), mode="bilinear") > 0.5).sum())  # the writer's old way
    assert record["mask"]["pixels"] == pixels and abs(pixels - 48 * 36) < 10  # 12 x 12 px at 4x / 3x, corners rounded
    assert record["mask"]["area_mm2"] == pytest.approx(pixels * 0.168 * 0.2, abs=1e-3)
    assert record["operating_points"]["gates"]["det_gate"]["rule"] == "override"
    assert record["findings"]["Effusion"]["positive"] and not record["findings"]["Mass"]["positive"]


def test_schema_record_without_spacing_or_heads_validates() -> None:
    decision = decide({"cls": np.zeros(1)}, DecisionPolicy.default(["a"], (32, 32)), (50, 40))
    record = prediction_record(decision, "x.png", "0.2.0")
    validate_record(record)
    assert record["spacing"] is None and record["mask"] is None and record["files"] == {"mask": None, "overlay": None}


def _set(record: dict, path: str, value: object) -> None:
    *parents, last = path.split("/")
    for key in parents:
        record = record[int(key)] if isinstance(record, list) else record[key]
    if value is KeyError:
        del record[last]
    else:
        record[last] = value


@pytest.mark.parametrize(
    ("path", "value", "where"),
    [
        ("findings", KeyError, "(record)"),
        ("findings/Mass/probability", 1.5, "findings/Mass/probability"),
        ("schema_version", "0.9", "schema_version"),
        ("model/sha256", "not-a-hash", "model/sha256"),
        ("warnings/0/message", KeyError, "warnings/0"),
        ("warnings/0/code", "Lateral View", "warnings/0/code"),
        ("boxes/0/box", [1, 2, 3], "boxes/0/box"),
        ("operating_points/box_score/reason", None, "operating_points/box_score/reason"),  # a fallback says why
        ("operating_points/findings/Mass/chosen_on", "31/01/2025", "operating_points/findings/Mass/chosen_on"),
        ("gates/seg_gate/head_ran", None, "gates/seg_gate/head_ran"),
        ("policy/tasks/seg", "organ", "policy/tasks/seg"),
        ("extra", 1, "(record)"),
    ],
)
def test_schema_broken_record_does_not_validate(path: str, value: object, where: str) -> None:
    record = copy.deepcopy(full_record())
    _set(record, path, value)
    with pytest.raises(ValueError, match=re.escape(f"at {where}:")):
        validate_record(record)


def radiograph(**attributes: str) -> pydicom.Dataset:
    """A header-only CR chest radiograph dataset with ``attributes`` set (empty string: removed)."""
    ds = pydicom.Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.Modality, ds.ViewPosition, ds.BodyPartExamined, ds.PhotometricInterpretation = "CR", "PA", "CHEST", "MONOCHROME2"
    for key, value in attributes.items():
        if value:
            setattr(ds, key, value)
        else:
            delattr(ds, key)
    return ds


def test_schema_dicom_warnings_of_each_attribute(tmp_path: Path) -> None:
    assert dicom_warnings(radiograph()) == []
    assert dicom_warnings(radiograph(Modality="", ViewPosition="", BodyPartExamined="")) == []  # absent: no warning
    cases = {
        "lateral_view": radiograph(ViewPosition="LL"),
        "unexpected_modality": radiograph(Modality="MR"),
        "unexpected_body_part": radiograph(BodyPartExamined="KNEE"),
        "inverted_photometric_corrected": radiograph(PhotometricInterpretation="MONOCHROME1"),
    }
    for code, ds in cases.items():
        assert [w["code"] for w in dicom_warnings(ds)] == [code]
    path = tmp_path / "lateral_mr.dcm"
    radiograph(ViewPosition="RL", Modality="MR", BodyPartExamined="KNEE").save_as(path, enforce_file_format=True)
    found = dicom_warnings(path)
    assert [w["code"] for w in found] == ["lateral_view", "unexpected_modality", "unexpected_body_part"]
    assert all(str(path) in w["message"] for w in found)


def test_schema_dicom_warnings_reject_a_non_dicom_file(tmp_path: Path) -> None:
    png = tmp_path / "image.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    with pytest.raises(ValueError, match="image.png: not a DICOM file"):
        dicom_warnings(png)


@pytest.mark.skipif(not SIIM.is_dir(), reason="shared SIIM DICOMs not present (../shared/data/siim/dicom)")
def test_schema_dicom_warnings_on_the_real_siim_files() -> None:
    original = next(p for p in SIIM.glob("*.dcm") if "monochrome1" not in p.name)
    assert dicom_warnings(original) == []  # CR, PA, CHEST, MONOCHROME2
    inverted = dicom_warnings(SIIM / "monochrome1_variant.dcm")
    assert [w["code"] for w in inverted] == ["inverted_photometric_corrected"]
    decision = decide({"cls": np.zeros(1)}, DecisionPolicy.default(["a"], (32, 32)), (1024, 1024))
    validate_record(prediction_record(decision, str(original), "0.2.0", warnings=inverted))


def test_schema_fallback_is_visible_in_the_record() -> None:
    chosen = OperatingPoint(0.5, "youden", n_pos=1, n_neg=40, fallback=True, reason="1 positives; needs 10")
    policy = DecisionPolicy.default(["a"], (32, 32)).override(gates={"seg_gate": 0.3})
    policy = DecisionPolicy.from_dict({**policy.to_dict(), "gates": {**policy.to_dict()["gates"],
                                                                     "det_gate": chosen.to_dict()}})
    record = prediction_record(decide({"cls": np.zeros(1)}, policy, (32, 32)), "x.png", "0.2.0")
    validate_record(record)
    assert record["operating_points"]["gates"]["det_gate"]["fallback"] is True
    assert record["operating_points"]["gates"]["det_gate"]["n_pos"] == 1
