"""Outputs people open: mask volumes, Slicer markups, DICOM SEG and the error report, checked against ITK/pydicom."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import itk
import jsonschema
import nibabel as nib
import nrrd
import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.uid import SegmentationStorage, generate_uid

from bundle.decisions import DecisionPolicy, box_in_mm, validate_record
from bundle.handlers import PredictionWriter
from bundle.networks import MultiCheXNet
from bundle.outputs import (
    ErrorReport,
    measurement_spacing,
    read_geometry,
    roi_markups,
    write_dicom_seg,
    write_nifti,
    write_nrrd,
)
from bundle.outputs.geometry import LPS_TO_RAS

from .conftest import ROOT, SHARED
from .images import write_dicom

DATA = SHARED / "data"
SIIM = sorted((DATA / "siim" / "dicom").glob("*.dcm"))
NIH_PNG = DATA / "nih_fullres" / "00000001_000.png"
COVID_JPEG = DATA / "covid" / "images" / "00870a9c.jpg"
SCHEMA = SHARED / "schemas" / "slicer-markups-schema-v1.0.3.json"


def _source(kind: str, folder: Path) -> Path:
    """A source image of ``kind``: synthetic ones (always available, width != height) or real shared files."""
    if kind == "png":  # noise, so that a truncated copy misses image data
        path = folder / "synthetic.png"
        Image.fromarray(np.random.default_rng(0).integers(0, 256, (30, 40), dtype=np.uint8)).save(path)
        return path
    if kind == "jpeg_with_density":  # ITK turns a JFIF density into spacing: the outputs must follow ITK
        path = folder / "synthetic.jpg"
        Image.fromarray((np.arange(30 * 40) % 256).astype(np.uint8).reshape(30, 40)).save(path, dpi=(254, 127))
        return path
    if kind == "dicom_oblique":  # anisotropic spacing, a position and a non-identity orientation
        return write_dicom(
            folder / "oblique.dcm", 40, 30, PixelSpacing=[0.2, 0.1], ImagePositionPatient=[10.0, -20.0, 30.0],
            ImageOrientationPatient=[0.0, 1.0, 0.0, 0.0, 0.0, -1.0],
        )
    real = {"siim_dicom": SIIM[0] if SIIM else None, "nih_png": NIH_PNG, "covid_jpeg": COVID_JPEG}[kind]
    if real is None or not real.is_file():
        pytest.skip(f"real sample for {kind} not found under {DATA}")
    return real


SOURCES = ["png", "jpeg_with_density", "dicom_oblique", "siim_dicom", "nih_png", "covid_jpeg"]


def _asymmetric_mask(size: tuple[int, int]) -> np.ndarray:
    """An L shape near the origin and one pixel near the far corner, indexed [x, y]: any flip or transpose shows."""
    mask = np.zeros(size, dtype=bool)
    mask[2:6, 3] = True
    mask[2, 3:9] = True
    mask[size[0] - 2, size[1] - 3] = True
    return mask


def _point3(image: itk.Image, index: tuple[int, int]) -> np.ndarray:
    """The LPS point of pixel (i, j) of ``image`` (a 2D image lies in the z = 0 plane)."""
    ij = [int(c) for c in index]
    if image.GetImageDimension() == 2:
        return np.array([*image.TransformIndexToPhysicalPoint(ij), 0.0])
    return np.array(image.TransformIndexToPhysicalPoint([*ij, 0]))


def _continuous_index(image: itk.Image, point: np.ndarray) -> np.ndarray:
    """The continuous (i, j) index of an LPS point in ``image``; the point must lie in the image plane."""
    if image.GetImageDimension() == 2:
        assert point[2] == pytest.approx(0.0, abs=1e-6)
        return np.array(image.TransformPhysicalPointToContinuousIndex([float(p) for p in point[:2]]))
    index = np.array(image.TransformPhysicalPointToContinuousIndex([float(p) for p in point]))
    assert index[2] == pytest.approx(0.0, abs=1e-6)
    return index[:2]


def _itk_geometry_3d(image: itk.Image) -> tuple[np.ndarray, ...]:
    """(size, spacing, origin, direction) of an ITK image as a single-slice volume."""
    dims = image.GetImageDimension()
    size, spacing, origin, direction = np.ones(3), np.ones(3), np.zeros(3), np.eye(3)
    size[:dims] = list(itk.size(image))
    spacing[:dims] = list(itk.spacing(image))
    origin[:dims] = list(itk.origin(image))
    direction[:dims, :dims] = itk.array_from_matrix(image.GetDirection())
    return size, spacing, origin, direction


@pytest.mark.parametrize("kind", SOURCES)
def test_geometry_is_itks(kind: str, tmp_path: Path) -> None:
    source = _source(kind, tmp_path)
    geometry = read_geometry(source)
    size, spacing, origin, direction = _itk_geometry_3d(itk.imread(str(source)))
    assert geometry.size == tuple(size[:2]) and size[2] == 1
    np.testing.assert_allclose(geometry.spacing, spacing)
    np.testing.assert_allclose(geometry.origin, origin)
    np.testing.assert_allclose(geometry.matrix, direction, atol=1e-12)


@pytest.mark.parametrize("fmt", ["nifti", "nrrd"])
@pytest.mark.parametrize("kind", SOURCES)
def test_mask_volume_overlays_source(kind: str, fmt: str, tmp_path: Path) -> None:
    """Same size, spacing, origin, direction as ITK's source; each mask pixel at the source pixel's point."""
    source = _source(kind, tmp_path)
    geometry = read_geometry(source)
    mask = _asymmetric_mask(geometry.size)
    path = tmp_path / ("mask.nii.gz" if fmt == "nifti" else "mask.nrrd")
    (write_nifti if fmt == "nifti" else write_nrrd)(mask, geometry, path)

    src, written = itk.imread(str(source)), itk.imread(str(path))
    for got, expected in zip(_itk_geometry_3d(written), _itk_geometry_3d(src)):
        np.testing.assert_allclose(got, expected, atol=1e-6)
    np.testing.assert_array_equal(itk.array_from_image(written)[0].T, mask)  # ITK arrays are [k, j, i]
    for x, y in zip(*np.nonzero(mask)):
        index = written.TransformPhysicalPointToIndex([float(c) for c in _point3(src, (x, y))])
        assert tuple(index) == (x, y, 0) and written.GetPixel(index) == 1

    if fmt == "nifti":  # RAS affine = LPS geometry with x and y negated
        image = nib.load(path)
        np.testing.assert_allclose(image.affine, LPS_TO_RAS @ geometry.affine_lps, atol=1e-6)
        assert int(image.header["qform_code"]) == int(image.header["sform_code"]) == 1
        np.testing.assert_array_equal(np.asarray(image.dataobj)[:, :, 0], mask)
    else:
        data, header = nrrd.read(str(path))
        assert header["space"] == "left-posterior-superior"
        np.testing.assert_allclose(header["space origin"], geometry.origin)
        np.testing.assert_allclose(header["space directions"], geometry.affine_lps[:3, :3].T, atol=1e-9)
        np.testing.assert_array_equal(data[:, :, 0], mask)


@pytest.mark.parametrize("kind", SOURCES)
def test_markups_rois_map_back_to_pixel_boxes(kind: str, tmp_path: Path) -> None:
    """ROI centre and corners, taken back through ITK's source geometry, are the pixel box (edges at i, i+1)."""
    source = _source(kind, tmp_path)
    geometry = read_geometry(source)
    width, height = geometry.size
    boxes = [
        {"box": [3.0, 5.0, 20.0, 12.5], "score": 0.9, "label": "opacity"},
        {"box": [0.0, 0.0, float(width), float(height)], "score": 0.2, "label": "opacity"},
    ]
    document = roi_markups(boxes, geometry)
    src = itk.imread(str(source))
    assert [m["name"] for m in document["markups"]] == ["opacity 1", "opacity 2"]
    for roi, box in zip(document["markups"], boxes):
        assert roi["type"] == "ROI" and roi["coordinateSystem"] == "LPS" and roi["roiType"] == "Box"
        centre, size = np.array(roi["center"]), np.array(roi["size"])
        axes = np.array(roi["orientation"]).reshape(3, 3)  # columns: ROI axes in LPS
        np.testing.assert_allclose(axes.T @ axes, np.eye(3), atol=1e-9)
        assert np.linalg.det(axes) == pytest.approx(1.0)
        assert roi["controlPoints"][0]["position"] == roi["center"]
        x1, y1, x2, y2 = box["box"]
        np.testing.assert_allclose(_continuous_index(src, centre) + 0.5, [(x1 + x2) / 2, (y1 + y2) / 2], atol=1e-3)
        for sign, corner in ((-1, (x1, y1)), (1, (x2, y2))):
            point = centre + sign * axes[:, :2] @ (size[:2] / 2)
            np.testing.assert_allclose(_continuous_index(src, point) + 0.5, corner, atol=1e-3)


