"""Image loading: DICOM display pipeline and transfer syntaxes, PNG/JPEG/NIfTI, grey conversion, bad files."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pytest
import torch
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGLSLossless, RLELossless, generate_uid

from bundle.data.readers import ImageReadError, LoadCXRd, dicom_to_array, load_cxr

from .conftest import SHARED

DATA = SHARED / "data"
SIIM_DICOM = DATA / "siim" / "dicom" / "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
MONOCHROME1 = DATA / "siim" / "dicom" / "monochrome1_variant.dcm"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"real samples not found at {DATA}")


def _normalised(array: np.ndarray) -> torch.Tensor:
    """(rows, cols) array as the expected (1, W, H) tensor: transposed to x-first and min-max scaled."""
    values = torch.as_tensor(array.T.astype(np.float32))[None]
    return (values - values.min()) / (values.max() - values.min())


def _grey_dicom(array: np.ndarray, bits_stored: int, **tags: object) -> Dataset:
    """An uncompressed 16-bit MONOCHROME2 CR dataset holding ``array`` (rows, cols)."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.Rows, ds.Columns = array.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PixelRepresentation = 1, "MONOCHROME2", 0
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits_stored, bits_stored - 1
    ds.PixelSpacing = [0.2, 0.1]
    for name, value in tags.items():
        setattr(ds, name, value)
    ds.PixelData = array.astype(np.uint16).tobytes()
    return ds


@needs_data
def test_real_siim_dicom_keeps_layout_range_and_spacing() -> None:
    image = load_cxr(SIIM_DICOM)
    pixels = pydicom.dcmread(SIIM_DICOM).pixel_array  # JPEG baseline, decoded through a pixel-data plugin
    assert image.shape == (1, 1024, 1024)
    torch.testing.assert_close(image.as_tensor(), _normalised(pixels))
    assert image.meta["pixel_spacing"] == (0.168, 0.168)


@needs_data
def test_monochrome1_variant_is_inverted() -> None:
    # the variant holds the same stored pixels, declared MONOCHROME1: displayed, it is the negative
    assert np.array_equal(pydicom.dcmread(MONOCHROME1).pixel_array, pydicom.dcmread(SIIM_DICOM).pixel_array)
    torch.testing.assert_close(load_cxr(MONOCHROME1).as_tensor(), 1 - load_cxr(SIIM_DICOM).as_tensor())


@needs_data
@pytest.mark.parametrize("syntax", [RLELossless, JPEGLSLossless, JPEG2000Lossless], ids=lambda s: s.name)
def test_compressed_transfer_syntaxes_decode_losslessly(syntax: str, tmp_path: Path) -> None:
    ds = pydicom.dcmread(SIIM_DICOM)
    ds.decompress()
    ds.compress(syntax)
    ds.save_as(tmp_path / "c.dcm")
    assert pydicom.dcmread(tmp_path / "c.dcm").file_meta.TransferSyntaxUID == syntax
    torch.testing.assert_close(load_cxr(tmp_path / "c.dcm").as_tensor(), load_cxr(SIIM_DICOM).as_tensor())


@needs_data
def test_same_image_as_png_and_dicom_gives_same_tensor(tmp_path: Path) -> None:
    Image.fromarray(pydicom.dcmread(SIIM_DICOM).pixel_array).save(tmp_path / "same.png")
    torch.testing.assert_close(load_cxr(tmp_path / "same.png").as_tensor(), load_cxr(SIIM_DICOM).as_tensor())


def test_16bit_png_and_12bit_dicom_give_same_tensor(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 4096, size=(20, 30)).astype(np.uint16)
    Image.fromarray(pixels).save(tmp_path / "a.png")
    garbage_high_bits = pixels | 0xF000  # outside BitsStored = 12: must be ignored
    _grey_dicom(garbage_high_bits, 12).save_as(tmp_path / "a.dcm", enforce_file_format=True)
    png, dcm = load_cxr(tmp_path / "a.png"), load_cxr(tmp_path / "a.dcm")
    assert png.shape == dcm.shape == (1, 30, 20)
    torch.testing.assert_close(png.as_tensor(), dcm.as_tensor())
    torch.testing.assert_close(png.as_tensor(), _normalised(pixels))
    assert dcm.meta["pixel_spacing"] == (0.1, 0.2)  # (x, y) from PixelSpacing (row, column)


