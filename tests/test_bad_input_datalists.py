"""Bad datalists and leaking splits: each ends in the good entries or an error that names the file or field, and a
patient in more than one split is refused, across datasets through the known NIH mappings too."""

from __future__ import annotations

import csv
import importlib.util
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from bundle.data import DatalistError, check_datalist, check_splits, sources
from bundle.data.splits import nih_patient

from .conftest import ROOT, SHARED

DATA = SHARED / "data"
NIH = DATA / "nih1000"
RSNA_MAP = NIH / "rsna" / "patient_to_nih.csv"
needs_data = pytest.mark.skipif(not DATA.is_dir(), reason=f"real samples not found at {DATA}")


def _prepare_module() -> Any:
    spec = importlib.util.spec_from_file_location("prepare_cli", ROOT / "scripts" / "prepare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write(path: Path, content: Any) -> Path:
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return path


def _image(folder: Path, name: str = "i.png", seed: int = 0) -> str:
    """A 64 x 64 grey PNG with varying pixels."""
    pixels = np.random.default_rng(seed).integers(0, 255, (64, 64), dtype=np.uint8)
    Image.fromarray(pixels).save(folder / name)
    return str(folder / name)


def _mask(folder: Path, size: int, value: int = 0) -> str:
    Image.fromarray(np.full((size, size), value, np.uint8)).save(folder / f"m{size}_{value}.png")
    return str(folder / f"m{size}_{value}.png")


# --- the datalist as a whole ------------------------------------------------------------------------------------

WHOLE: dict[str, tuple[Callable[[Path], Path], str]] = {
    "missing": (lambda p: p, "datalist not found"),
    "not_json": (lambda p: _write(p, '{"training": [\n  {"image": "a.png"},\n]}'),
                 "not valid JSON: Expecting value at line 3, column 1"),
    "binary": (lambda p: (p.write_bytes(b"\x89PNG\r\n\x1a\n\xff\xfe"), p)[1], "not a text file (not UTF-8)"),
    "top_level_array": (lambda p: _write(p, [{"image": "a.png"}]), "a datalist is a JSON object"),
    "training_is_object": (lambda p: _write(p, {"training": {"image": "a.png"}}),
                           "'training' must be a list of entries, got a JSON object"),
    "training_empty": (lambda p: _write(p, {"training": [], "validation": [{"image": "a.png"}]}),
                       "'training' is empty"),
    "no_training": (lambda p: _write(p, {"validation": [{"image": "a.png"}]}),
                    "no 'training' list (has: ['validation'])"),
}


@pytest.mark.parametrize("case", list(WHOLE))
def test_unusable_datalist_is_named_with_its_problem(case: str, tmp_path: Path) -> None:
    build, problem = WHOLE[case]
    path = build(tmp_path / "datalist.json")
    for on_error in ("raise", "skip"):
        with pytest.raises(DatalistError) as err:
            check_datalist(path, "training", on_error=on_error)
        assert str(err.value).startswith(f"{path}: {problem}"), str(err.value)
        assert "\n" not in str(err.value)


# --- one bad entry next to a good one: (entry builder, start of its report line after "training[1]") ------------

def _good(folder: Path) -> dict[str, Any]:
    return {"image": _image(folder, "good.png", 1), "patient_id": "1", "cls": [0] * 14}


BAD_ENTRY: dict[str, tuple[Callable[[Path], Any], str]] = {
    "entry_is_string": (lambda t: "b.png", ": must be an object like"),
    "image_is_number": (lambda t: {"image": 12, "patient_id": "2"}, ": 'image' must be a file path (a string), got 12"),
    "image_missing": (lambda t: {"patient_id": "2"}, ": 'image' must be a file path (a string), got None"),
    "mask_is_list": (lambda t: {"image": _image(t), "mask": ["m.png"]}, ": 'mask' must be a file path (a string)"),
    "patient_id_null": (lambda t: {"image": _image(t), "patient_id": None},
                        ": 'patient_id' must be a non-empty string or an integer, got None"),
    "mask_rle_is_string": (lambda t: {"image": _image(t), "mask_rle": "1 2"},
                           ": 'mask_rle' must be a list of RLE strings, got '1 2'"),
    "image_file_missing": (lambda t: {"image": str(t / "absent.png"), "patient_id": "2"},
                           " {t}/absent.png: entry (patient 2) 'image': {t}/absent.png: file not found"),
    "mask_file_missing": (lambda t: {"image": _image(t), "patient_id": "2", "mask": str(t / "nomask.png")},
                          " {t}/i.png: entry (patient 2) 'mask': {t}/nomask.png: file not found"),
    "image_not_an_image": (lambda t: {"image": str(_write(t / "x.png", "oops")), "patient_id": "2"},
                           " {t}/x.png: entry (patient 2) 'image': {t}/x.png: not a PNG file"),
    "image_constant": (lambda t: {"image": _mask(t, 64, 9), "patient_id": "2"},
                       " {t}/m64_9.png: entry (patient 2) 'image': {t}/m64_9.png: has no variation"),
    "cls_wrong_length": (lambda t: {"image": _image(t), "cls": [0, 1, 0]},
                         " {t}/i.png: {t}/i.png: 'cls' must have 14 values, got shape (3,)"),
    "cls_nan": (lambda t: {"image": _image(t), "cls": [0, 0, float("nan")] + [0] * 11},
                " {t}/i.png: {t}/i.png: 'cls' has NaN at positions [2]"),
    "cls_value_2": (lambda t: {"image": _image(t), "cls": [2] + [0] * 13},
                    " {t}/i.png: {t}/i.png: 'cls' values must be 0, 1 or -1, got [2.0]"),
    "mask_other_size": (lambda t: {"image": _image(t), "mask": _mask(t, 32)},
                        " {t}/i.png: {t}/i.png: mask size (32, 32) differs from image size (64, 64)"),
    "box_outside": (lambda t: {"image": _image(t), "boxes": [[40, 10, 70, 20]], "box_labels": [0]},
                    " {t}/i.png: {t}/i.png: box 0 [40, 10, 70, 20] is empty or outside the 64x64 image"),
    "box_nan": (lambda t: {"image": _image(t), "boxes": [[1, 2, float("nan"), 9]], "box_labels": [0]},
                " {t}/i.png: {t}/i.png: 'boxes' has NaN or infinite coordinates"),
    "box_labels_short": (lambda t: {"image": _image(t), "boxes": [[1, 2, 5, 9], [3, 3, 8, 8]], "box_labels": [0]},
                         " {t}/i.png: {t}/i.png: 2 boxes but 1 box_labels"),
    "mask_rle_odd": (lambda t: {"image": _image(t), "mask_rle": ["1 2 3"]},
                     " {t}/i.png: 'mask_rle': RLE has an odd number of values (3)"),
    "duplicate": (lambda t: {"image": str(t / "good.png"), "patient_id": "1"},
                  " {t}/good.png: duplicate of training[0] (same image): remove one"),
}


@pytest.mark.parametrize("case", list(BAD_ENTRY))
def test_bad_entry_is_reported_by_index_and_skip_keeps_the_good_one(
    case: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    build, problem = BAD_ENTRY[case]
    good = _good(tmp_path)
    path = _write(tmp_path / "d.json", {"training": [good, build(tmp_path)]})  # NaN is written as JSON NaN
    with pytest.raises(DatalistError) as err:
        check_datalist(path, "training")
    lines = str(err.value).splitlines()
    assert lines[0] == f"{path}: 1 of 2 'training' entries are bad:"
    assert lines[1].strip().startswith("training[1]" + problem.format(t=tmp_path)), lines[1]
    kept = check_datalist(path, "training", on_error="skip")
    assert [e["image"] for e in kept] == [good["image"]]
    assert "training[1]" in caplog.text


GOOD_ENTRY: dict[str, Callable[[Path], dict[str, Any]]] = {
    "empty_mask": lambda t: {"image": _image(t), "patient_id": "2", "mask": _mask(t, 64)},
    "full_mask": lambda t: {"image": _image(t), "patient_id": "2", "mask": _mask(t, 64, 255)},
    "annotated_negative_rle": lambda t: {"image": _image(t), "patient_id": "2", "mask_rle": []},
    "annotated_negative_boxes": lambda t: {"image": _image(t), "patient_id": "2", "boxes": [], "box_labels": []},
    "integer_patient_id": lambda t: {"image": _image(t), "patient_id": 2, "cls": [-1] * 13 + [1]},
    "relative_path": lambda t: {"image": Path(_image(t)).name, "patient_id": "2"},
}


@pytest.mark.parametrize("case", list(GOOD_ENTRY))
def test_good_entry_passes_the_check(case: str, tmp_path: Path) -> None:
    entry = GOOD_ENTRY[case](tmp_path)
    path = _write(tmp_path / "d.json", {"training": [_good(tmp_path), entry]})
    kept = check_datalist(path, "training")
    assert len(kept) == 2 and kept[1]["image"] == str(tmp_path / "i.png")


# --- splits: a patient in more than one split is refused ------------------------------------------------------

def _entry(image: str, patient: Any = None, **extra: Any) -> dict[str, Any]:
    return {"image": image, **({} if patient is None else {"patient_id": patient}), **extra}


def _datalist(path: Path, source: str | None = None, **splits: list[dict[str, Any]]) -> Path:
    return _write(path, {**({"source": source} if source else {}), **splits})


def test_patient_in_training_and_validation_is_refused_with_ids_and_fix(tmp_path: Path) -> None:
    path = _datalist(tmp_path / "d.json", "folder", training=[_entry("a.png", "7"), _entry("b.png", "8")],
                     validation=[_entry("c.png", "7")], testing=[_entry("d.png", "9")])
    with pytest.raises(DatalistError) as err:
        check_splits(path)
    message = str(err.value)
    assert message.startswith(f"{path}: 1 patient(s) or image(s) are in more than one split: folder patient 7 "
                              "(training: d.json training[0]; validation: d.json validation[0])")
    assert "re-split by patient with scripts/prepare.py" in message and "\n" not in message


def test_same_image_in_two_splits_is_refused_even_with_other_patient_ids(tmp_path: Path) -> None:
    path = _datalist(tmp_path / "d.json", training=[_entry("x/a.png", "1")], testing=[_entry("x/../x/a.png", "2")])
    with pytest.raises(DatalistError, match=rf"image {tmp_path}/x/a.png \(training: d.json training\[0\]; testing"):
        check_splits(path)


def test_nih_patient_is_derived_from_the_image_index_without_patient_ids(tmp_path: Path) -> None:
    path = _datalist(tmp_path / "d.json", training=[_entry("00000003_000.png")], testing=[_entry("00000003_001.png")])
    with pytest.raises(DatalistError, match=r"NIH patient 3 \(training: d.json training\[0\]; testing: d.json testing"):
        check_splits(path)
    assert nih_patient("00000003_001.png") == "3" and nih_patient("3_001.png") is None


def test_clean_splits_and_equal_ids_of_other_sources_pass(tmp_path: Path) -> None:
    nih = _datalist(tmp_path / "nih.json", "nih", training=[_entry("00000001_000.png", "1")],
                    testing=[_entry("00000002_000.png", "2")])
    covid = _datalist(tmp_path / "covid.json", "covid", training=[_entry("c/1.jpg", "2")],
                      testing=[_entry("c/2.jpg", "1")])
    assert check_splits([nih, covid]) == 4


@needs_data
def test_rsna_to_nih_leak_across_datalists_is_refused_through_the_map(tmp_path: Path) -> None:
    pid, index = next(iter(sources.read_nih_map(RSNA_MAP).items()))
    rsna = _datalist(tmp_path / "rsna.json", "rsna", training=[_entry(f"rsna/{pid}.dcm", pid, boxes=[])])
    nih = _datalist(tmp_path / "nih.json", "nih", testing=[_entry(f"nih/{index}", nih_patient(index))])
    assert check_splits([rsna, nih]) == 2  # without the map the RSNA image is another patient
    with pytest.raises(DatalistError) as err:
        check_splits([rsna, nih], mappings=[RSNA_MAP])
    assert f"NIH patient {nih_patient(index)} (training: rsna.json training[0]; testing: nih.json testing[0])" in str(
        err.value
    )


def test_siim_to_nih_leak_is_refused_through_a_given_mapping(tmp_path: Path) -> None:
    mapping = _write(tmp_path / "siim_to_nih.csv", "ImageId,Image Index\n1.2.3.4,00000042_001.png\n")
    siim = _datalist(tmp_path / "siim.json", "siim", validation=[_entry("dicom/1.2.3.4.dcm", "anon-1", mask_rle=[])])
    nih = _datalist(tmp_path / "nih.json", "nih", training=[_entry("images/00000042_000.png", "42")])
    with pytest.raises(DatalistError, match=r"NIH patient 42 \(training: nih.json training\[0\]; validation: siim"):
        check_splits([nih, siim], mappings=mapping)


def test_nih_image_field_links_datalists_without_a_map(tmp_path: Path) -> None:
    rsna = _datalist(tmp_path / "rsna.json", "rsna", testing=[_entry("r/p.dcm", "5", nih_image="00000005_002.png")])
    nih = _datalist(tmp_path / "nih.json", "nih", training=[_entry("00000005_000.png", "5")])
    with pytest.raises(DatalistError, match=r"NIH patient 5 \(training: nih.json training\[0\]; testing: rsna.json"):
        check_splits([nih, rsna])


def test_bad_mapping_file_is_named(tmp_path: Path) -> None:
    path = _datalist(tmp_path / "d.json", training=[_entry("a.png", "1")])
    mapping = _write(tmp_path / "map.csv", "ImageId,Image Index\nabc,not-an-index.png\n")
    with pytest.raises(DatalistError, match=rf"^{mapping} line 2: expected an id and an NIH Image Index"):
        check_splits(path, mappings=[mapping])


# --- the prepare readers never write a leaking split; validate refuses one ------------------------------------

@needs_data
def test_prepared_rsna_splits_by_nih_patient_and_split_like_keeps_nih_splits(tmp_path: Path) -> None:
    prepare = _prepare_module().Prepare()
    nih, rsna, mixed = tmp_path / "nih.json", tmp_path / "rsna.json", tmp_path / "rsna_like.json"
    prepare.nih(str(NIH / "Data_Entry_2017.csv"), str(NIH / "images"), str(nih), seed=0)
    rsna_args = (str(NIH / "rsna" / "stage_2_train_labels.csv"), str(NIH / "images"))
    prepare.rsna(*rsna_args, str(rsna), image_map=str(RSNA_MAP), fractions="0.5,0.25,0.25", seed=1)
    content = json.loads(rsna.read_text())
    with open(RSNA_MAP, newline="") as handle:
        mapped = {row["Image Index"] for row in csv.DictReader(handle)}
    entries = [e for split in ("training", "validation", "testing") for e in content[split]]
    assert {Path(e["image"]).name for e in entries} <= mapped and len(entries) > 100
    assert all(e["patient_id"] == nih_patient(e["nih_image"]) == nih_patient(e["image"]) for e in entries)
    assert check_splits(rsna) == len(entries)  # several RSNA patientIds of one NIH patient share a split
    with pytest.raises(DatalistError, match="more than one split: NIH patient"):
        check_splits([nih, rsna])  # split apart from NIH: mixing them leaks
    prepare.rsna(*rsna_args, str(mixed), image_map=str(RSNA_MAP), split_like=str(nih), seed=1)
    assert check_splits([nih, mixed]) == len(entries) + sum(len(json.loads(nih.read_text())[k]) for k in
                                                            ("training", "validation", "testing"))


@needs_data
def test_validate_refuses_a_leak_with_other_datalists_and_non_json(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    prepare = _prepare_module().Prepare()
    images = sorted((NIH / "images").glob("00000003_*.png"))[:2]
    one = _datalist(tmp_path / "one.json", "nih", training=[_entry(str(images[0]), "3")])
    two = _datalist(tmp_path / "two.json", "nih", testing=[_entry(str(images[1]), "3")])
    prepare.validate(str(one))
    with pytest.raises(SystemExit) as exit_code:
        prepare.validate(str(one), with_datalists=str(two), mappings=str(RSNA_MAP))
    out = capsys.readouterr().out
    assert exit_code.value.code == 1 and "1 problem(s)" in out
    assert "splits: 1 patient(s) or image(s) are in more than one split: NIH patient 3 (training: one.json" in out
    with pytest.raises(SystemExit):
        prepare.validate(str(_write(tmp_path / "bad.json", "{training: []}")))
    assert f"{tmp_path}/bad.json: not valid JSON: Expecting property name enclosed in double quotes at line 1" in (
        capsys.readouterr().out
    )
