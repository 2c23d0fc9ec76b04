"""The inputs of a folder inference run: which files are images, and the unique output name of each.

A folder is searched recursively (DICOM exports nest). Hidden files and folders (``.name``) and operating-system
files (``Thumbs.db``, ``desktop.ini``, ``DICOMDIR``) are passed over. A file is an image candidate when its
suffix is an image suffix (:data:`IMAGE_SUFFIXES`, any case) or when its content is DICOM (files without a suffix,
``.IMA``); any other file is "not an image" and reported by the caller. Whether a candidate decodes is the
reader's business (:func:`bundle.data.readers.load_cxr`), file by file.

Output names keep files apart: the relative folder is kept (``x/1.dcm`` -> ``x/1``, ``y/1.dcm`` -> ``y/1``) and
when two files of one folder share a stem (``a.png`` and ``a.dcm``) both keep their suffix (``a.png``,
``a.dcm``). Names depend only on the folder's content, never on processing order, so a rerun finds them again.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from .readers import is_dicom_file

#: Suffixes read as images (longest first, so that ``.nii.gz`` wins over ``.gz``).
IMAGE_SUFFIXES: tuple[str, ...] = (
    ".nii.gz", ".nii", ".dcm", ".dicom", ".ima", ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff"
)
#: Operating-system files found in exported folders, never inputs.
SYSTEM_FILES: frozenset[str] = frozenset({"thumbs.db", "desktop.ini", "dicomdir"})


def image_suffix(path: str | Path) -> str:
    """The image suffix of ``path`` as written (``.nii.gz``, ``.DCM``), or "" when it has none."""
    name = Path(path).name
    for suffix in IMAGE_SUFFIXES:
        if name.lower().endswith(suffix) and len(name) > len(suffix):
            return name[-len(suffix):]
    return ""


@dataclass(frozen=True)
class InputFile:
    """One input image: its ``path`` and the ``name`` its outputs are written under (``<name>_pred.json``)."""

    path: Path
    name: str


@dataclass(frozen=True)
class FolderInputs:
    """The images of a folder (``images``, in a stable order) and the files that are not images (``others``)."""

    images: list[InputFile]
    others: list[Path]


def _visible(path: Path, root: Path) -> bool:
    parts = path.relative_to(root).parts
    return not any(part.startswith(".") for part in parts) and path.name.lower() not in SYSTEM_FILES


def find_inputs(source: str | Path) -> FolderInputs:
    """The image files under ``source`` (a folder, searched recursively, or one file) with unique output names.

    Raises:
        FileNotFoundError: ``source`` does not exist.
    """
    source = Path(source)
    if source.is_file():
        return FolderInputs([InputFile(source, _stem(source))], []) if _is_candidate(source) else FolderInputs([], [source])
    if not source.is_dir():
        raise FileNotFoundError(f"{source}: input folder not found (set --input_dir to a folder of images)")
    images: list[Path] = []
    others: list[Path] = []
    for path in sorted(source.rglob("*")):
        if path.is_file() and _visible(path, source):
            (images if _is_candidate(path) else others).append(path)
    return FolderInputs(_named(images, source), others)


def _is_candidate(path: Path) -> bool:
    return bool(image_suffix(path)) or is_dicom_file(path)


def _stem(path: Path) -> str:
    suffix = image_suffix(path)
    return path.name[: -len(suffix)] if suffix else path.name


def _named(paths: list[Path], root: Path) -> list[InputFile]:
    """Output names relative to ``root``: the stem, or the whole file name where the stem would be shared."""
    names = [path.relative_to(root).parent / _stem(path) for path in paths]
    for _ in range(2):  # a second pass settles a full name that equals another file's stem (a.png vs a.png.dcm)
        count = Counter(names)
        names = [path.relative_to(root) if count[name] > 1 else name for path, name in zip(paths, names)]
    return [InputFile(path, name.as_posix()) for path, name in zip(paths, names)]
