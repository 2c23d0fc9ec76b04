"""Readers of the public datasets' official label files, each returning datalist entries.

An entry has ``image`` (absolute path), ``patient_id`` (for RSNA and SIIM images mapped to NIH ChestX-ray14,
the NIH patient, so that a patient's images share a split; the NIH ``Image Index`` is kept as ``nih_image``)
and whichever labels the source has: ``cls`` (14 NIH
findings, 1/0, ``UNKNOWN_LABEL`` where the source does not grade a finding), ``boxes`` (xyxy in image pixels,
x = column) with ``box_labels`` (class *names* here; :func:`index_box_classes` turns them into indices),
``mask`` (a file) or ``mask_rle`` (SIIM encodings). A key is absent when that label kind is not annotated.
"""

from __future__ import annotations

import csv
import gzip
import io
import logging
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pydicom
from PIL import Image

from .labels import NIH_FINDINGS, UNKNOWN_LABEL
from .rle import RLEError, parse_rle
from .splits import nih_patient

OnMissing = Literal["error", "skip", "ignore"]
IMAGE_SUFFIXES: tuple[str, ...] = (
    ".png", ".jpg", ".jpeg", ".dcm", ".dicom", ".nii", ".nii.gz", ".bmp", ".tif", ".tiff"
)
#: Findings of the COVID-19 image data collection counted as pneumonia (besides any containing "pneumonia").
PNEUMONIA_CAUSES: frozenset[str] = frozenset(
    {"covid-19", "sars", "mers", "ards", "pneumocystis", "streptococcus", "klebsiella", "legionella", "chlamydophila",
     "mycoplasma", "e.coli", "staphylococcus", "influenza", "varicella", "herpes", "aspergillosis", "nocardia",
     "lipoid", "bacterial", "viral", "fungal"}
)
log = logging.getLogger("bundle.data")


class SourceError(ValueError):
    """A label file row or a referenced image is unusable; the message names the file, row and problem."""


@dataclass
class SourceResult:
    """Entries read from a source, the images left out (with ``on_missing='skip'``), each with its reason, and
    images without labels (the datalist's ``unlabelled`` list)."""

    entries: list[dict[str, Any]]
    skipped: list[str] = field(default_factory=list)
    unlabelled: list[dict[str, Any]] = field(default_factory=list)


def open_text(path: str | Path) -> io.TextIOBase:
    """Open a CSV or text file, gzip-compressed when it ends in ``.gz``."""
    path = Path(path)
    if path.suffix == ".gz":
        return gzip.open(path, "rt", newline="")
    return open(path, newline="")


def read_csv(path: str | Path, required: Sequence[str]) -> tuple[list[str], list[list[str]]]:
    """Header (stripped names) and rows of ``path``; raise if a ``required`` column is absent."""
    try:
        with open_text(path) as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError, csv.Error) as err:
        raise SourceError(f"{path}: cannot read CSV ({err})") from err
    header = [name.strip() for name in rows[0]] if rows else []
    missing = [name for name in required if name not in header]
    if missing:
        raise SourceError(f"{path}: missing column(s) {missing}; header is {header}")
    return header, rows[1:]