def test_markups_validate_against_slicer_schema(tmp_path: Path) -> None:
    if not SCHEMA.is_file():
        pytest.skip(f"3D Slicer markups schema not found at {SCHEMA}")
    geometry = read_geometry(_source("dicom_oblique", tmp_path))
    document = roi_markups([{"box": [1.0, 2.0, 10.0, 8.0], "score": 0.5, "label": "opacity"}], geometry)
    jsonschema.validate(document, json.loads(SCHEMA.read_text()))
    assert document["@schema"].endswith("markups-schema-v1.0.3.json#")


def _check_seg(seg_path: Path, source: Path, mask: np.ndarray) -> pydicom.Dataset:
    """The SEG references ``source``, has its Rows/Columns and PixelSpacing, one segment, and the mask's pixels."""
    seg, src = pydicom.dcmread(seg_path), pydicom.dcmread(source, stop_before_pixels=True)
    assert seg.SOPClassUID == SegmentationStorage and seg.Modality == "SEG" and seg.SegmentationType == "BINARY"
    assert (seg.Rows, seg.Columns, int(seg.NumberOfFrames)) == (src.Rows, src.Columns, 1)
    assert seg.StudyInstanceUID == src.StudyInstanceUID and seg.PatientID == src.PatientID
    referenced = seg.ReferencedSeriesSequence[0]
    assert referenced.SeriesInstanceUID == src.SeriesInstanceUID
    assert referenced.ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == src.SOPInstanceUID
    frame = seg.PerFrameFunctionalGroupsSequence[0]
    derived = frame.DerivationImageSequence[0].SourceImageSequence[0]
    assert derived.ReferencedSOPInstanceUID == src.SOPInstanceUID and derived.SpatialLocationsPreserved == "YES"
    pixel_measures = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0]
    assert [float(v) for v in pixel_measures.PixelSpacing] == [float(v) for v in src.PixelSpacing]
    assert len(seg.SegmentSequence) == 1 and seg.SegmentSequence[0].SegmentLabel == "lesion"
    np.testing.assert_array_equal(seg.pixel_array, mask.T)  # (rows, columns)
    return seg


