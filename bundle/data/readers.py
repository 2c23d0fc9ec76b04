"""Loading chest X-rays from any source into one grey, normalised ``(1, W, H)`` tensor.

The format is recognised by content (:func:`image_format`), the suffix deciding only for files that cannot be
opened: a DICOM without a suffix or named ``.IMA`` is read as DICOM, a PNG named ``.dcm`` as PNG. Readers:
:class:`CXRDicomReader` (pydicom) for DICOM, PIL for PNG/JPEG/BMP/TIFF (8- or 16-bit), nibabel for NIfTI.
Arrays keep MONAI's layout: axis 0 is the image x axis (column).

DICOM display pipeline, in DICOM order: decode (compressed transfer syntaxes through pydicom's pixel-data
plugins: JPEG, JPEG-LS, JPEG 2000, RLE), honour BitsStored, apply the modality LUT (RescaleSlope/Intercept),
apply the VOI LUT or window when present, invert MONOCHROME1 so that bright is dense everywhere.

Intensity normalisation, the same for every source (:func:`normalise_intensity`): RGB(A) becomes grey by
ITU-R 601 luminance (alpha dropped), then each image is scaled linearly by its own minimum and maximum to
[0, 1]. The same pixels stored as PNG or as DICOM give the same tensor. An image without variation (every pixel
equal) is refused by :func:`load_cxr`; masks may be constant.

Every unreadable file raises :class:`ImageReadError` with one line: the file, what is wrong, what to do.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor, NibabelReader, PILReader, PydicomReader
from monai.transforms import EnsureChannelFirst, MapTransform
from monai.utils import ImageMetaKey
from PIL import Image
from pydicom import uid as uids
from pydicom.pixels import apply_modality_lut, apply_voi_lut, get_decoder

from .rle import rle_union

#: File suffixes read as DICOM when the content cannot tell (files without a suffix, as PACS exports often are).
DICOM_SUFFIXES: tuple[str, ...] = (".dcm", ".dicom", ".ima", "")
NIFTI_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz")
#: ITU-R BT.601 luminance weights (as PIL's "L" conversion).
LUMA: tuple[float, float, float] = (0.299, 0.587, 0.114)
#: Leading bytes of the image formats PIL reads, and their names.
SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"\x89PNG\r\n\x1a\n", "PNG"), (b"\xff\xd8\xff", "JPEG"), (b"II*\x00", "TIFF"), (b"MM\x00*", "TIFF"),
    (b"BM", "BMP"), (b"GIF8", "GIF"),
)
#: Image suffixes PIL reads, and the format each names.
PIL_SUFFIXES: dict[str, str] = {
    ".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".tif": "TIFF", ".tiff": "TIFF", ".bmp": "BMP", ".gif": "GIF"
}
PIXEL_DATA_KEYWORDS: tuple[str, ...] = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
#: (7FE0,0010) Pixel Data as it appears in a little- and a big-endian file.
PIXEL_DATA_TAG_BYTES: tuple[bytes, ...] = (b"\xe0\x7f\x10\x00", b"\x7f\xe0\x00\x10")
#: Packages (pip name, import name) whose pixel-data plugins decode each compressed transfer-syntax family.
DECODER_PACKAGES: tuple[tuple[tuple[str, ...], tuple[tuple[str, str], ...]], ...] = (
    (tuple(uids.JPEGTransferSyntaxes), (("pylibjpeg", "pylibjpeg"), ("pylibjpeg-libjpeg", "libjpeg"))),
    (tuple(uids.JPEGLSTransferSyntaxes), (("pyjpegls", "jpeg_ls"),)),
    (tuple(uids.JPEG2000TransferSyntaxes), (("pylibjpeg", "pylibjpeg"), ("pylibjpeg-openjpeg", "openjpeg"))),
    (tuple(uids.RLETransferSyntaxes), (("pylibjpeg", "pylibjpeg"), ("pylibjpeg-rle", "rle"))),
)
GREY_PHOTOMETRICS: tuple[str, ...] = ("MONOCHROME1", "MONOCHROME2")
#: What to do about a file that is cut off or damaged.
RECOPY = "copy or export it again"


class ImageReadError(ValueError):
    """An image or mask file cannot be read; the message names the file and the problem."""


def one_line(err: BaseException, limit: int = 300) -> str:
    """A decoder's message on one line, shortened to ``limit`` characters."""
    text = " ".join(str(err).split()) or type(err).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _head(path: Path, size: int = 348) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(size)


def _has_dicom_preamble(head: bytes) -> bool:
    return len(head) >= 132 and head[128:132] == b"DICM"