class ImageIndex:
    """Image files under a folder (searched recursively once), looked up by file name or stem."""

    def __init__(self, root: str | Path, on_missing: OnMissing = "error") -> None:
        self.root = Path(root)
        self.on_missing = on_missing
        self.by_name: dict[str, Path] = {}
        self.by_stem: dict[str, Path] = {}
        if on_missing != "ignore":
            if not self.root.is_dir():
                raise SourceError(f"{self.root}: image folder not found")
            for path in self.root.rglob("*"):
                if path.name.lower().endswith(IMAGE_SUFFIXES) and path.is_file():
                    self.by_name[path.name] = path
                    self.by_stem[stem(path)] = path
        self.missing: list[str] = []

    def find(self, name: str, by_stem: bool = False) -> Path | None:
        """The file called ``name`` (or with that stem); None, remembered as missing, when absent."""
        if self.on_missing == "ignore":
            return self.root / (f"{name}.dcm" if by_stem else name)
        found = (self.by_stem if by_stem else self.by_name).get(name)
        if found is None:
            self.missing.append(name)
        return found

    def result(self, entries: list[dict[str, Any]], label_file: str | Path) -> SourceResult:
        """Entries, raising for missing images unless ``on_missing`` is 'skip' (then they are reported)."""
        if self.missing and self.on_missing == "error":
            shown = ", ".join(self.missing[:10])
            raise SourceError(
                f"{label_file}: {len(self.missing)} image(s) not found under {self.root}: {shown}"
                + (" ..." if len(self.missing) > 10 else "")
                + " (on_missing='skip' leaves them out with a report)"
            )
        skipped = [f"{name}: image not found under {self.root}" for name in self.missing]
        if skipped:
            log.warning("%s: skipped %d entries whose image is missing, e.g. %s", label_file, len(skipped), skipped[:3])
        return SourceResult(entries, skipped)


def stem(path: str | Path) -> str:
    """File name without its image suffix (``.nii.gz`` counts as one)."""
    name = Path(path).name
    return name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else Path(name).stem


def unlabelled_entry(path: Path, patient_pattern: str | None = None) -> dict[str, Any]:
    """An ``unlabelled`` entry: the image and its patient (``nih-<patient>`` for an NIH file name, else the first
    group of ``patient_pattern`` on the stem, else the stem).

    The ``nih-`` prefix keeps NIH patient numbers apart from another dataset's numeric ids (COVID patient 102 is
    not NIH patient 102); NIH images are still matched to their NIH patient through the file name."""
    patient = nih_patient(path.name)
    if patient is not None:
        return {"image": str(path), "patient_id": f"nih-{patient}"}
    if patient_pattern:
        match = re.search(patient_pattern, stem(path))
        if not match:
            raise SourceError(f"{path}: patient_pattern {patient_pattern!r} does not match the file name")
        patient = match.group(1) if match.groups() else match.group(0)
    return {"image": str(path), "patient_id": patient or stem(path)}


def unreferenced(index: ImageIndex, entries: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Unlabelled entries of the images under ``index`` that no entry of ``entries`` uses."""
    used = {str(e["image"]) for e in entries}
    return [unlabelled_entry(path) for _, path in sorted(index.by_name.items()) if str(path) not in used]


def unlabelled(source: str | Path, column: str = "image", patient_pattern: str | None = None) -> SourceResult:
    """Unlabelled images: every image file under a folder (recursively), or the ``column`` of a CSV (paths
    relative to the CSV's folder). Files are not decoded here (``scripts/prepare.py unlabelled`` checks them)."""
    source = Path(source)
    if source.is_dir():
        paths = sorted(ImageIndex(source).by_name.values())
    elif source.is_file():
        header, rows = read_csv(source, [column])
        col = header.index(column)
        paths = [(source.parent / row[col].strip()).resolve() for row in rows if len(row) > col and row[col].strip()]
    else:
        raise SourceError(f"{source}: neither a folder of images nor a CSV file")
    if not paths:
        raise SourceError(f"{source}: no image found")
    return SourceResult([], unlabelled=[unlabelled_entry(path, patient_pattern) for path in paths])


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) of an image from its header, without decoding pixels."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".dcm", ".dicom", ""):
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["Rows", "Columns"])
            return int(ds.Columns), int(ds.Rows)
        with Image.open(path) as image:
            return image.size
    except Exception as err:
        raise SourceError(f"{path}: cannot read the image header ({err})") from err


def dicom_patient_id(path: Path, default: str) -> str:
    """PatientID of a DICOM file's header, or ``default`` when the file or tag is absent."""
    if not path.is_file():
        return default
    ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["PatientID"])
    return str(ds.get("PatientID", "") or default)