@pytest.mark.parametrize("index", [0, 1])
def test_dicom_seg_of_real_radiograph(index: int, tmp_path: Path) -> None:
    """Real SIIM CR exports (MONOCHROME2 / MONOCHROME1, no position/orientation/frame of reference)."""
    if len(SIIM) <= index:
        pytest.skip(f"SIIM DICOM samples not found under {DATA / 'siim' / 'dicom'}")
    source = SIIM[index]
    src = pydicom.dcmread(source, stop_before_pixels=True)
    assert "ImagePositionPatient" not in src and "FrameOfReferenceUID" not in src
    mask = _asymmetric_mask((int(src.Columns), int(src.Rows)))
    write_dicom_seg(mask, source, tmp_path / "seg.dcm")
    seg = _check_seg(tmp_path / "seg.dcm", source, mask)
    assert "FrameOfReferenceUID" not in seg and "PlanePositionSequence" not in seg.PerFrameFunctionalGroupsSequence[0]


def test_dicom_seg_of_positioned_image_keeps_plane(tmp_path: Path) -> None:
    source = write_dicom(
        tmp_path / "positioned.dcm", 40, 30, PixelSpacing=[0.2, 0.1], SliceThickness=1.0,
        ImagePositionPatient=[10.0, -20.0, 30.0], ImageOrientationPatient=[0.0, 1.0, 0.0, 0.0, 0.0, -1.0],
        FrameOfReferenceUID=generate_uid(),
    )
    mask = _asymmetric_mask((40, 30))
    write_dicom_seg(mask, source, tmp_path / "seg.dcm")
    seg = _check_seg(tmp_path / "seg.dcm", source, mask)
    src = pydicom.dcmread(source)
    assert seg.FrameOfReferenceUID == src.FrameOfReferenceUID
    position = seg.PerFrameFunctionalGroupsSequence[0].PlanePositionSequence[0].ImagePositionPatient
    orientation = seg.SharedFunctionalGroupsSequence[0].PlaneOrientationSequence[0].ImageOrientationPatient
    assert [float(v) for v in position] == [10.0, -20.0, 30.0]
    assert [float(v) for v in orientation] == [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]