def _is_raw_dicom(path: Path, head: bytes) -> bool:
    """A DICOM data set without the 128-byte preamble (ACR-NEMA style): starts with a group 0002 or 0008 element
    in little-endian order, and pydicom parses a header with image or SOP attributes."""
    if len(head) < 8 or int.from_bytes(head[:2], "little") not in (0x0002, 0x0008):
        return False
    try:
        ds = pydicom.dcmread(path, force=True, stop_before_pixels=True)
    except Exception:
        return False
    return any(keyword in ds for keyword in ("SOPClassUID", "Modality", "Rows"))


def is_dicom_file(path: str | Path) -> bool:
    """Whether ``path`` holds DICOM, judged by content: the 128-byte preamble followed by ``DICM``, or a data set
    without preamble that pydicom parses (see :func:`_is_raw_dicom`); False for unreadable files."""
    path = Path(path)
    try:
        head = _head(path)
    except OSError:
        return False
    return _has_dicom_preamble(head) or _is_raw_dicom(path, head)


def image_format(path: str | Path) -> str | None:
    """The image format of ``path`` by content: "DICOM", "NIfTI", or a PIL format name ("PNG", "JPEG", ...);
    None when the bytes are none of them. Raises OSError when the file cannot be opened."""
    path = Path(path)
    head = _head(path)
    if _has_dicom_preamble(head):
        return "DICOM"
    for signature, name in SIGNATURES:
        if head.startswith(signature):
            return name
    if head[344:348] in (b"n+1\x00", b"ni1\x00") or (head.startswith(b"\x1f\x8b") and _suffix(path) == ".nii.gz"):
        return "NIfTI"
    return "DICOM" if _is_raw_dicom(path, head) else None


def _suffix(path: str | Path) -> str:
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def _format_by_suffix(path: str | Path) -> str | None:
    """The format ``path``'s suffix names: "DICOM" (also for no suffix), "NIfTI", a PIL format; None if unknown."""
    suffix = _suffix(path)
    if suffix in NIFTI_SUFFIXES:
        return "NIfTI"
    return "DICOM" if suffix in DICOM_SUFFIXES else PIL_SUFFIXES.get(suffix)


def _pil_converter(image: Image.Image) -> Image.Image:
    """PIL images as grey, grey + alpha, RGB or RGBA arrays: palettes expanded, other colour models to RGB."""
    frames = getattr(image, "n_frames", 1)
    if frames > 1:
        raise ImageReadError(
            f"{image.filename}: holds {frames} frames (a stack or animation); a radiograph is one frame: "
            "save the single image"
        )
    if image.mode in ("P", "PA"):
        return image.convert("RGBA" if image.mode == "PA" or "transparency" in image.info else "RGB")
    if image.mode in ("CMYK", "YCbCr", "LAB", "HSV"):
        return image.convert("RGB")
    return image


def reader_for(path: str | Path) -> Any:
    """The MONAI reader for ``path`` by content (:func:`image_format`), else by suffix: DICOM, NIfTI, else PIL."""
    try:
        found = image_format(path)
    except OSError:
        found = None
    return _reader_of(found or _format_by_suffix(path))


def _reader_of(found: str | None) -> Any:
    """The reader of an :func:`image_format` result: DICOM, NIfTI, else PIL."""
    if found == "DICOM":
        return CXRDicomReader()
    if found == "NIfTI":
        return NibabelReader()
    return PILReader(converter=_pil_converter)


def _missing_decoder(syntax: uids.UID) -> str | None:
    """Why pixel data in ``syntax`` cannot be decoded here, with what to install or do; None when it can."""
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        return (
            f"its pixel data is compressed as {syntax.name} ({syntax}), which pydicom cannot decode: "
            "convert it to an uncompressed transfer syntax (e.g. gdcmconv --raw, or dcmtk dcmdjpeg/dcmdrle)"
        )
    if decoder.is_available:
        return None
    what = f"its pixel data is {syntax.name} ({syntax})"
    packages = next((needs for family, needs in DECODER_PACKAGES if syntax in family), ())
    missing = [name for name, module in packages if find_spec(module) is None]
    if missing:
        return f"{what} and no decoder for it is installed: pip install {' '.join(missing)}"
    return f"{what} and no decoder for it is usable: {'; '.join(decoder.missing_dependencies)}"