def scale_boxes(boxes: list[list[float]], path: Path, box_space: float | None) -> list[list[float]]:
    """Boxes given in a ``box_space`` x ``box_space`` frame, rescaled to the image's own pixels."""
    if box_space is None or not boxes:
        return boxes
    width, height = image_size(path)
    sx, sy = width / box_space, height / box_space
    return [[round(x1 * sx, 3), round(y1 * sy, 3), round(x2 * sx, 3), round(y2 * sy, 3)] for x1, y1, x2, y2 in boxes]


def findings_vector(labels: str, where: str) -> list[int]:
    """NIH ``Finding Labels`` ("A|B" or "No Finding") as a 0/1 vector over :data:`NIH_FINDINGS`."""
    names = [name.strip() for name in labels.split("|") if name.strip()]
    if names == ["No Finding"]:
        return [0] * len(NIH_FINDINGS)
    unknown = [name for name in names if name not in NIH_FINDINGS]
    if unknown or not names:
        raise SourceError(
            f"{where}: unknown finding(s) {unknown or [labels]}; expected {list(NIH_FINDINGS)} or 'No Finding'"
        )
    return [int(name in names) for name in NIH_FINDINGS]


def _float(value: str, where: str, column: str) -> float:
    try:
        number = float(value)
    except ValueError:
        raise SourceError(f"{where}: {column} is not a number: {value!r}") from None
    if number != number or number in (float("inf"), float("-inf")):
        raise SourceError(f"{where}: {column} is {value!r}")
    return number


def read_nih_boxes(bbox_list: str | Path) -> dict[str, list[tuple[list[float], str]]]:
    """NIH ``BBox_List_2017.csv``: image name to (xyxy box in the 1024 frame, finding) pairs."""
    _, rows = read_csv(bbox_list, ["Image Index", "Finding Label"])
    boxes: dict[str, list[tuple[list[float], str]]] = defaultdict(list)
    for line, row in enumerate(rows, start=2):
        where = f"{bbox_list} line {line}"
        if len(row) < 6:
            raise SourceError(f"{where}: expected image, finding and x, y, w, h; got {row}")
        x, y, w, h = (_float(v, where, c) for v, c in zip(row[2:6], ("x", "y", "w", "h")))
        if w <= 0 or h <= 0:
            raise SourceError(f"{where}: box width/height must be positive, got w={w:g} h={h:g}")
        boxes[row[0].strip()].append(([x, y, x + w, y + h], row[1].strip()))
    return boxes


def read_rsna_boxes(labels_csv: str | Path) -> dict[str, list[list[float]]]:
    """RSNA ``stage_2_train_labels.csv``: patientId to xyxy boxes (``[]`` for Target 0, an annotated negative)."""
    header, rows = read_csv(labels_csv, ["patientId", "x", "y", "width", "height", "Target"])
    col = {name: header.index(name) for name in ("patientId", "x", "y", "width", "height", "Target")}
    boxes: dict[str, list[list[float]]] = {}
    for line, row in enumerate(rows, start=2):
        where = f"{labels_csv} line {line}"
        pid, target = row[col["patientId"]].strip(), row[col["Target"]].strip()
        found = boxes.setdefault(pid, [])
        if target == "0":
            if found:
                raise SourceError(f"{where}: patient {pid} has Target 0 and boxes")
            continue
        if target != "1":
            raise SourceError(f"{where}: Target must be 0 or 1, got {target!r}")
        x, y, w, h = (_float(row[col[c]], where, c) for c in ("x", "y", "width", "height"))
        if w <= 0 or h <= 0:
            raise SourceError(f"{where}: box width/height must be positive, got width={w:g} height={h:g}")
        found.append([x, y, x + w, y + h])
    return boxes