def test_box_millimetres_from_dicom_pixel_spacing(tmp_path: Path) -> None:
    calibrated = write_dicom(tmp_path / "a.dcm", 40, 30, PixelSpacing=[0.2, 0.1], ImagerPixelSpacing=[0.3, 0.15])
    detector = write_dicom(tmp_path / "b.dcm", 40, 30, ImagerPixelSpacing=[0.3, 0.15])
    assert measurement_spacing(calibrated) == ((0.1, 0.2), "PixelSpacing")  # (x, y) from (row, column)
    assert measurement_spacing(detector) == ((0.15, 0.3), "ImagerPixelSpacing")
    assert measurement_spacing(write_dicom(tmp_path / "c.dcm", 40, 30)) is None
    assert measurement_spacing(_source("png", tmp_path)) is None
    assert box_in_mm([10, 5, 30, 25], (0.1, 0.2)) == {"box_mm": [1.0, 1.0, 3.0, 5.0], "size_mm": [2.0, 4.0]}


def _item(source: Path, original: tuple[int, int], model_size: tuple[int, int]) -> dict[str, object]:
    """A folder-inference item of one image: seg logits with a lit block and one box."""
    seg = torch.full((1, *model_size), -10.0)
    seg[0, 2:5, 1:3] = 10.0
    heads = {
        "cls": torch.full((14,), -1.0), "seg": seg, "det_gate": torch.tensor([0.8]), "seg_gate": torch.tensor([0.4]),
        "boxes": torch.tensor([[2.0, 1.0, 6.0, 4.0]]), "scores": torch.tensor([0.8]), "labels": torch.tensor([0]),
    }
    return {"source": str(source), "name": source.stem, "original_size": original, "model_size": model_size,
            "heads": heads}


def test_writer_reports_a_failing_format_and_writes_the_rest(tmp_path: Path) -> None:
    """A DICOM with a frame of reference but no SliceThickness: highdicom refuses the SEG; the rest is written."""
    source = write_dicom(
        tmp_path / "no_thickness.dcm", 40, 30, PixelSpacing=[0.2, 0.1], ImagePositionPatient=[0.0, 0.0, 0.0],
        ImageOrientationPatient=[1.0, 0.0, 0.0, 0.0, 1.0, 0.0], FrameOfReferenceUID=generate_uid(),
    )
    report = ErrorReport(tmp_path / "out" / "errors.json")
    policy = DecisionPolicy.default([f"c{i}" for i in range(14)], (8, 6))
    writer = PredictionWriter(str(tmp_path / "out"), policy, report)
    files = writer.write_one(_item(source, (40, 30), (8, 6)))
    assert set(files) == {"json", "png", "overlay", "nifti", "nrrd", "markups"}
    errors = json.loads(report.path.read_text())
    assert [(e["file"], e["stage"]) for e in errors] == [(str(source), "dicom_seg")] and errors[0]["problem"]
    record = json.loads((tmp_path / "out" / files["json"]).read_text())
    assert record["spacing"] == {"mm_per_pixel": [0.1, 0.2], "source": "PixelSpacing"}
    (box,) = record["boxes"]
    assert box["box"] == [10.0, 5.0, 30.0, 20.0] and box["box_mm"] == [1.0, 1.0, 3.0, 4.0]  # model 8x6 -> 40x30
    assert box["size_mm"] == [2.0, 3.0] and record["files"]["markups"] == "no_thickness_boxes.mrk.json"
    assert record["files"]["mask"] == "no_thickness_mask.png" and record["mask"]["pixels"] > 0
    validate_record(record)