def _expected_native_bytes(ds: pydicom.Dataset) -> int:
    """Bytes of uncompressed pixel data that Rows x Columns x SamplesPerPixel x frames x BitsAllocated need."""
    pixels = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1) or 1)
    pixels *= int(ds.get("NumberOfFrames", 1) or 1)
    return (pixels * int(ds.BitsAllocated) + 7) // 8


def dicom_problem(ds: pydicom.Dataset, path: str | Path) -> str | None:
    """Why the DICOM data set ``ds`` (read from ``path``) is not a decodable greyscale radiograph, with what to
    do; None when it is. Checks, in order: pixel data present (else cut off, or a header or non-image object),
    image attributes, photometric interpretation, frames, bit depth, a decoder for the transfer syntax, and
    uncompressed pixel data as long as the header says."""
    if "SegmentSequence" in ds:
        return "is a DICOM Segmentation (SEG), not a radiograph: leave it out of the input"
    if not any(keyword in ds for keyword in PIXEL_DATA_KEYWORDS):
        content = Path(path).read_bytes()
        if any(tag in content[132:] for tag in PIXEL_DATA_TAG_BYTES):
            return f"is truncated: the file ends inside its pixel data (7FE0,0010) after {len(content)} bytes: {RECOPY}"
        if "Rows" not in ds:
            return (
                "holds no image: no Rows/Columns and no pixel data (7FE0,0010) (a report or presentation state, "
                f"or a file cut off inside its header): give the radiograph's own DICOM file, or {RECOPY}"
            )
        return f"has no pixel data (7FE0,0010): only the header was saved; {RECOPY} with its image"
    rows, columns = int(ds.get("Rows", 0) or 0), int(ds.get("Columns", 0) or 0)
    if rows < 1 or columns < 1:
        return f"has Rows {rows} x Columns {columns}: the header is damaged; {RECOPY}"
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if photometric not in GREY_PHOTOMETRICS or samples != 1:
        return (
            f"is a colour image (PhotometricInterpretation {photometric}, SamplesPerPixel {samples}), not a greyscale "
            "radiograph (MONOCHROME1/MONOCHROME2): export the original radiograph, not a colour capture of it"
        )
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        return f"holds {frames} frames (a volume or cine loop); a radiograph is one frame: export the single image"
    if "PixelData" in ds:
        allocated, stored = int(ds.get("BitsAllocated", 0) or 0), int(ds.get("BitsStored", 0) or 0)
        if allocated not in (1, 8, 16, 32) or not 0 < stored <= allocated:
            return (
                f"has an impossible bit depth (BitsAllocated {allocated}, BitsStored {stored}; allocated must be "
                f"1, 8, 16 or 32 and hold the stored bits): the header is damaged; {RECOPY}"
            )
        syntax = ds.file_meta.get("TransferSyntaxUID") if hasattr(ds, "file_meta") else None
        if syntax is not None and not syntax.is_transfer_syntax:
            return f"declares transfer syntax {syntax}, which is not a transfer syntax: the header is damaged; {RECOPY}"
        if syntax is not None and syntax.is_compressed:
            return _missing_decoder(syntax)
        have, need = len(ds.PixelData), _expected_native_bytes(ds)
        if have < need:
            return (
                f"is truncated: its pixel data holds {have} bytes, Rows x Columns x BitsAllocated "
                f"({rows} x {columns} x {allocated}) need {need}: {RECOPY}"
            )
    return None


class CXRDicomReader(PydicomReader):
    """Pydicom reader applying the DICOM grey-level display pipeline; pixel spacing (x, y) in ``pixel_spacing``.

    Data sets without the preamble are read too (``force``); :func:`dicom_problem` is checked on every read.
    """

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("prune_metadata", True)
        kwargs.setdefault("force", True)
        super().__init__(**kwargs)

    def read(self, data: Any, **kwargs: Any) -> Any:
        datasets = super().read(data, **kwargs)
        for ds, name in zip(datasets if isinstance(datasets, list) else [datasets], self.filenames):
            problem = dicom_problem(ds, name)
            if problem:
                raise ImageReadError(f"{name}: {problem}")
            if "TransferSyntaxUID" not in ds.file_meta:  # a data set without file meta: as pydicom parsed it
                implicit, little = ds.original_encoding
                ds.file_meta.TransferSyntaxUID = (
                    uids.ImplicitVRLittleEndian if implicit else
                    uids.ExplicitVRLittleEndian if little else uids.ExplicitVRBigEndian
                )
        return datasets

    def _get_array_data(self, img: pydicom.Dataset, filename: str) -> np.ndarray:
        try:
            return dicom_to_array(img)
        except Exception as err:
            syntax = img.file_meta.get("TransferSyntaxUID", "?")
            name = getattr(syntax, "name", syntax)
            message = f"{filename}: cannot decode its {name} pixel data ({one_line(err)}): {RECOPY}"
            raise ImageReadError(message) from err

    def _get_affine(self, metadata: dict, lps_to_ras: bool = True) -> np.ndarray:
        """Radiographs have no patient position/orientation: a pixel-spacing diagonal instead of a warning."""
        if "00200037" in metadata and "00200032" in metadata:
            return super()._get_affine(metadata, lps_to_ras)
        spacing = metadata.get("00280030", {}).get("Value", [1.0, 1.0])
        return np.diag([float(spacing[0]), float(spacing[1]), 1.0, 1.0])

    def get_data(self, data: Any) -> tuple[np.ndarray, dict]:
        array, meta = super().get_data(data)
        spacing = dicom_pixel_spacing(data[0] if isinstance(data, list) else data)
        if spacing is not None:
            meta["pixel_spacing"] = spacing
        return array, meta