def read_mapping(path: str | Path, key: str) -> dict[str, str]:
    """Two-column CSV (``key`` and one more column) as a dict, e.g. RSNA patientId to NIH ``Image Index``."""
    header, rows = read_csv(path, [key])
    value = 1 - header.index(key)
    return {row[header.index(key)].strip(): row[value].strip() for row in rows if row}


def read_nih_map(path: str | Path) -> dict[str, str]:
    """A CSV mapping another dataset's ids (RSNA patientId, SIIM ImageId, ...) to NIH ``Image Index``: the
    "Image Index" column and one other (the id)."""
    header, rows = read_csv(path, ["Image Index"])
    if len(header) != 2:
        raise SourceError(f"{path}: expected two columns, an id and 'Image Index'; header is {header}")
    target = header.index("Image Index")
    mapping: dict[str, str] = {}
    for line, row in enumerate(rows, start=2):
        if not row:
            continue
        if len(row) != 2 or nih_patient(row[target].strip()) is None:
            raise SourceError(
                f"{path} line {line}: expected an id and an NIH Image Index like 00000001_000.png, got {row}"
            )
        mapping[row[1 - target].strip()] = row[target].strip()
    return mapping


def _mapped_patient(entry: dict[str, Any], image_index: str | None) -> dict[str, Any]:
    """``entry`` with its NIH ``nih_image`` and, as ``patient_id``, the NIH patient, when ``image_index`` is one."""
    patient = nih_patient(image_index) if image_index else None
    if patient is not None:
        entry["nih_image"], entry["patient_id"] = image_index, patient
    return entry


def nih(
    data_entry: str | Path,
    images_dir: str | Path,
    bbox_list: str | Path | None = None,
    rsna_labels: str | Path | None = None,
    rsna_map: str | Path | None = None,
    views: Sequence[str] = ("PA", "AP"),
    box_space: float = 1024.0,
    on_missing: OnMissing = "error",
    unlabelled: bool = False,
) -> SourceResult:
    """NIH ChestX-ray14 from ``Data_Entry_2017.csv``: 14-finding vectors, NIH boxes, and RSNA boxes via a map.

    ``bbox_list`` adds NIH boxes (finding names as classes); ``rsna_labels`` + ``rsna_map`` (RSNA patientId to
    NIH ``Image Index``) add RSNA "opacity" boxes. Both are in a ``box_space`` frame, scaled to each image.
    With ``unlabelled``, the images under ``images_dir`` that no kept row labels become unlabelled entries.
    """
    header, rows = read_csv(data_entry, ["Image Index", "Finding Labels", "Patient ID", "View Position"])
    col = {name: header.index(name) for name in ("Image Index", "Finding Labels", "Patient ID", "View Position")}
    nih_boxes = read_nih_boxes(bbox_list) if bbox_list else {}
    rsna_boxes: dict[str, list[list[float]]] = {}
    if rsna_labels:
        if not rsna_map:
            raise SourceError("rsna_labels needs rsna_map (RSNA patientId to NIH Image Index)")
        to_nih = read_mapping(rsna_map, "patientId")
        rsna_boxes = {to_nih[pid]: boxes for pid, boxes in read_rsna_boxes(rsna_labels).items() if pid in to_nih}
    allowed = {v.upper() for v in views}
    index = ImageIndex(images_dir, on_missing)
    entries = []
    for line, row in enumerate(rows, start=2):
        if row[col["View Position"]].strip().upper() not in allowed:
            continue
        name = row[col["Image Index"]].strip()
        cls = findings_vector(row[col["Finding Labels"]], f"{data_entry} line {line} ({name})")
        path = index.find(name)
        if path is None:
            continue
        entry: dict[str, Any] = {"image": str(path), "patient_id": row[col["Patient ID"]].strip(), "cls": cls}
        if name in nih_boxes or name in rsna_boxes:
            labelled = nih_boxes.get(name, []) + [(box, "opacity") for box in rsna_boxes.get(name, [])]
            entry["boxes"] = scale_boxes([box for box, _ in labelled], path, box_space)
            entry["box_labels"] = [label for _, label in labelled]
        entries.append(entry)
    result = index.result(entries, data_entry)
    result.unlabelled = unreferenced(index, entries) if unlabelled else []
    return result