def test_rescale_slope_intercept_and_window_are_applied() -> None:
    pixels = np.arange(0, 1000, 4, dtype=np.uint16).reshape(10, 25)
    rescaled = dicom_to_array(_grey_dicom(pixels, 12, RescaleSlope=2, RescaleIntercept=-1024))
    np.testing.assert_allclose(rescaled, pixels * 2.0 - 1024)
    windowed = dicom_to_array(
        _grey_dicom(pixels, 12, RescaleSlope=2, RescaleIntercept=-1024, WindowCenter=0, WindowWidth=400)
    )
    hu = pixels * 2.0 - 1024
    assert np.all(windowed[hu <= -200] == windowed.min()) and np.all(windowed[hu >= 200] == windowed.max())
    inside = (hu > -199) & (hu < 199)
    assert np.all(np.diff(windowed[inside]) > 0)  # linear ramp inside the window


@needs_data
def test_rgb_and_rgba_thumbnails_become_luminance() -> None:
    images = sorted((DATA / "nih1000" / "images").glob("*.png"))
    modes = {p: Image.open(p).mode for p in images}
    for mode in ("RGB", "RGBA"):
        path = next(p for p, m in modes.items() if m == mode)
        rgb = np.asarray(Image.open(path).convert("RGB"), dtype=np.float32)
        expected = _normalised(rgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32))
        torch.testing.assert_close(load_cxr(path).as_tensor(), expected)


@needs_data
def test_jpeg_loads_x_first() -> None:
    path = next((DATA / "covid" / "images").glob("*.jpg"))
    width, height = Image.open(path).size
    assert load_cxr(path).shape == (1, width, height)


def test_nifti_2d(tmp_path: Path) -> None:
    array = np.random.default_rng(1).random((30, 20)).astype(np.float32)  # NIfTI arrays are x-first already
    nib.save(nib.Nifti1Image(array[..., None], np.eye(4)), tmp_path / "a.nii.gz")
    torch.testing.assert_close(load_cxr(tmp_path / "a.nii.gz").as_tensor(), _normalised(array.T))


BAD_FILE_PROBLEMS = {
    "truncated_png": "cannot decode the PNG image (image file is truncated)",
    "truncated_dicom": "is truncated: the file ends inside its pixel data",
    "garbage_dicom": "not a DICOM file (no 'DICM' marker at byte 128",
    "missing": "file not found",
}


@needs_data
@pytest.mark.parametrize("kind", list(BAD_FILE_PROBLEMS))
def test_bad_files_name_the_file_and_problem(kind: str, tmp_path: Path) -> None:
    if kind == "truncated_png":
        path = tmp_path / "t.png"
        source = next((DATA / "nih1000" / "images").glob("*.png")).read_bytes()
        path.write_bytes(source[: len(source) // 2])
    elif kind == "truncated_dicom":
        path = tmp_path / "t.dcm"
        path.write_bytes(SIIM_DICOM.read_bytes()[:5000])
    elif kind == "garbage_dicom":
        path = tmp_path / "g.dcm"
        path.write_bytes(b"not a dicom file at all" * 50)
    else:
        path = tmp_path / "absent.png"
    with pytest.raises(ImageReadError) as err:
        load_cxr(path)
    assert str(err.value).startswith(f"{path}: {BAD_FILE_PROBLEMS[kind]}") and "\n" not in str(err.value)
    with pytest.raises(ImageReadError, match=r"patient P7\) 'image'") as err:
        LoadCXRd()({"image": str(path), "patient_id": "P7"})
    assert str(path) in str(err.value)


def test_mask_rle_is_decoded_at_image_size(tmp_path: Path) -> None:
    Image.fromarray(np.arange(24, dtype=np.uint8).reshape(4, 6)).save(tmp_path / "i.png")  # 4 rows x 6 columns
    sample = LoadCXRd()({"image": str(tmp_path / "i.png"), "mask_rle": ["5 3", "10 1"]})
    expected = np.zeros((6, 4), dtype=np.float32)  # (x, y); column-major runs: pixel p is (p // 4, p % 4)
    for p in (5, 6, 7, 10):  # each row is its own encoding; the mask is their union
        expected[p // 4, p % 4] = 1
    np.testing.assert_array_equal(sample["mask"][0].numpy(), expected)
    assert "mask_rle" not in sample