def dicom_to_array(ds: pydicom.Dataset) -> np.ndarray:
    """The (rows, columns) float32 image of ``ds``: decoded, modality and VOI LUTs applied, MONOCHROME1 inverted."""
    photometric = str(ds.get("PhotometricInterpretation", "MONOCHROME2")).strip()
    if photometric not in GREY_PHOTOMETRICS:
        raise ValueError(f"PhotometricInterpretation {photometric} is not a greyscale radiograph")
    values = apply_modality_lut(ds.pixel_array, ds)  # pydicom masks values to BitsStored
    if "VOILUTSequence" in ds or "WindowCenter" in ds:
        values = apply_voi_lut(values, ds, prefer_lut=True)
    values = values.astype(np.float32)
    if photometric == "MONOCHROME1":
        values = values.max() + values.min() - values
    return values


def dicom_pixel_spacing(ds: pydicom.Dataset) -> tuple[float, float] | None:
    """(x, y) pixel spacing in mm from PixelSpacing or ImagerPixelSpacing (stored as row, column), if present."""
    found = dicom_pixel_spacing_source(ds)
    return None if found is None else found[0]


def dicom_pixel_spacing_source(ds: pydicom.Dataset) -> tuple[tuple[float, float], str] | None:
    """(x, y) pixel spacing in mm and the attribute it comes from: PixelSpacing (in the patient), else
    ImagerPixelSpacing (at the detector, not corrected for magnification); None when neither is present."""
    for tag in ("PixelSpacing", "ImagerPixelSpacing"):
        value = ds.get(tag)
        if value is not None and len(value) == 2:
            return (float(value[1]), float(value[0])), tag
    return None


def to_grey(image: torch.Tensor) -> torch.Tensor:
    """(C, W, H) to (1, W, H): RGB(A) by luminance, alpha dropped, grey + alpha by its grey channel."""
    channels = image.shape[0]
    if channels == 1:
        return image
    if channels in (3, 4):
        weights = torch.tensor(LUMA, dtype=torch.float32).reshape(3, 1, 1)
        return (image[:3].float() * weights).sum(0, keepdim=True)
    if channels == 2:
        return image[:1]
    raise ValueError(f"{channels} channels; expected grey, grey+alpha, RGB or RGBA")


def normalise_intensity(image: torch.Tensor) -> torch.Tensor:
    """Scale linearly to [0, 1] by the image's own minimum and maximum; a constant image becomes zeros."""
    image = image.float()
    low, high = image.min(), image.max()
    if high <= low:
        return torch.zeros_like(image)
    return (image - low) / (high - low)


def _describe_bytes(head: bytes) -> str:
    """What unrecognised leading bytes look like: text (quoted) or hex."""
    try:
        text = head[:40].decode("utf-8")
    except UnicodeDecodeError:
        text = ""
    if text and all(c.isprintable() or c in "\r\n\t" for c in text):
        return f"it holds text ({' '.join(text.split())[:30]!r}...)"
    return f"it starts with bytes {head[:8].hex(' ')}"


def check_image_file(path: Path) -> str:
    """The format of an existing, non-empty image file (:func:`image_format`), else :class:`ImageReadError`."""
    if not path.is_file():
        raise ImageReadError(f"{path}: file not found")
    size = path.stat().st_size
    if size == 0:
        raise ImageReadError(f"{path}: is empty (0 bytes): the copy or export failed; {RECOPY}")
    try:
        found = image_format(path)
    except OSError as err:
        raise ImageReadError(f"{path}: cannot be opened ({one_line(err)}): check its permissions") from err
    if found is not None:
        return found
    expected = _format_by_suffix(path)
    marker = {
        "DICOM": "no 'DICM' marker at byte 128 and no DICOM header at the start", None: "no known image signature"
    }.get(expected, f"no {expected} signature")
    what = f"not a {expected} file" if expected and _suffix(path) else "not an image file"
    raise ImageReadError(
        f"{path}: {what} ({marker}; {_describe_bytes(_head(path))}): replace it with the real image or leave it out"
    )