def rsna(
    labels_csv: str | Path,
    images_dir: str | Path,
    image_map: str | Path | None = None,
    box_space: float = 1024.0,
    on_missing: OnMissing = "error",
    nih_map: str | Path | None = None,
) -> SourceResult:
    """RSNA Pneumonia: "opacity" boxes per image (``{patientId}.dcm``, or the file ``image_map`` names).

    RSNA gives each image its own patientId, but its images are NIH ChestX-ray14 images, several of one NIH
    patient: where ``nih_map`` (patientId to NIH Image Index), or an ``image_map`` naming NIH images, tells the
    NIH image, the NIH patient becomes ``patient_id`` (:func:`_mapped_patient`).
    """
    mapping = read_mapping(image_map, "patientId") if image_map else {}
    to_nih = read_nih_map(nih_map) if nih_map else {}
    index = ImageIndex(images_dir, on_missing)
    entries = []
    for pid, boxes in read_rsna_boxes(labels_csv).items():
        path = index.find(mapping[pid]) if pid in mapping else index.find(pid, by_stem=True)
        if path is None:
            continue
        patient = dicom_patient_id(path, pid) if path.suffix.lower() == ".dcm" else pid
        entry = {"image": str(path), "patient_id": patient, "boxes": scale_boxes(boxes, path, box_space),
                 "box_labels": ["opacity"] * len(boxes)}
        entries.append(_mapped_patient(entry, to_nih.get(pid) or mapping.get(pid)))
    return index.result(entries, labels_csv)


def read_siim_rle(rle_csv: str | Path) -> dict[str, list[str]]:
    """SIIM ``train-rle.csv``: ImageId to its encodings (rows of one image are a union; ``-1`` rows add none)."""
    header, rows = read_csv(rle_csv, ["ImageId", "EncodedPixels"])
    image_col, rle_col = header.index("ImageId"), header.index("EncodedPixels")
    masks: dict[str, list[str]] = {}
    for line, row in enumerate(rows, start=2):
        image_id, rle = row[image_col].strip(), row[rle_col].strip()
        try:
            pairs = parse_rle(rle)
        except RLEError as err:
            raise SourceError(f"{rle_csv} line {line} ({image_id}): {err}") from err
        found = masks.setdefault(image_id, [])
        if len(pairs):
            found.append(rle)
    return masks


def siim(
    rle_csv: str | Path, images_dir: str | Path, on_missing: OnMissing = "error", nih_map: str | Path | None = None
) -> SourceResult:
    """SIIM-ACR pneumothorax: DICOM ``{ImageId}.dcm`` found anywhere under ``images_dir``, masks kept as RLE.

    ``cls`` grades only Pneumothorax (1 when the image has a mask); other findings are unknown. ``nih_map``
    (ImageId to NIH Image Index) makes the NIH patient the ``patient_id`` of the images it maps.
    """
    to_nih = read_nih_map(nih_map) if nih_map else {}
    index = ImageIndex(images_dir, on_missing)
    position = NIH_FINDINGS.index("Pneumothorax")
    entries = []
    for image_id, rles in read_siim_rle(rle_csv).items():
        path = index.find(image_id, by_stem=True)
        if path is None:
            continue
        cls = [UNKNOWN_LABEL] * len(NIH_FINDINGS)
        cls[position] = int(bool(rles))
        patient = dicom_patient_id(path, image_id)
        entry = {"image": str(path), "patient_id": patient, "cls": cls, "mask_rle": rles}
        entries.append(_mapped_patient(entry, to_nih.get(image_id)))
    return index.result(entries, rle_csv)


