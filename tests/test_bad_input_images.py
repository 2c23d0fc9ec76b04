"""Bad and unusual image files: each good one reads, each bad one raises a one-line ImageReadError that starts with
the file and says what is wrong; DICOM is recognised by content (is_dicom_file)."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.pixels import get_decoder
from pydicom.uid import ExplicitVRLittleEndian, JPEGBaseline8Bit, JPEGLSLossless, MPEG2MPML, generate_uid

from bundle.data import readers
from bundle.data.readers import CXRDicomReader, ImageReadError, LoadCXRd, is_dicom_file, load_cxr, reader_for

from .conftest import SHARED

DATA = SHARED / "data"
SIIM_DICOM = DATA / "siim" / "dicom" / "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
NIH_IMAGES = DATA / "nih1000" / "images"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"real samples not found at {DATA}")
PIXELS = np.arange(12 * 16, dtype=np.uint16).reshape(12, 16) * 9  # rows x columns, 0..1719


def _dataset(array: np.ndarray, photometric: str = "MONOCHROME2", **tags: object) -> Dataset:
    """An uncompressed CR data set holding ``array`` ((rows, cols) grey, or (rows, cols, 3) colour)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Modality = "CR"
    ds.Rows, ds.Columns = array.shape[:2]
    ds.SamplesPerPixel = 3 if array.ndim == 3 else 1
    ds.PhotometricInterpretation, ds.PixelRepresentation = photometric, 0
    bits = 8 if array.dtype == np.uint8 else 16
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = bits, bits, bits - 1
    if array.ndim == 3:
        ds.PlanarConfiguration = 0
    for name, value in tags.items():
        setattr(ds, name, value)
    ds.PixelData = array.tobytes()
    return ds


def _save(ds: Dataset, path: Path) -> Path:
    ds.save_as(path, enforce_file_format=True)
    return path


def _png(array: np.ndarray, path: Path, mode: str | None = None) -> Path:
    image = Image.fromarray(array)
    (image.convert(mode) if mode else image).save(path)
    return path


def _nifti(array: np.ndarray, path: Path) -> Path:
    nib.save(nib.Nifti1Image(array, np.eye(4)), path)
    return path


def _raw_dicom(path: Path) -> Path:
    """A data set without preamble and file meta (ACR-NEMA style), implicit VR little endian."""
    raw = Dataset()
    for element in _dataset(PIXELS):
        raw[element.tag] = element
    raw.save_as(path, implicit_vr=True, little_endian=True, enforce_file_format=False)
    return path


def _truncated_native(path: Path) -> Path:
    full = _save(_dataset(PIXELS), path).read_bytes()
    path.write_bytes(full[:-100])
    return path


def _header_only(path: Path) -> Path:
    ds = pydicom.dcmread(SIIM_DICOM)
    del ds.PixelData
    return _save(ds, path)


def _copy(source: Path, path: Path) -> Path:
    shutil.copy(source, path)
    return path


def _nih(mode: str) -> Path:
    return next(p for p in sorted(NIH_IMAGES.glob("*.png")) if Image.open(p).mode == mode)


def _jpeg_bytes(path: Path) -> Path:
    Image.open(_nih("RGB")).convert("L").save(path, format="JPEG")
    return path


