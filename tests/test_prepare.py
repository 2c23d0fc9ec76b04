"""Dataset readers on the real label files, patient splits, RLE, the prepare CLI and datalist validation."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bundle.data import DatalistError, NIH_FINDINGS, UNKNOWN_LABEL, check_datalist, sources
from bundle.data.rle import RLEError, rle_decode, rle_encode, rle_union
from bundle.data.splits import patients_per_split, split_by_patient, split_with_test_list

from .conftest import ROOT, SHARED

DATA = SHARED / "data"
NIH = DATA / "nih1000"
SIIM = DATA / "siim"
COVID = DATA / "covid"
SIIM_DICOM = SIIM / "dicom" / "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
pytestmark = pytest.mark.skipif(not DATA.is_dir(), reason=f"real samples not found at {DATA}")


def _prepare(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "prepare.py"), *args], env=env, capture_output=True, text=True,
        timeout=300,
    )


def _csv_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


# --- RLE -------------------------------------------------------------------------------------------------------


def test_rle_is_column_major_relative_runs() -> None:
    mask = rle_decode("1 2 3 1", (3, 3))  # pixel p is (x = p // 3, y = p % 3); runs: pixels 1-2, then 3 + 3 = 6
    np.testing.assert_array_equal(mask, [[0, 1, 1], [0, 0, 0], [1, 0, 0]])
    assert rle_encode(mask) == "1 2 3 1"


def test_rle_round_trips_every_real_siim_encoding() -> None:
    positives = [r for r in _csv_rows(SIIM / "train-rle.csv") if r[" EncodedPixels"].strip() != "-1"]
    assert len(positives) > 100
    for row in positives:
        mask = rle_decode(row[" EncodedPixels"], (1024, 1024))
        assert mask.any()
        assert rle_encode(mask) == row[" EncodedPixels"].strip()


def test_rle_errors_and_negative() -> None:
    assert not rle_decode(" -1", (4, 4)).any() and rle_encode(np.zeros((4, 4))) == "-1"
    for bad, problem in (("1 2 3", "odd"), ("1 x", "non-integer"), ("10 10", "beyond")):
        with pytest.raises(RLEError, match=problem):
            rle_decode(bad, (4, 4))


# --- SIIM ------------------------------------------------------------------------------------------------------


def test_siim_reader_handles_header_space_negatives_and_union(tmp_path: Path) -> None:
    masks = sources.read_siim_rle(SIIM / "train-rle_full.csv.gz")
    raw = _csv_rows(SIIM / "train-rle.csv")
    assert list(raw[0]) == ["ImageId", " EncodedPixels"]  # the official header's leading space
    multi = [image for image, rles in masks.items() if len(rles) > 1]
    assert len(masks) == 12047 and len(multi) == 624
    union = rle_union(masks[multi[0]], (1024, 1024))
    assert union.sum() >= max(rle_decode(r, (1024, 1024)).sum() for r in masks[multi[0]])
    quirky = tmp_path / "quirky.csv"
    quirky.write_text("ImageId, EncodedPixels\na, -1\nb,1 2\nb, 5 1\nc,-1\n")
    assert sources.read_siim_rle(quirky) == {"a": [], "b": ["1 2", "5 1"], "c": []}
    quirky.write_text("ImageId, EncodedPixels\na,1 2 3\n")
    with pytest.raises(sources.SourceError, match=r"line 2 \(a\): RLE has an odd number"):
        sources.read_siim_rle(quirky)


def test_siim_entry_from_real_dicom() -> None:
    result = sources.siim(SIIM / "train-rle.csv", SIIM / "dicom", on_missing="skip")
    (entry,) = result.entries
    assert entry["patient_id"] == "16d7f894-55d7-4d95-8957-d18987f0e981"  # from the DICOM header
    assert entry["mask_rle"] == [] and entry["cls"][NIH_FINDINGS.index("Pneumothorax")] == 0
    assert sum(v == UNKNOWN_LABEL for v in entry["cls"]) == len(NIH_FINDINGS) - 1
    assert len(result.skipped) == 398
    with pytest.raises(sources.SourceError, match=r"398 image\(s\) not found"):
        sources.siim(SIIM / "train-rle.csv", SIIM / "dicom")


# --- NIH and RSNA ----------------------------------------------------------------------------------------------


def test_nih_labels_views_and_boxes() -> None:
    result = sources.nih(NIH / "Data_Entry_2017.csv", NIH / "images", bbox_list=NIH / "BBox_List_2017.csv")
    rows = {r["Image Index"]: r for r in _csv_rows(NIH / "Data_Entry_2017.csv")}
    by_name = {Path(e["image"]).name: e for e in result.entries}
    assert len(by_name) == sum(r["View Position"] in ("PA", "AP") for r in rows.values())
    assert by_name["00000001_001.png"]["cls"] == [int(f in ("Cardiomegaly", "Emphysema")) for f in NIH_FINDINGS]
    no_finding = next(n for n, r in rows.items() if r["Finding Labels"] == "No Finding")
    assert by_name[no_finding]["cls"] == [0] * 14
    assert by_name[no_finding]["patient_id"] == rows[no_finding]["Patient ID"]
    box = _csv_rows(NIH / "BBox_List_2017.csv")[0]
    x, y, w, h = (float(v) for v in list(box.values())[2:6])
    entry = by_name[box["Image Index"]]
    np.testing.assert_allclose(entry["boxes"][0], np.array([x, y, x + w, y + h]) * 64 / 1024, atol=1e-3)
    assert entry["box_labels"][0] == box["Finding Label"]
    assert len(sources.nih(NIH / "Data_Entry_2017.csv", NIH / "images", views=["PA"]).entries) < len(by_name)


def test_nih_with_rsna_boxes_through_patient_map() -> None:
    result = sources.nih(
        NIH / "Data_Entry_2017.csv", NIH / "images", rsna_labels=NIH / "rsna" / "stage_2_train_labels.csv",
        rsna_map=NIH / "rsna" / "patient_to_nih.csv",
    )
    to_nih = {r["patientId"]: r["Image Index"] for r in _csv_rows(NIH / "rsna" / "patient_to_nih.csv")}
    by_name = {Path(e["image"]).name: e for e in result.entries}
    rsna = _csv_rows(NIH / "rsna" / "stage_2_train_labels.csv")
    positive = next(r for r in rsna if r["Target"] == "1")
    entry = by_name[to_nih[positive["patientId"]]]
    x, y, w, h = (float(positive[k]) for k in ("x", "y", "width", "height"))
    assert [x / 16, y / 16, (x + w) / 16, (y + h) / 16] in [pytest.approx(b, abs=1e-3) for b in entry["boxes"]]
    negative = next(r for r in rsna if r["Target"] == "0")
    assert by_name[to_nih[negative["patientId"]]]["boxes"] == []  # annotated negative, not "unannotated"
    annotated = sum("boxes" in e for e in result.entries)
    assert annotated == len({to_nih[r["patientId"]] for r in rsna} & set(by_name))
    assert all(label == "opacity" for e in result.entries for label in e.get("box_labels", []))


def test_rsna_reader_rejects_bad_rows(tmp_path: Path) -> None:
    bad = tmp_path / "labels.csv"
    bad.write_text("patientId,x,y,width,height,Target\na,1,2,nan,4,1\n")
    with pytest.raises(sources.SourceError, match=r"line 2: width is 'nan'"):
        sources.read_rsna_boxes(bad)
    bad.write_text("patientId,x,y,width,height,Target\na,1,2,3,4,1\na,,,,,0\n")
    with pytest.raises(sources.SourceError, match="line 3: patient a has Target 0 and boxes"):
        sources.read_rsna_boxes(bad)


def test_rsna_reader_on_real_labels_and_dicom(tmp_path: Path) -> None:
    boxes = sources.read_rsna_boxes(NIH / "rsna" / "stage_2_train_labels.csv")
    assert sum(len(b) for b in boxes.values()) == 70 and sum(not b for b in boxes.values()) == 150
    pid = next(p for p, b in boxes.items() if len(b) > 1)
    (tmp_path / "dcm").mkdir()
    (tmp_path / "dcm" / f"{pid}.dcm").write_bytes(SIIM_DICOM.read_bytes())  # a real 1024 x 1024 CR DICOM
    lines = (NIH / "rsna" / "stage_2_train_labels.csv").read_text().splitlines(keepends=True)
    labels = tmp_path / "labels.csv"
    labels.write_text(lines[0] + "".join(line for line in lines if line.startswith(pid)))
    (entry,) = sources.rsna(labels, tmp_path / "dcm").entries
    assert entry["boxes"] == boxes[pid] and entry["patient_id"] == "16d7f894-55d7-4d95-8957-d18987f0e981"


def test_full_label_files_take_seconds() -> None:
    start = time.perf_counter()
    nih = sources.nih(NIH / "Data_Entry_2017_v2020_full.csv.gz", NIH / "images", on_missing="ignore")
    siim = sources.siim(SIIM / "train-rle_full.csv.gz", SIIM / "dicom", on_missing="ignore")
    assert len(nih.entries) == 112120 and len(siim.entries) == 12047
    assert time.perf_counter() - start < 20


# --- splits ----------------------------------------------------------------------------------------------------


def test_no_patient_crosses_splits_on_full_nih() -> None:
    entries = sources.nih(NIH / "Data_Entry_2017_v2020_full.csv.gz", NIH / "images", on_missing="ignore").entries
    splits = split_by_patient(entries, (0.7, 0.1, 0.2), seed=3)
    patients = patients_per_split(splits)
    assert not (patients["training"] & patients["validation"] or patients["training"] & patients["testing"]
                or patients["validation"] & patients["testing"])
    assert sum(len(v) for v in splits.values()) == len(entries)
    total = sum(len(p) for p in patients.values())
    assert abs(len(patients["testing"]) / total - 0.2) < 0.002
    again = split_by_patient(entries, (0.7, 0.1, 0.2), seed=3)
    assert all(a["image"] == b["image"] for a, b in zip(again["testing"], splits["testing"]))
    other = split_by_patient(entries, (0.7, 0.1, 0.2), seed=4)
    assert patients_per_split(other)["testing"] != patients["testing"]


def test_official_test_list_split_refuses_shared_patients() -> None:
    entries = [{"image": f"/x/{p}_{i}.png", "patient_id": p} for p in "abcdef" for i in range(3)]
    splits = split_with_test_list(entries, ["a_0.png", "a_1.png", "a_2.png"], val_fraction=0.2)
    assert {e["patient_id"] for e in splits["testing"]} == {"a"} and len(splits["training"]) == 12
    with pytest.raises(ValueError, match="1 patients have images in and out of the test list"):
        split_with_test_list(entries, ["a_0.png"])


# --- COVID and folder ------------------------------------------------------------------------------------------


def test_covid_views_findings_and_masks() -> None:
    result = sources.covid(COVID / "metadata.csv", masks_dir=COVID / "lung_masks")
    rows = _csv_rows(COVID / "metadata.csv")
    assert len(result.entries) == sum(r["modality"] == "X-ray" and r["view"].split()[0] in ("PA", "AP") for r in rows)
    assert any(r["view"] == "AP Supine" for r in rows)
    masks = [e for e in result.entries if "mask" in e]
    assert len(masks) == len(list((COVID / "lung_masks").glob("*.png")))
    for entry in masks[:5]:
        assert Image.open(entry["mask"]).size == Image.open(entry["image"]).size
    pneumonia = NIH_FINDINGS.index("Pneumonia")
    by_finding = {e["finding"]: e["cls"][pneumonia] for e in result.entries}
    assert by_finding == {"COVID-19": 1, "No Finding": 0, "Pneumocystis": 1, "ARDS": 1}
    pa = sum(r["modality"] == "X-ray" and r["view"].split()[0] == "PA" for r in rows)
    assert 0 < len(sources.covid(COVID / "metadata.csv", views=["PA"]).entries) == pa < len(result.entries)


def test_folder_matches_masks_by_stem() -> None:
    result = sources.folder(COVID / "images", COVID / "lung_masks", patient_pattern=r"^(.{4})")
    images, masks = ({p.stem for p in (COVID / name).iterdir()} for name in ("images", "lung_masks"))
    assert len(result.entries) == len(images) and sum("mask" in e for e in result.entries) == len(images & masks) > 0
    assert all(Path(e["mask"]).stem == Path(e["image"]).stem for e in result.entries if "mask" in e)
    assert all(len(e["patient_id"]) == 4 for e in result.entries)


# --- CLI and validation ----------------------------------------------------------------------------------------


def test_prepare_nih_cli_writes_a_relative_datalist(tmp_path: Path) -> None:
    out = tmp_path / "lists" / "nih.json"
    result = _prepare(
        "nih", "--data_entry", str(NIH / "Data_Entry_2017.csv"), "--images_dir", str(NIH / "images"),
        "--bbox_list", str(NIH / "BBox_List_2017.csv"), "--rsna_labels", str(NIH / "rsna" / "stage_2_train_labels.csv"),
        "--rsna_map", str(NIH / "rsna" / "patient_to_nih.csv"), "--merge_box_classes", "opacity",
        "--fractions", "0.6,0.2,0.2", "--seed", "1", "--output", str(out),
    )
    assert result.returncode == 0, result.stderr[-2000:]
    content = json.loads(out.read_text())
    assert content["box_classes"] == ["opacity"]
    entries = [e for key in ("training", "validation", "testing") for e in content[key]]
    rows = _csv_rows(NIH / "Data_Entry_2017.csv")
    assert len(entries) == sum(r["View Position"] in ("PA", "AP") for r in rows)
    assert all(not Path(e["image"]).is_absolute() and (out.parent / e["image"]).is_file() for e in entries)
    assert all(set(e.get("box_labels", [])) <= {0} for e in entries)
    assert "training:" in result.stdout and "positives:" in result.stdout and "opacity" in result.stdout


def _nih_images(count: int) -> list[str]:
    """The first ``count`` real NIH sample images, each of another patient."""
    by_patient = {path.name[:8]: str(path) for path in sorted((NIH / "images").glob("*.png"), reverse=True)}
    return [by_patient[patient] for patient in sorted(by_patient)[:count]]


def _bad_datalist(tmp_path: Path) -> Path:
    images = _nih_images(8)
    truncated = tmp_path / "truncated.png"
    truncated.write_bytes(Path(images[0]).read_bytes()[:300])
    small_mask = tmp_path / "mask.png"
    Image.fromarray(np.zeros((32, 32), dtype=np.uint8)).save(small_mask)
    good = {"image": images[0], "patient_id": "1", "cls": [0] * 14, "boxes": [[1, 2, 30, 40]], "box_labels": [0]}
    entries = [
        good,
        {"image": str(tmp_path / "absent.png"), "patient_id": "2"},
        {"image": str(truncated), "patient_id": "3"},
        {"image": images[3], "patient_id": "4", "mask": str(small_mask)},
        {"image": images[4], "patient_id": "5", "boxes": [[10, 10, 80, 20]], "box_labels": [0]},
        {"image": images[5], "patient_id": "6", "cls": [float("nan")] + [0] * 13},
        {"image": images[6], "patient_id": "7", "cls": "Effusion", "boxes": [[1, 2, 3]]},
    ]
    validation = {"image": images[7], "patient_id": "8", "cls": [0] * 14}
    path = tmp_path / "bad.json"
    path.write_text(json.dumps({"training": entries, "validation": [validation]}))
    return path


EXPECTED_PROBLEMS = [
    "training[1] {tmp}/absent.png: entry (patient 2) 'image': {tmp}/absent.png: file not found",
    "training[2] {tmp}/truncated.png: entry (patient 3) 'image': {tmp}/truncated.png: cannot decode the PNG image",
    "training[3] {images[3]}: {images[3]}: mask size (32, 32) differs from image size (64, 64)",
    "training[4] {images[4]}: {images[4]}: box 0 [10, 10, 80, 20] is empty or outside the 64x64 image",
    "training[5] {images[5]}: {images[5]}: 'cls' has NaN at positions [0]",
    "training[6] {images[6]}: {images[6]}: 'cls' must be a list of numbers, got 'Effusion'",
    "training[6] {images[6]}: {images[6]}: 'boxes' must be [[x1, y1, x2, y2], ...]",
]


def test_validate_reports_every_problem_with_entry_and_file(tmp_path: Path) -> None:
    datalist = _bad_datalist(tmp_path)
    result = _prepare("validate", str(datalist))
    assert result.returncode == 1
    assert "checked 8 entries" in result.stdout and "7 problem(s)" in result.stdout
    lines = result.stdout.splitlines()
    for expected in EXPECTED_PROBLEMS:
        text = expected.format(tmp=tmp_path, images=_nih_images(8))
        assert any(line.startswith(text) for line in lines), (text, result.stdout)


def test_check_datalist_fails_at_start_or_skips_with_report(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    datalist = _bad_datalist(tmp_path)
    with pytest.raises(DatalistError, match=r"6 of 7 'training' entries are bad") as err:
        check_datalist(datalist, "training")
    assert str(err.value).count("training[") == 7
    kept = check_datalist(datalist, "training", on_error="skip")
    assert [e["patient_id"] for e in kept] == ["1"]
    assert "6 of 7 'training' entries are bad" in caplog.text and "absent.png: file not found" in caplog.text
    assert len(check_datalist(datalist, "validation")) == 1