def covid_pneumonia(finding: str) -> int:
    """Pneumonia label of a COVID-19 collection finding: 1, 0 for "No Finding", else unknown."""
    parts = {part.strip().lower() for part in re.split(r"[/,]", finding)}
    if parts == {"no finding"}:
        return 0
    if any("pneumonia" in part or part in PNEUMONIA_CAUSES for part in parts):
        return 1
    return UNKNOWN_LABEL


def covid(
    metadata_csv: str | Path,
    images_dir: str | Path | None = None,
    masks_dir: str | Path | None = None,
    views: Sequence[str] = ("PA", "AP"),
    on_missing: OnMissing = "error",
    unlabelled: bool = False,
) -> SourceResult:
    """COVID-19 image data collection: X-rays whose view starts with one of ``views`` ("AP Supine" is AP).

    ``cls`` grades only Pneumonia (:func:`covid_pneumonia`); the raw ``finding`` is kept. A lung mask with the
    image's stem in ``masks_dir`` becomes ``mask`` (entries without one are unlabelled for segmentation). With
    ``unlabelled``, the images under ``images_dir`` that no kept row describes become unlabelled entries.
    """
    header, rows = read_csv(metadata_csv, ["patientid", "finding", "view", "modality", "filename"])
    col = {name: header.index(name) for name in ("patientid", "finding", "view", "modality", "filename")}
    index = ImageIndex(images_dir or Path(metadata_csv).parent / "images", on_missing)
    masks = {stem(p): p for p in Path(masks_dir).iterdir()} if masks_dir else {}
    allowed = {v.upper() for v in views}
    position = NIH_FINDINGS.index("Pneumonia")
    entries = []
    for row in rows:
        view = row[col["view"]].strip().upper().split()
        if row[col["modality"]].strip() != "X-ray" or not view or view[0] not in allowed:
            continue
        path = index.find(row[col["filename"]].strip())
        if path is None:
            continue
        cls = [UNKNOWN_LABEL] * len(NIH_FINDINGS)
        cls[position] = covid_pneumonia(row[col["finding"]])
        entry: dict[str, Any] = {"image": str(path), "patient_id": row[col["patientid"]].strip(), "cls": cls,
                                 "finding": row[col["finding"]].strip()}
        if stem(path) in masks:
            entry["mask"] = str(masks[stem(path)])
        entries.append(entry)
    result = index.result(entries, metadata_csv)
    result.unlabelled = unreferenced(index, entries) if unlabelled else []
    return result


def folder(
    images_dir: str | Path, masks_dir: str | Path | None = None, patient_pattern: str | None = None
) -> SourceResult:
    """Any folder of images; masks matched by stem; patient id = first group of ``patient_pattern`` on the stem.

    Without ``patient_pattern`` each image is its own patient. Images without a mask carry no mask label.
    """
    index = ImageIndex(images_dir)
    masks = ImageIndex(masks_dir).by_stem if masks_dir else {}
    pattern = re.compile(patient_pattern) if patient_pattern else None
    entries = []
    for name, path in sorted(index.by_stem.items()):
        patient = name
        if pattern:
            match = pattern.search(name)
            if not match:
                raise SourceError(f"{path}: patient_pattern {patient_pattern!r} does not match the file name")
            patient = match.group(1) if match.groups() else match.group(0)
        entry: dict[str, Any] = {"image": str(path), "patient_id": patient}
        if name in masks:
            entry["mask"] = str(masks[name])
        entries.append(entry)
    return SourceResult(entries)


def index_box_classes(entries: list[dict[str, Any]], merge_into: str | None = None) -> list[str]:
    """Replace box class names by indices into the returned class list (sorted names, or ``[merge_into]``)."""
    if merge_into is not None:
        classes = [merge_into]
    else:
        classes = sorted({label for e in entries for label in e.get("box_labels", [])})
    for entry in entries:
        if "box_labels" in entry:
            entry["box_labels"] = [0 if merge_into is not None else classes.index(n) for n in entry["box_labels"]]
    return classes