def _read(path: Path, reader: Any) -> MetaTensor:
    """``path`` through ``reader`` as a channel-first float32 MetaTensor (as :class:`monai.transforms.LoadImage`
    does, without falling back to other readers, whose messages would hide this reader's)."""
    array, meta = reader.get_data(reader.read(str(path)))
    meta[ImageMetaKey.FILENAME_OR_OBJ] = str(path)
    image = MetaTensor.ensure_torch_and_prune_meta(np.asarray(array, dtype=np.float32), meta)
    return EnsureChannelFirst()(image, meta_dict=meta)


def _as_2d(image: MetaTensor, path: Path) -> MetaTensor:
    """(C, W, H), with NIfTI's trailing axis of 1 dropped; a volume or a many-channel array is refused."""
    if image.ndim == 4 and image.shape[-1] == 1:  # NIfTI 2D images are stored with a third axis of 1
        image = image[..., 0]
    if image.ndim != 3:
        shape = " x ".join(str(s) for s in image.shape[1:])
        raise ImageReadError(
            f"{path}: is a {image.ndim - 1}D array ({shape}), not a 2D radiograph: save the single 2D image"
        )
    if image.shape[0] > 4:
        raise ImageReadError(
            f"{path}: has {image.shape[0]} channels; expected grey, grey + alpha, RGB or RGBA: save it as one of them"
        )
    return image


def load_cxr(path: str | Path, normalise: bool = True) -> MetaTensor:
    """Read ``path`` as a (1, W, H) float MetaTensor; ``normalise`` applies :func:`normalise_intensity` and then
    refuses an image without variation (a mask, read with ``normalise=False``, may be constant).

    Raises:
        ImageReadError: one line naming the file, what is wrong and what to do: missing, empty, not an image,
            truncated or corrupt, no pixel data, no decoder for its compression, colour or multi-frame DICOM,
            a volume or more than 4 channels, NaN pixels, or (``normalise``) no variation.
    """
    path = Path(path)
    found = check_image_file(path)
    try:
        image = _read(path, _reader_of(found))
    except ImageReadError:
        raise
    except Exception as err:  # any decoder failure: report the file and the decoder's message
        raise ImageReadError(
            f"{path}: cannot decode the {found} image ({one_line(err)}): the file is truncated or corrupt; {RECOPY}"
        ) from err
    grey = to_grey(torch.as_tensor(_as_2d(image, path))).float()
    if not torch.isfinite(grey).all():
        raise ImageReadError(f"{path}: has NaN or infinite pixel values: {RECOPY} from its source")
    if normalise:
        low, high = float(grey.min()), float(grey.max())
        if high <= low:
            raise ImageReadError(
                f"{path}: has no variation (every pixel is {low:g}): a blank image or a failed export; "
                "check the file against its source"
            )
        grey = normalise_intensity(grey)
    return MetaTensor(grey, meta=dict(image.meta))


class LoadCXRd(MapTransform):
    """Load ``image`` (normalised) and ``mask`` (raw values) with :func:`load_cxr`.

    An entry with ``mask_rle`` (a list of SIIM RLE strings, their union; empty = annotated negative) and no
    ``mask`` gets its mask decoded at the image's size. Read errors name the entry's patient and the file.
    """

    def __init__(self, keys: KeysCollection = ("image", "mask"), image_key: str = "image") -> None:
        super().__init__(keys, allow_missing_keys=True)
        self.image_key = image_key

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            if isinstance(d[key], (str, Path)):
                d[key] = self._load(d, key)
        if "mask_rle" in d and "mask" not in d:
            width, height = d[self.image_key].shape[1:]
            d["mask"] = torch.as_tensor(rle_union(d.pop("mask_rle"), (width, height)), dtype=torch.float32)[None]
        return d

    def _load(self, d: Mapping[Hashable, Any], key: Hashable) -> MetaTensor:
        try:
            return load_cxr(d[key], normalise=key == self.image_key)
        except ImageReadError as err:
            raise ImageReadError(f"entry (patient {d.get('patient_id', '?')}) '{key}': {err}") from err