def test_inference_on_mixed_folder_with_a_corrupt_file(tmp_path: Path) -> None:
    """The bundle command on real PNG, JPEG and DICOM files plus a truncated one: every output, one error."""
    reals = [NIH_PNG, COVID_JPEG, *SIIM]
    if len(SIIM) < 2 or not all(p.is_file() for p in reals):
        pytest.skip(f"real samples not found under {DATA}")
    inputs, models, out = tmp_path / "in", tmp_path / "models", tmp_path / "pred"
    inputs.mkdir()
    models.mkdir()
    for path in reals:
        shutil.copy(path, inputs / path.name)
    (inputs / "truncated.jpg").write_bytes(COVID_JPEG.read_bytes()[:5000])
    torch.manual_seed(0)
    torch.save(MultiCheXNet(num_anchors=4).state_dict(), models / "model.pt")
    result = subprocess.run(
        [
            sys.executable, "-m", "monai.bundle", "run", "inference", "--config_file", "configs/inference.json",
            "--input_dir", str(inputs), "--ckpt_dir", str(models), "--output_dir", str(out),
            "--image_size", "[64,64]", "--gate_thresholds", "{'det_gate': 0.0, 'seg_gate': 0.0}",
        ],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=600,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    errors = json.loads((out / "errors.json").read_text())
    assert [(Path(e["file"]).name, e["stage"]) for e in errors] == [("truncated.jpg", "input")]
    assert "truncated.jpg" in log and "image file is truncated" in log
    for n in range(1, 6):
        assert f"[{n}/5]" in log  # progress, one line per file
    for path in reals:
        stem = path.name.rsplit(".", 1)[0]
        record = json.loads((out / f"{stem}_pred.json").read_text())
        validate_record(record)
        expected = {"png", "overlay", "nifti", "nrrd"} | ({"dicom_seg"} if path.suffix == ".dcm" else set())
        expected |= {"markups"} if record["boxes"] else set()
        assert set(record["files"]) - {"mask"} == expected
        written = itk.imread(str(out / record["files"]["nifti"]))
        for got, want in zip(_itk_geometry_3d(written), _itk_geometry_3d(itk.imread(str(path)))):
            np.testing.assert_allclose(got, want, atol=1e-6)
        if path.suffix == ".dcm":
            assert record["spacing"] == {"mm_per_pixel": [0.168, 0.168], "source": "PixelSpacing"}
            seg = pydicom.dcmread(out / record["files"]["dicom_seg"])
            assert seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence[0].ReferencedSOPInstanceUID == (
                pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
            )
        else:
            assert record["spacing"] is None and all(b["box_mm"] is None for b in record["boxes"])
        if record["boxes"]:
            markups = json.loads((out / record["files"]["markups"]).read_text())
            assert len(markups["markups"]) == len(record["boxes"])


def test_dicom_seg_of_an_anonymised_source_without_type_2_attributes(tmp_path: Path) -> None:
    source = write_dicom(tmp_path / "anonymised.dcm", 40, 30)
    ds = pydicom.dcmread(source)
    for keyword in ("PatientBirthDate", "PatientSex", "ReferringPhysicianName", "AccessionNumber"):
        delattr(ds, keyword)
    ds.save_as(source)
    mask = np.zeros((40, 30), bool)
    mask[5:20, 3:9] = True
    write_dicom_seg(mask, source, tmp_path / "seg.dcm")
    seg = pydicom.dcmread(tmp_path / "seg.dcm")
    assert seg.PatientBirthDate == "" and seg.Rows == 30 and seg.Columns == 40
    assert int(seg.pixel_array.sum()) == int(mask.sum())
