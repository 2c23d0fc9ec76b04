"""Tests of the synthetic chest X-ray phantom generator and its demo data set."""

from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path

import numpy as np
import pytest
from monai.data import load_decathlon_datalist
from PIL import Image

from bundle.data.labels import NIH_FINDINGS
from bundle.data.synthetic import (
    DEMO_CLASSES,
    _render_patient,
    demo_inputs,
    generate_phantom,
    make_demo_dataset,
    render_phantom,
    sample_params,
)

SPLITS = ("training", "validation", "testing")
SMALL = {"num_train": 16, "num_val": 6, "num_test": 6, "size": 64}
PNEUMONIA, PNEUMOTHORAX = NIH_FINDINGS.index("Pneumonia"), NIH_FINDINGS.index("Pneumothorax")


def _entries(datalist: Path) -> list[dict]:
    content = json.loads(datalist.read_text())
    return [entry for split in SPLITS for entry in content[split]]


def _files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def phantoms() -> list:
    rng = np.random.default_rng(7)
    return [generate_phantom(rng) for _ in range(400)]


@pytest.fixture(scope="module")
def demo(tmp_path_factory) -> Path:
    return make_demo_dataset(tmp_path_factory.mktemp("demo") / "data", **SMALL, seed=3)


def test_same_seed_gives_identical_files(tmp_path):
    first = make_demo_dataset(tmp_path / "a", **SMALL, seed=1)
    second = make_demo_dataset(tmp_path / "b", **SMALL, seed=1)
    assert _files(first.parent) == _files(second.parent)
    other = make_demo_dataset(tmp_path / "c", **SMALL, seed=2)
    assert first.read_text() != other.read_text()
    assert _files(first.parent)["images/demo_00001.png"] != _files(other.parent)["images/demo_00001.png"]


def test_worker_processes_write_the_files_one_process_writes(tmp_path, monkeypatch):
    """The demo set is rendered on forked workers where the machine has several cores: the same bytes as in one
    process, the same datalist."""
    import bundle.data.synthetic as synthetic

    monkeypatch.setattr(synthetic.os, "cpu_count", lambda: 2)
    parallel = make_demo_dataset(tmp_path / "parallel", **SMALL, seed=4)
    monkeypatch.setattr(synthetic.os, "cpu_count", lambda: 1)
    serial = make_demo_dataset(tmp_path / "serial", **SMALL, seed=4)
    assert _files(parallel.parent) == _files(serial.parent)


def test_generate_phantom_is_deterministic():
    a, b = generate_phantom(np.random.default_rng(5)), generate_phantom(np.random.default_rng(5))
    for field in dataclasses.fields(a):
        np.testing.assert_array_equal(getattr(a, field.name), getattr(b, field.name))


def test_datalist_format_and_monai_loading(demo):
    content = json.loads(demo.read_text())
    assert content["synthetic"] is True
    assert content["classes"] == list(NIH_FINDINGS)
    assert content["det_classes"] == ["opacity"]
    assert content["generator"] == {**SMALL, "seed": 3, "version": 1}
    for split, wanted in zip(SPLITS, (SMALL["num_train"], SMALL["num_val"], SMALL["num_test"])):
        assert abs(len(content[split]) - wanted) <= 2
        for entry in load_decathlon_datalist(demo, data_list_key=split, base_dir=demo.parent):
            assert Path(entry["image"]).is_file() and Path(entry["mask"]).is_file()
            assert len(entry["cls"]) == len(NIH_FINDINGS) and len(entry["boxes"]) == len(entry["box_labels"])


def test_split_is_by_patient(tmp_path):
    datalist = make_demo_dataset(tmp_path / "d", num_train=60, num_val=20, num_test=20, size=32)
    content = json.loads(datalist.read_text())
    patients = [{entry["patient_id"] for entry in content[split]} for split in SPLITS]
    assert not (patients[0] & patients[1] or patients[0] & patients[2] or patients[1] & patients[2])
    counts = np.unique([entry["patient_id"] for entry in _entries(datalist)], return_counts=True)[1]
    assert counts.max() == 2 and (counts == 2).any() and (counts == 1).sum() > (counts == 2).sum()


def test_targets_are_consistent(phantoms):
    for sample in phantoms:
        size = sample.image.shape[1]
        assert sample.image.dtype == np.float32 and 0.0 <= sample.image.min() <= sample.image.max() <= 1.0
        assert set(np.unique(sample.cls)) <= {0, 1} and sample.cls.shape == (len(NIH_FINDINGS),)
        assert not sample.cls[[NIH_FINDINGS.index(n) for n in ("Atelectasis", "Edema", "Hernia")]].any()
        assert (sample.boxes[:, :2] >= 0).all() and (sample.boxes[:, 2:] <= size).all()
        assert (sample.boxes[:, 2:] > sample.boxes[:, :2]).all()
        assert (sample.box_labels == 0).all() and len(sample.box_labels) == len(sample.boxes)
        assert bool(sample.cls[PNEUMONIA]) == (len(sample.boxes) > 0)
        assert bool(sample.cls[PNEUMOTHORAX]) == bool(sample.mask.any())
        assert sample.mask.dtype == np.uint8 and set(np.unique(sample.mask)) <= {0, 1}


