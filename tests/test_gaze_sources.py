"""Gaze maps from fixations, the saliency map loader and its errors, and the EGD-CXR and REFLACX readers on small
files written in their published PhysioNet formats (bad rows, missing images, empty and discarded readings)."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from bundle.data import DatalistError, check_datalist
from bundle.data import gaze_sources as gs
from bundle.data.gaze import SaliencyMapError, gaze_map, load_saliency_map, save_saliency_map
from bundle.data.sources import SourceError

from .conftest import ROOT
from .images import write_dicom

# --- gaze maps and map files ------------------------------------------------------------------------------------


def test_gaze_map_sums_to_one_and_heaviest_fixation_peaks_highest() -> None:
    x, y, duration = np.array([10.5, 40.5, 25.5]), np.array([8.5, 20.5, 40.5]), np.array([0.2, 0.5, 0.3])
    density = gaze_map(x, y, duration, 3.0, 3.0, (50, 60))
    assert density.shape == (50, 60) and density.sum() == pytest.approx(1.0)
    peaks = density[x.astype(int), y.astype(int)]
    assert np.argsort(peaks).tolist() == np.argsort(duration).tolist()
    assert np.unravel_index(density.argmax(), density.shape) == (40, 20)  # axis 0 is x
    # one pixel from a centre on a pixel centre: exp(-1 / (2 sigma^2)) of the peak
    assert density[41, 20] / density[40, 20] == pytest.approx(math.exp(-1 / 18), rel=1e-6)


def test_gaze_map_cuts_each_fixation_to_the_part_shown() -> None:
    density = gaze_map([20.5], [10.5], [1.0], 4.0, 4.0, (40, 20), shown=[[0, 0, 22, 20]])
    assert density[22:].sum() == 0 and density[21, 10] > 0
    with pytest.raises(ValueError, match="no mass"):
        gaze_map([20.5], [10.5], [0.0], 4.0, 4.0, (40, 20))
    with pytest.raises(ValueError, match="sigma must be positive"):
        gaze_map([20.5], [10.5], [1.0], 0.0, 4.0, (40, 20))


def test_gaze_loader_reads_8_and_16_bit_png_and_npy_rows_first(tmp_path: Path) -> None:
    rows = np.zeros((6, 10), dtype=np.uint8)  # 6 rows (H), 10 columns (W)
    rows[2, 7], rows[4, 1] = 200, 50
    Image.fromarray(rows).save(tmp_path / "8bit.png")
    Image.fromarray(rows.astype(np.uint16) * 300).save(tmp_path / "16bit.png")
    np.save(tmp_path / "map.npy", rows.astype(np.float32))
    for name in ("8bit.png", "16bit.png", "map.npy"):
        loaded = load_saliency_map(tmp_path / name)
        assert loaded.shape == (10, 6) and loaded.sum() == pytest.approx(1.0)
        assert loaded[7, 2] == pytest.approx(0.8) and loaded[1, 4] == pytest.approx(0.2)
    resized = load_saliency_map(tmp_path / "16bit.png", (20, 12))
    assert resized.shape == (20, 12) and resized.sum() == pytest.approx(1.0)
    assert np.unravel_index(resized.argmax(), resized.shape) in {(14, 4), (14, 5), (15, 4), (15, 5)}


def test_gaze_map_file_round_trip(tmp_path: Path) -> None:
    density = gaze_map([12.0, 30.0], [5.0, 14.0], [1.0, 2.0], 2.0, 3.0, (40, 20))
    for suffix, tolerance in ((".png", 1 / 65535), (".npy", 1e-6)):
        loaded = load_saliency_map(save_saliency_map(density, tmp_path / f"map{suffix}"))
        np.testing.assert_allclose(loaded / loaded.max(), density / density.max(), atol=tolerance)


def test_gaze_loader_errors_name_the_file(tmp_path: Path) -> None:
    Image.fromarray(np.full((4, 4, 3), 9, np.uint8)).save(tmp_path / "rgb.png")
    Image.fromarray(np.zeros((4, 4), np.uint16)).save(tmp_path / "zero.png")
    np.save(tmp_path / "cube.npy", np.ones((2, 3, 4)))
    np.save(tmp_path / "nan.npy", np.array([[1.0, np.nan]]))
    np.save(tmp_path / "negative.npy", np.array([[1.0, -0.5]]))
    (tmp_path / "garbage.npy").write_bytes(b"not a numpy file")
    (tmp_path / "map.jpg").write_bytes(b"")
    cases = {
        "missing.png": "file not found",
        "rgb.png": "is a RGB image; a saliency map has one grey channel",
        "zero.png": "is all zero",
        "cube.npy": r"is 2D \(rows, columns\); this one has shape \(2, 3, 4\)",
        "nan.npy": "holds 1 NaN or infinite value",
        "negative.npy": r"holds negative values \(minimum -0.5\)",
        "garbage.npy": "cannot read the .npy file",
        "map.jpg": "must be a .png",
    }
    for name, message in cases.items():
        with pytest.raises(SaliencyMapError, match=message) as err:
            load_saliency_map(tmp_path / name)
        assert str(err.value).startswith(str(tmp_path / name))


# --- EGD-CXR ----------------------------------------------------------------------------------------------------

EGD_MASTER = ["dicom_id", "path", "study_id", "patient_id", "stay_id", "gender", "anchor_age", "image_top_pad",
              "image_bottom_pad", "image_left_pad", "image_right_pad", "Normal", "CHF", "pneumonia", "consolidation",
              "cxr_exam_indication"]
EGD_FIXATIONS = ["SESSION_ID", "MEDIA_ID", "DICOM_ID", "CNT", "TIME (in secs)", "TIMETICK(f=10000000)", "FPOGX",
                 "FPOGY", "FPOGS", "FPOGD", "FPOGID", "FPOGV", "BPOGX", "BPOGY", "BPOGV", "LPCX", "LPCY", "RPCX",
                 "RPCY", "X_ORIGINAL", "Y_ORIGINAL"]
EGD_IMAGES = {"aaaa-1": ("10000032", "50000001", (300, 400)), "bbbb-2": ("10000033", "50000002", (200, 200))}


def _write_csv(path: Path, header: list[str], rows: list[dict[str, object]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows([[row.get(name, "0") for name in header] for row in rows])
    return path


def _mimic_dicom(root: Path, dicom: str, patient: str, study: str, size: tuple[int, int]) -> Path:
    """A DICOM at its MIMIC-CXR place: files/p<2 digits>/p<subject>/s<study>/<dicom_id>.dcm."""
    folder = root / "files" / f"p{patient[:2]}" / f"p{patient}" / f"s{study}"
    folder.mkdir(parents=True, exist_ok=True)
    return write_dicom(folder / f"{dicom}.dcm", *size)


def _egd_fixation(dicom: str, fixation_id: int, x: object, y: object, duration: object) -> dict[str, object]:
    return {"SESSION_ID": 1, "MEDIA_ID": 3, "DICOM_ID": dicom, "FPOGID": fixation_id, "FPOGD": duration,
            "FPOGV": 1, "X_ORIGINAL": x, "Y_ORIGINAL": y}


def _egd(root: Path, fixations: list[dict[str, object]] | None = None) -> tuple[Path, Path, Path]:
    """master_sheet.csv, fixations.csv and the MIMIC-CXR image folder of two EGD images."""
    master = []
    for dicom, (patient, study, size) in EGD_IMAGES.items():
        _mimic_dicom(root / "mimic", dicom, patient, study, size)
        master.append({"dicom_id": dicom, "path": f"files/p{patient[:2]}/p{patient}/s{study}/{dicom}.dcm",
                       "study_id": study, "patient_id": patient, "Normal": int(dicom == "bbbb-2"),
                       "CHF": int(dicom == "aaaa-1"), "pneumonia": 0})
    if fixations is None:
        fixations = [
            _egd_fixation("aaaa-1", 1, 150.0, 102.0, 0.8),  # heaviest
            _egd_fixation("aaaa-1", 2, 60.0, 300.0, 0.2),
            _egd_fixation("aaaa-1", 3, -5.0, 10.0, 0.3),  # outside the image
            _egd_fixation("aaaa-1", 4, 100.0, 100.0, 0.0),  # zero duration
            _egd_fixation("bbbb-2", 1, 100.0, 100.0, 0.5),
        ]
    return (_write_csv(root / "egd" / "master_sheet.csv", EGD_MASTER, master),
            _write_csv(root / "egd" / "fixations.csv", EGD_FIXATIONS, fixations), root / "mimic")


def test_egd_reader_draws_duration_weighted_maps_and_counts_drops(tmp_path: Path) -> None:
    master, fixations, images = _egd(tmp_path)
    result = gs.egd(master, fixations, images, tmp_path / "out", map_size=100)
    assert [e["patient_id"] for e in result.entries] == ["10000032", "10000033"]
    assert result.dropped == {gs.OUTSIDE: 1, gs.ZERO_DURATION: 1} and result.skipped == []
    first = result.entries[0]
    assert Path(first["image"]).name == "aaaa-1.dcm" and first["source_labels"] == {"Normal": 0, "CHF": 1,
                                                                                      "pneumonia": 0}
    density = load_saliency_map(first["saliency"])
    assert density.shape == (75, 100)  # 300 x 400 drawn at 100 pixels on the longest side: a quarter
    assert np.unravel_index(density.argmax(), density.shape) == (37, 25)  # (150, 102) / 4, the heaviest
    assert density[15, 75] > 0.1 * density.max()  # the lighter fixation at (60, 300) / 4
    # sigma: 1 degree = 400 / 1024 * 40 image pixels = 3.906 map pixels
    assert density[38, 25] / density[37, 25] == pytest.approx(math.exp(-0.5 / 3.906**2), rel=0.01)
    np.testing.assert_allclose(np.load(first["fixations"]), [[150, 102, 0.8], [60, 300, 0.2]])


def test_egd_reader_keeps_the_longest_row_of_each_raw_gaze_fixation(tmp_path: Path) -> None:
    raw = [_egd_fixation("aaaa-1", 7, 150.0, 100.0, d) for d in (0.1, 0.4, 0.8)]  # eye_gaze.csv: running FPOGD
    raw += [_egd_fixation("bbbb-2", 1, 100.0, 100.0, 0.5)]
    master, fixations, images = _egd(tmp_path, raw)
    assert gs.read_egd_fixations(fixations)["aaaa-1"].tolist() == [[150.0, 100.0, 0.8]]


def test_egd_reader_names_bad_rows_unknown_images_and_missing_files(tmp_path: Path) -> None:
    bad = [_egd_fixation("aaaa-1", 1, 150.0, 100.0, 0.8), _egd_fixation("aaaa-1", 2, "abc", 100.0, 0.2)]
    master, fixations, images = _egd(tmp_path, bad)
    with pytest.raises(SourceError, match=r"fixations\.csv line 3: X_ORIGINAL is not a number: 'abc'"):
        gs.egd(master, fixations, images, tmp_path / "out")
    _write_csv(fixations, EGD_FIXATIONS, [_egd_fixation("cccc-3", 1, 1.0, 1.0, 0.1)])
    with pytest.raises(SourceError, match=r"1 DICOM_ID\(s\) not in .*master_sheet\.csv, e\.g\. cccc-3"):
        gs.egd(master, fixations, images, tmp_path / "out")
    _write_csv(fixations, EGD_FIXATIONS, [_egd_fixation("aaaa-1", 1, 1.0, 1.0, -0.1)])
    with pytest.raises(SourceError, match=r"line 2: FPOGD \(fixation duration\) is negative"):
        gs.egd(master, fixations, images, tmp_path / "out")
    _write_csv(fixations, EGD_FIXATIONS, [_egd_fixation("aaaa-1", 1, 150.0, 100.0, 0.8),
                                          _egd_fixation("bbbb-2", 1, 10.0, 10.0, 0.8)])
    next(images.rglob("bbbb-2.dcm")).unlink()
    with pytest.raises(SourceError, match=r"1 image\(s\) not found under .*mimic: bbbb-2"):
        gs.egd(master, fixations, images, tmp_path / "out")
    result = gs.egd(master, fixations, images, tmp_path / "out", on_missing="skip")
    assert len(result.entries) == 1 and result.skipped == [f"bbbb-2: image not found under {images}"]
    with pytest.raises(SourceError, match="on_missing 'error' or 'skip', not 'ignore'"):
        gs.egd(master, fixations, images, tmp_path / "out", on_missing="ignore")


def test_egd_reader_skips_images_without_fixations(tmp_path: Path) -> None:
    master, fixations, images = _egd(tmp_path, [])  # header only
    result = gs.egd(master, fixations, images, tmp_path / "out")
    assert result.entries == [] and len(result.skipped) == 2
    assert result.skipped[0].startswith("aaaa-1: no fixation inside the image with a positive duration")


# --- REFLACX ----------------------------------------------------------------------------------------------------

REFLACX_META = ["id", "split", "eye_tracking_data_discarded", "image", "dicom_id", "subject_id", "image_size_x",
                "image_size_y"]
PHASE_1_LABELS = ["Airway wall thickening", "Atelectasis", "Consolidation", "Emphysema",
                  "Enlarged cardiac silhouette", "Fibrosis", "Fracture", "Groundglass opacity", "Mass", "Nodule",
                  "Pleural effusion", "Pleural thickening", "Pneumothorax", "Pulmonary edema", "Wide mediastinum",
                  "Quality issue", "Support devices", "Other"]
PHASE_3_LABELS = ["Abnormal mediastinal contour", "Acute fracture", "Atelectasis", "Consolidation",
                  "Enlarged cardiac silhouette", "Enlarged hilum", "Groundglass opacity", "Hiatal hernia",
                  "High lung volume / emphysema", "Interstitial lung disease", "Lung nodule or mass",
                  "Pleural abnormality", "Pneumothorax", "Pulmonary edema", "Support devices", "Other"]
REFLACX_FIXATIONS = ["timestamp_start_fixation", "timestamp_end_fixation", "x_position", "y_position",
                     "pupil_area_normalized", "window_level", "window_width", "angular_resolution_x_pixels_per_degree",
                     "angular_resolution_y_pixels_per_degree", "xmin_shown_from_image", "ymin_shown_from_image",
                     "xmax_shown_from_image", "ymax_shown_from_image", "xmin_in_screen_coordinates",
                     "ymin_in_screen_coordinates", "xmax_in_screen_coordinates", "ymax_in_screen_coordinates"]
SIZE = (320, 400)


def _reading(dicom: str, reading: str, subject: str, discarded: bool = False, **labels: object) -> dict[str, object]:
    patient = subject.rjust(8, "1")
    return {"id": reading, "split": "train", "eye_tracking_data_discarded": str(discarded),
            "image": f"physionet.org/files/mimic-cxr/2.0.0/files/p{patient[:2]}/p{patient}/s5/{dicom}.dcm",
            "dicom_id": dicom, "subject_id": subject, "image_size_x": SIZE[0], "image_size_y": SIZE[1],
            "Other": "", **labels}


def _fixation(x: object, y: object, start: float, end: float, ppd: float = 20.0,
              shown: tuple[int, int, int, int] = (0, 0, *SIZE)) -> dict[str, object]:
    return {"timestamp_start_fixation": start, "timestamp_end_fixation": end, "x_position": x, "y_position": y,
            "pupil_area_normalized": 1.02, "window_level": 0.5, "window_width": 1.0,
            "angular_resolution_x_pixels_per_degree": ppd, "angular_resolution_y_pixels_per_degree": ppd,
            "xmin_shown_from_image": shown[0], "ymin_shown_from_image": shown[1], "xmax_shown_from_image": shown[2],
            "ymax_shown_from_image": shown[3], "xmin_in_screen_coordinates": 0, "ymin_in_screen_coordinates": 0,
            "xmax_in_screen_coordinates": 1920, "ymax_in_screen_coordinates": 1080}


def _reflacx(root: Path) -> tuple[Path, Path]:
    """main_data of two phases and the images: C read twice (pooled), D discarded, E with an empty fixations file,
    F with a header-only one, G read once."""
    main = root / "main_data"
    phase_1 = [_reading("C", "P102R000001", "12", Atelectasis=3, **{"Support devices": "True"}),
               _reading("C", "P102R000002", "12", Atelectasis=4, **{"Support devices": "False"}),
               _reading("D", "P102R000003", "14", discarded=True, Atelectasis=1)]
    phase_3 = [_reading("E", "P300R000004", "15"), _reading("F", "P300R000005", "16"),
               _reading("G", "P300R000006", "13", Pneumothorax=5)]
    _write_csv(main / "metadata_phase_1.csv", REFLACX_META + PHASE_1_LABELS, phase_1)
    _write_csv(main / "metadata_phase_3.csv", REFLACX_META + PHASE_3_LABELS, phase_3)
    _write_csv(main / "P102R000001" / "fixations.csv", REFLACX_FIXATIONS, [
        _fixation(100, 100, 1.0, 2.0), _fixation(400, 100, 2.0, 2.5), _fixation(120, 110, 2.5, 2.5)])
    _write_csv(main / "P102R000002" / "fixations.csv", REFLACX_FIXATIONS, [
        _fixation(220, 300, 0.5, 1.5, shown=(0, 0, 230, 400))])
    (main / "P300R000004").mkdir()
    (main / "P300R000004" / "fixations.csv").write_bytes(b"")
    _write_csv(main / "P300R000005" / "fixations.csv", REFLACX_FIXATIONS, [])
    _write_csv(main / "P300R000006" / "fixations.csv", REFLACX_FIXATIONS, [_fixation(160, 200, 3.0, 3.4, ppd=40)])
    for dicom, subject in (("C", "12"), ("D", "14"), ("E", "15"), ("F", "16"), ("G", "13")):
        _mimic_dicom(root / "mimic", dicom, subject.rjust(8, "1"), "5", SIZE)
    return main, root / "mimic"


def test_reflacx_reader_pools_readings_and_uses_angular_resolution(tmp_path: Path) -> None:
    main, images = _reflacx(tmp_path)
    result = gs.reflacx(main, images, tmp_path / "out", map_size=None, map_format="npy")
    assert [(e["patient_id"], e["readings"]) for e in result.entries] == [
        ("12", ["P102R000001", "P102R000002"]), ("13", ["P300R000006"])]
    assert result.dropped == {gs.OUTSIDE: 1, gs.ZERO_DURATION: 1, gs.DISCARDED: 1, gs.NO_FIXATION: 2}
    assert result.skipped == [
        "D: eye-tracking data discarded in every reading",
        "E: no fixation inside the image with a positive duration in its 1 reading(s)",
        "F: no fixation inside the image with a positive duration in its 1 reading(s)",
    ]
    pooled = result.entries[0]
    assert pooled["source_labels"]["Atelectasis"] == 3.5 and pooled["source_labels"]["Support devices"] == 0.5
    density = load_saliency_map(pooled["saliency"])
    assert density.shape == SIZE
    # each reading is normalised before pooling: half the mass around each radiologist's fixation
    assert density[:160].sum() == pytest.approx(0.5, abs=0.01)
    # sigma = 1 degree = 20 image pixels: the mass's variance along x around (100, 100), cut at 3 sigma
    left = density[:160, :200]
    centres = np.arange(160) + 0.5
    variance = (left.sum(axis=1) * (centres - 100) ** 2).sum() / left.sum()
    assert variance == pytest.approx(20**2, rel=0.05)
    assert density[230, 300] < 1e-6 * density[229, 300]  # the second reading showed only x < 230
    single = load_saliency_map(result.entries[1]["saliency"])
    np.testing.assert_allclose(single[159:161, 199:201], single.max())  # the four pixels around (160, 200)
    np.testing.assert_allclose(np.load(result.entries[1]["fixations"]), [[160, 200, 0.4]], rtol=1e-6)


def test_reflacx_reader_names_bad_rows_and_broken_downloads(tmp_path: Path) -> None:
    main, images = _reflacx(tmp_path)
    file = main / "P102R000002" / "fixations.csv"
    _write_csv(file, REFLACX_FIXATIONS, [_fixation("left", 300, 0.5, 1.5)])
    with pytest.raises(SourceError, match=r"P102R000002/fixations\.csv line 2: x_position is not a number: 'left'"):
        gs.reflacx(main, images, tmp_path / "out")
    _write_csv(file, REFLACX_FIXATIONS, [_fixation(220, 300, 1.5, 0.5)])
    with pytest.raises(SourceError, match="line 2: timestamp_end_fixation 0.5 is before timestamp_start_fixation"):
        gs.reflacx(main, images, tmp_path / "out")
    file.unlink()
    with pytest.raises(SourceError, match="fixations.csv: not found; the metadata lists reading P102R000002"):
        gs.reflacx(main, images, tmp_path / "out")
    with pytest.raises(SourceError, match="no metadata_phase_<n>.csv"):
        gs.reflacx(tmp_path, images, tmp_path / "out")


def test_reflacx_reader_missing_and_wrong_size_images(tmp_path: Path) -> None:
    main, images = _reflacx(tmp_path)
    next(images.rglob("G.dcm")).unlink()
    with pytest.raises(SourceError, match=r"1 image\(s\) not found under .*mimic: G \(on_missing='skip'"):
        gs.reflacx(main, images, tmp_path / "out")
    skipped = gs.reflacx(main, images, tmp_path / "out", on_missing="skip")
    assert [Path(e["image"]).stem for e in skipped.entries] == ["C"] and f"G: image not found under {images}" in (
        skipped.skipped)
    ignored = gs.reflacx(main, images, tmp_path / "out", on_missing="ignore")
    assert [Path(e["image"]).name for e in ignored.entries] == ["C.dcm", "G.dcm"]
    write_dicom(next(images.rglob("C.dcm")), 300, 400)
    with pytest.raises(SourceError, match=r"C\.dcm: is 300x400 pixels, REFLACX gives 320x400"):
        gs.reflacx(main, images, tmp_path / "out", on_missing="skip")


def test_reflacx_prepare_writes_saliency_datalist_that_validates(tmp_path: Path) -> None:
    main, images = _reflacx(tmp_path)
    output = tmp_path / "lists" / "reflacx.json"
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1")
    run = subprocess.run([sys.executable, str(ROOT / "scripts" / "prepare.py"), "reflacx", str(main), str(images),
                          str(output), "--map_size", "64"], env=env, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "2 gaze maps" in run.stdout and "dropped: 1 fixations of zero duration, 1 fixations outside" in run.stdout
    content = json.loads(output.read_text())
    entries = [e for split in ("training", "validation", "testing") for e in content[split]]
    assert sorted(e["patient_id"] for e in entries) == ["12", "13"] and len(content["skipped"]) == 3
    assert all(not Path(e["saliency"]).is_absolute() and (output.parent / e["saliency"]).is_file() for e in entries)
    assert load_saliency_map(output.parent / entries[0]["saliency"]).shape == (51, 64)
    assert len(check_datalist(output)) == len(content["training"])
    Image.fromarray(np.zeros((4, 4, 3), np.uint8)).save(output.parent / content["training"][0]["saliency"])
    with pytest.raises(DatalistError, match="'saliency': .* is a RGB image"):
        check_datalist(output)