def _two_frame_tiff(path: Path) -> Path:
    frames = [Image.fromarray((PIXELS // 8 + i).astype(np.uint8)) for i in range(2)]
    frames[0].save(path, save_all=True, append_images=frames[1:])
    return path


def _mpeg2_dicom(path: Path) -> Path:
    ds = _dataset(PIXELS)
    ds.file_meta.TransferSyntaxUID = MPEG2MPML
    ds.PixelData = encapsulate([b"\x00\x00\x01\xb3" + bytes(60)])
    return _save(ds, path)


# --- bad files: (file name, builder, start of the problem after "<path>: ") ------------------------------------

BAD: dict[str, tuple[str, Callable[[Path], Path], str]] = {
    "missing": ("absent.png", lambda p: p, "file not found"),
    "zero_bytes_dcm": ("empty.dcm", lambda p: (p.write_bytes(b""), p)[1], "is empty (0 bytes)"),
    "zero_bytes_png": ("empty.png", lambda p: (p.write_bytes(b""), p)[1], "is empty (0 bytes)"),
    "text_named_dcm": ("notes.dcm", lambda p: (p.write_text("Patient notes\n" * 30), p)[1],
                       "not a DICOM file (no 'DICM' marker at byte 128"),
    "text_without_suffix": ("README", lambda p: (p.write_text("export log\n" * 30), p)[1], "not an image file"),
    "garbage_named_png": ("noise.png", lambda p: (p.write_bytes(np.random.default_rng(0).bytes(4000)), p)[1],
                          "not a PNG file (no PNG signature; it starts with bytes"),
    "html_named_png": ("page.png", lambda p: (p.write_text("<!DOCTYPE html><html>Access denied</html>"), p)[1],
                       "not a PNG file (no PNG signature; it holds text ('<!DOCTYPE html>"),
    "truncated_png": ("cut.png", lambda p: (p.write_bytes(_nih("RGB").read_bytes()[:400]), p)[1],
                      "cannot decode the PNG image"),
    "header_only_dicom": ("header.dcm", _header_only, "has no pixel data (7FE0,0010)"),
    "truncated_jpeg_dicom": ("cut.dcm", lambda p: (p.write_bytes(SIIM_DICOM.read_bytes()[:60000]), p)[1],
                             "is truncated: the file ends inside its pixel data"),
    "dicom_cut_in_header": ("stub.dcm", lambda p: (p.write_bytes(SIIM_DICOM.read_bytes()[:200]), p)[1],
                            "holds no image: no Rows/Columns and no pixel data"),
    "truncated_native_dicom": ("short.dcm", _truncated_native,
                               "is truncated: its pixel data holds 284 bytes, Rows x Columns x BitsAllocated"),
    "rgb_dicom": ("rgb.dcm", lambda p: _save(_dataset(np.zeros((4, 5, 3), np.uint8) + 9, "RGB"), p),
                  "is a colour image (PhotometricInterpretation RGB, SamplesPerPixel 3)"),
    "ybr_dicom": ("ybr.dcm", lambda p: _save(_dataset(np.zeros((4, 5, 3), np.uint8) + 9, "YBR_FULL"), p),
                  "is a colour image (PhotometricInterpretation YBR_FULL"),
    "palette_dicom": ("palette.dcm", lambda p: _save(_dataset(PIXELS.astype(np.uint8), "PALETTE COLOR"), p),
                      "is a colour image (PhotometricInterpretation PALETTE COLOR"),
    "multi_frame_dicom": ("cine.dcm", lambda p: _save(_dataset(np.concatenate([PIXELS] * 3), NumberOfFrames=3,
                                                               Rows=12), p),
                          "holds 3 frames (a volume or cine loop)"),
    "bits_allocated_12": ("bits.dcm", lambda p: _save(_dataset(PIXELS, BitsAllocated=12), p),
                          "has an impossible bit depth (BitsAllocated 12, BitsStored 16"),
    "mpeg2_dicom": ("video.dcm", _mpeg2_dicom, "its pixel data is compressed as MPEG2 Main Profile / Main Level"),
    "constant_png": ("blank.png", lambda p: _png(np.full((12, 16), 7, np.uint8), p),
                     "has no variation (every pixel is 7)"),
    "constant_dicom": ("blank.dcm", lambda p: _save(_dataset(np.full((12, 16), 300, np.uint16)), p),
                       "has no variation (every pixel is 300)"),
    "volume_nifti": ("ct.nii.gz", lambda p: _nifti(np.random.default_rng(1).random((16, 12, 5), np.float32), p),
                     "is a 3D array (16 x 12 x 5), not a 2D radiograph"),
    "five_channel_nifti": ("bands.nii.gz", lambda p: _nifti(np.random.default_rng(2).random((16, 12, 1, 5),
                                                                                           np.float32), p),
                           "has 5 channels; expected grey, grey + alpha, RGB or RGBA"),
    "nan_nifti": ("nan.nii.gz", lambda p: _nifti(np.where(PIXELS.T[..., None] > 900, np.nan, 1).astype(np.float32), p),
                  "has NaN or infinite pixel values"),
    "two_frame_tiff": ("stack.tif", _two_frame_tiff, "holds 2 frames (a stack or animation)"),
}


@needs_data
@pytest.mark.parametrize("case", list(BAD))
def test_bad_image_raises_one_line_error_naming_file_and_problem(case: str, tmp_path: Path) -> None:
    name, build, problem = BAD[case]
    path = build(tmp_path / name)
    with pytest.raises(ImageReadError) as err:
        load_cxr(path)
    message = str(err.value)
    assert message.startswith(f"{path}: {problem}"), message
    assert "\n" not in message and len(message) < 500


@needs_data
@pytest.mark.parametrize("case", ["text_named_dcm", "header_only_dicom", "constant_png"])
def test_bad_image_in_an_entry_names_patient_key_and_file(case: str, tmp_path: Path) -> None:
    name, build, problem = BAD[case]
    path = build(tmp_path / name)
    with pytest.raises(ImageReadError) as err:
        LoadCXRd()({"image": str(path), "patient_id": "P3"})
    assert str(err.value).startswith(f"entry (patient P3) 'image': {path}: {problem}")


@needs_data
def test_missing_jpeg_decoder_names_the_package_to_install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert pydicom.dcmread(SIIM_DICOM).file_meta.TransferSyntaxUID == JPEGBaseline8Bit
    monkeypatch.setattr(get_decoder(JPEGBaseline8Bit), "_available", {})  # as if no plugin were installed
    monkeypatch.setattr(readers, "find_spec", lambda module: None if module == "libjpeg" else object())
    with pytest.raises(ImageReadError) as err:
        load_cxr(SIIM_DICOM)
    assert str(err.value) == (
        f"{SIIM_DICOM}: its pixel data is JPEG Baseline (Process 1) ({JPEGBaseline8Bit}) and no decoder for it is "
        "installed: pip install pylibjpeg-libjpeg"
    )


@needs_data
def test_missing_jpeg_ls_decoder_names_pyjpegls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = pydicom.dcmread(SIIM_DICOM)
    ds.decompress()
    ds.compress(JPEGLSLossless)
    path = _save(ds, tmp_path / "ls.dcm")
    monkeypatch.setattr(get_decoder(JPEGLSLossless), "_available", {})
    monkeypatch.setattr(readers, "find_spec", lambda module: None)
    with pytest.raises(ImageReadError, match=r"JPEG-LS Lossless .* no decoder .* installed: pip install pyjpegls$"):
        load_cxr(path)


# --- good files: (file name, builder, expected (1, W, H) shape) -------------------------------------------------

GOOD: dict[str, tuple[str, Callable[[Path], Path], tuple[int, int, int]]] = {
    "png_16bit": ("deep.png", lambda p: _png(PIXELS * 30, p), (1, 16, 12)),
    "png_1bit": ("bits.png", lambda p: _png((PIXELS % 2).astype(bool), p), (1, 16, 12)),
    "png_grey_alpha": ("la.png", lambda p: _png((PIXELS // 8).astype(np.uint8), p, "LA"), (1, 16, 12)),
    "png_rgba_real": ("rgba.png", lambda p: _copy(_nih("RGBA"), p), (1, 64, 64)),
    "png_named_dcm": ("thumb.dcm", lambda p: _copy(_nih("RGB"), p), (1, 64, 64)),
    "jpeg_named_png": ("photo.png", _jpeg_bytes, (1, 64, 64)),
    "dicom_named_ima": ("scan.IMA", lambda p: _copy(SIIM_DICOM, p), (1, 1024, 1024)),
    "dicom_upper_case": ("SCAN.DCM", lambda p: _copy(SIIM_DICOM, p), (1, 1024, 1024)),
    "dicom_without_suffix": ("IM000001", lambda p: _copy(SIIM_DICOM, p), (1, 1024, 1024)),
    "dicom_without_preamble": ("acr_nema", _raw_dicom, (1, 16, 12)),
    "nifti_2d": ("slice.nii.gz", lambda p: _nifti(PIXELS.T[..., None].astype(np.float32), p), (1, 16, 12)),
}


@needs_data
@pytest.mark.parametrize("case", list(GOOD))
def test_good_image_reads_normalised(case: str, tmp_path: Path) -> None:
    name, build, shape = GOOD[case]
    image = load_cxr(build(tmp_path / name))
    assert tuple(image.shape) == shape
    assert float(image.min()) == 0.0 and float(image.max()) == 1.0


def test_palette_png_is_read_as_its_colours_not_its_indices(tmp_path: Path) -> None:
    grey = (PIXELS // 8).astype(np.uint8)
    path = _png(grey, tmp_path / "p.png", "P")
    assert Image.open(path).mode == "P"
    rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) @ np.array(readers.LUMA, np.float32)
    expected = torch.as_tensor(((rgb - rgb.min()) / (rgb.max() - rgb.min())).T[None])
    torch.testing.assert_close(load_cxr(path).as_tensor(), expected)


def test_preamble_less_dicom_gives_the_same_tensor_as_the_file_with_preamble(tmp_path: Path) -> None:
    full = _save(_dataset(PIXELS), tmp_path / "full.dcm")
    torch.testing.assert_close(load_cxr(_raw_dicom(tmp_path / "raw")).as_tensor(), load_cxr(full).as_tensor())


@pytest.mark.parametrize("value", [0, 255], ids=["empty", "full"])
def test_constant_mask_is_allowed(value: int, tmp_path: Path) -> None:
    mask = np.full((12, 16), value, np.uint8)
    _png(PIXELS, tmp_path / "i.png")
    sample = LoadCXRd()({"image": str(tmp_path / "i.png"), "mask": str(_png(mask, tmp_path / "m.png"))})
    assert torch.equal(sample["mask"].as_tensor(), torch.full((1, 16, 12), float(value)))


# --- is_dicom_file and reader_for ------------------------------------------------------------------------------

DICOM_BY_CONTENT: dict[str, tuple[str, Callable[[Path], Path], bool]] = {
    "dcm": ("a.dcm", lambda p: _copy(SIIM_DICOM, p), True),
    "ima": ("a.IMA", lambda p: _copy(SIIM_DICOM, p), True),
    "no_suffix": ("IM0001", lambda p: _copy(SIIM_DICOM, p), True),
    "no_preamble": ("raw", _raw_dicom, True),
    "png_named_dcm": ("b.dcm", lambda p: _copy(_nih("RGB"), p), False),
    "text_named_dcm": ("t.dcm", lambda p: (p.write_text("x" * 300), p)[1], False),
    "short_text_group_8": ("g", lambda p: (p.write_bytes(b"\x08\x00garbage"), p)[1], False),
    "empty": ("e.dcm", lambda p: (p.write_bytes(b""), p)[1], False),
    "missing": ("absent.dcm", lambda p: p, False),
    "folder": ("sub.dcm", lambda p: (p.mkdir(), p)[1], False),
}


@needs_data
@pytest.mark.parametrize("case", list(DICOM_BY_CONTENT))
def test_is_dicom_file_judges_by_content(case: str, tmp_path: Path) -> None:
    name, build, expected = DICOM_BY_CONTENT[case]
    path = build(tmp_path / name)
    assert is_dicom_file(path) is expected
    assert is_dicom_file(str(path)) is expected


@needs_data
def test_reader_for_follows_content_then_suffix(tmp_path: Path) -> None:
    assert isinstance(reader_for(_copy(SIIM_DICOM, tmp_path / "scan.IMA")), CXRDicomReader)
    assert not isinstance(reader_for(_copy(_nih("RGB"), tmp_path / "thumb.dcm")), CXRDicomReader)
    assert isinstance(reader_for(tmp_path / "not_yet_there.dcm"), CXRDicomReader)  # no content: by suffix