def test_boxes_cover_the_opacities():
    """Removing the opacities changes the image (almost) only inside the boxes, so boxes are not misplaced."""
    rng, checked = np.random.default_rng(11), 0
    while checked < 15:
        params = sample_params(rng)
        if not params.findings.opacities:
            continue
        sample = render_phantom(params)
        clean = render_phantom(dataclasses.replace(params, findings=dataclasses.replace(params.findings, opacities=())))
        gain = np.clip(sample.image - clean.image, 0.0, None)
        inside = np.zeros_like(gain, dtype=bool)
        for x1, y1, x2, y2 in sample.boxes.astype(int):
            inside[y1:y2, x1:x2] = True
            assert gain[y1:y2, x1:x2].mean() > 0.02
        assert gain[inside].sum() > 0.85 * gain.sum()
        checked += 1


def test_pneumothorax_mask_is_darker_lung(phantoms):
    """The air region is darker than the rest of the same image's lung band rows (x = column, y = row)."""
    for sample in (s for s in phantoms if s.mask.any()):
        rows = np.flatnonzero(sample.mask.any(axis=1))
        cols = np.flatnonzero(sample.mask.any(axis=0))
        band = np.zeros_like(sample.mask, dtype=bool)
        band[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = True
        assert sample.image[sample.mask > 0].mean() < sample.image[band & (sample.mask == 0)].mean()


def test_mask_side_follows_lung_side():
    """lungs[0] is the image-left lung: its pneumothorax mask lies in the left columns (x = column)."""
    rng, seen = np.random.default_rng(13), set()
    while len(seen) < 2:
        params = sample_params(rng)
        ptx = params.findings.pneumothorax
        if ptx is None:
            continue
        mask = render_phantom(params).mask
        centre_x = np.nonzero(mask)[1].mean()
        assert (centre_x < mask.shape[1] / 2) == (ptx.lung == 0)
        seen.add(ptx.lung)


def test_pngs_match_rendered_samples(demo):
    """PNGs read back with PIL equal the rendered arrays, row = y and column = x."""
    by_patient: dict[str, list[dict]] = {}
    for entry in sorted(_entries(demo), key=lambda e: e["image"]):
        by_patient.setdefault(entry["patient_id"], []).append(entry)
    for patient_id, entries in by_patient.items():
        samples = _render_patient(int(patient_id[1:]), len(entries), seed=3, size=SMALL["size"])
        for entry, sample in zip(entries, samples):
            image = np.asarray(Image.open(demo.parent / entry["image"]))
            mask = np.asarray(Image.open(demo.parent / entry["mask"]))
            assert image.dtype == np.uint8 and image.shape == sample.image.shape
            np.testing.assert_array_equal(image, np.round(sample.image * 255))
            np.testing.assert_array_equal(mask, sample.mask * 255)
            np.testing.assert_array_equal(np.array(entry["boxes"], dtype=np.float32).reshape(-1, 4), sample.boxes)
            assert entry["cls"] == sample.cls.tolist()


def test_reuse_does_not_rewrite(tmp_path, caplog):
    root = tmp_path / "demo"
    with caplog.at_level(logging.WARNING, logger="bundle.data.synthetic"):
        datalist = make_demo_dataset(root, **SMALL)
    assert any("SYNTHETIC demo data" in record.getMessage() for record in caplog.records)
    stamps = {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()}
    assert make_demo_dataset(root, **SMALL) == datalist
    assert {p: p.stat().st_mtime_ns for p in root.rglob("*") if p.is_file()} == stamps
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]  # no staging folder left behind


def test_changed_parameters_regenerate(tmp_path):
    root = tmp_path / "demo"
    make_demo_dataset(root, **SMALL)
    datalist = make_demo_dataset(root, **{**SMALL, "num_train": 8})
    content = json.loads(datalist.read_text())
    assert content["generator"]["num_train"] == 8
    assert len(list((root / "images").iterdir())) == sum(len(content[split]) for split in SPLITS)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["demo"]


def test_prevalence(phantoms):
    labels = np.stack([sample.cls for sample in phantoms])
    for name in DEMO_CLASSES:
        assert 0.10 <= labels[:, NIH_FINDINGS.index(name)].mean() <= 0.60, name
    assert (labels.sum(axis=1) == 0).mean() >= 0.20


def test_demo_inputs_are_the_first_test_images(demo):
    folder = demo_inputs(demo.parent, count=3, **SMALL, seed=3)
    testing = json.loads(demo.read_text())["testing"][:3]
    assert sorted(p.name for p in folder.iterdir()) == sorted(Path(e["image"]).name for e in testing)
    for entry in testing:
        assert (folder / Path(entry["image"]).name).read_bytes() == (demo.parent / entry["image"]).read_bytes()
    (folder / "stale.png").write_bytes(b"x")
    assert len(list(demo_inputs(demo.parent, count=2, **SMALL, seed=3).iterdir())) == 2
