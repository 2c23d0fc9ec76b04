"""Folder inference as users run it: mixed formats and sizes, nested exports, broken files, reruns and resumes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from monai.transforms import Compose, Resized
from PIL import Image
from torch import nn

from bundle.data import LoadCXRd
from bundle.data.inference_data import InferenceDataset, inference_collate
from bundle.data.inputs import find_inputs
from bundle.decisions import DecisionPolicy, validate_record
from bundle.detection import CheXDetector
from bundle.engines.folder_inference import FolderInferenceEvaluator
from bundle.handlers import PredictionWriter
from bundle.networks import MultiCheXNet
from bundle.outputs import ErrorReport

from .conftest import ROOT, SHARED
from .images import write_dicom

DATA = SHARED / "data"
SIIM = sorted((DATA / "siim" / "dicom").glob("*.dcm"))
NIH_PNG = DATA / "nih_fullres" / "00000001_000.png"
COVID_JPEG = DATA / "covid" / "images" / "00870a9c.jpg"


def _png(path: Path, width: int, height: int, mode: str = "L") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    values = (np.arange(width * height) % 255).reshape(height, width)
    if mode == "I;16":
        Image.fromarray((values * 200).astype(np.uint16)).save(path)
    else:
        Image.fromarray(values.astype(np.uint8)).convert(mode).save(path)
    return path


def test_find_inputs_recurses_skips_hidden_and_keeps_names_apart(tmp_path: Path) -> None:
    _png(tmp_path / "a.png", 20, 10)
    write_dicom(tmp_path / "a.dcm", 20, 10)
    (tmp_path / "x").mkdir()
    (tmp_path / "y").mkdir()
    write_dicom(tmp_path / "x" / "1.dcm", 20, 10)
    write_dicom(tmp_path / "y" / "1.dcm", 20, 10)
    write_dicom(tmp_path / "y" / "SCAN0001", 20, 10)  # a PACS export: no suffix, DICOM by content
    write_dicom(tmp_path / "y" / "scan.IMA", 20, 10)
    (tmp_path / ".cache").mkdir()
    _png(tmp_path / ".cache" / "hidden.png", 20, 10)
    (tmp_path / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (tmp_path / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (tmp_path / "notes.txt").write_text("read me")
    (tmp_path / "y" / "README").write_text("no suffix and no DICOM header")
    found = find_inputs(tmp_path)
    names = {f.path.relative_to(tmp_path).as_posix(): f.name for f in found.images}
    assert names == {
        "a.png": "a.png", "a.dcm": "a.dcm", "x/1.dcm": "x/1", "y/1.dcm": "y/1", "y/SCAN0001": "y/SCAN0001",
        "y/scan.IMA": "y/scan",
    }
    assert sorted(p.relative_to(tmp_path).as_posix() for p in found.others) == ["notes.txt", "y/README"]
    assert find_inputs(tmp_path / "a.png").images[0].name == "a"
    with pytest.raises(FileNotFoundError, match="missing"):
        find_inputs(tmp_path / "missing")


def test_inference_dataset_reads_each_file_alone_and_collates_mixed_sizes(tmp_path: Path) -> None:
    files = [
        write_dicom(tmp_path / "small.dcm", 48, 80), write_dicom(tmp_path / "deep.dcm", 100, 60, bits=16),
        _png(tmp_path / "wide.png", 120, 40, "RGB"), _png(tmp_path / "grey16.png", 30, 50, "I;16"),
    ]
    (tmp_path / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    transform = Compose([LoadCXRd(keys="image"), Resized(keys="image", spatial_size=(64, 64), mode="area")])
    data = InferenceDataset(find_inputs(tmp_path).images, transform)
    assert len(data) == len(files) + 1
    batch = inference_collate([data[i] for i in range(len(data))])
    assert batch["image"].shape == (4, 1, 64, 64) and not hasattr(batch["image"], "meta")
    sizes = dict(zip((Path(s).name for s in batch["source"]), batch["original_size"]))
    assert sizes == {"small.dcm": (48, 80), "deep.dcm": (100, 60), "wide.png": (120, 40), "grey16.png": (30, 50)}
    (failure,) = batch["failed"]
    assert failure["name"] == "broken" and "broken.png" in failure["error"] and "\n" not in failure["error"]


class _Poisoned(nn.Module):
    """A network that fails on any batch holding a constant-bright image (a stand-in for any per-image failure)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        if bool((image.flatten(1).min(1).values > 0.9).any()):
            raise RuntimeError("cannot run on this image")
        return self.net(image)


def test_a_failing_image_is_retried_alone_and_its_neighbours_get_outputs(tmp_path: Path) -> None:
    torch.manual_seed(0)
    images = torch.rand(4, 1, 64, 64) * 0.5
    images[2] = 1.0
    batch = {
        "image": images, "source": [f"/in/{i}.png" for i in range(4)], "name": [str(i) for i in range(4)],
        "original_size": [(64, 64)] * 4, "failed": [{"source": "/in/bad.png", "name": "bad", "error": "unreadable"}],
    }
    detector = CheXDetector([[12, 12], [20, 20], [12, 20], [20, 12]], [1, 2, 4], [8, 16, 32])
    engine = FolderInferenceEvaluator(
        device=torch.device("cpu"), val_data_loader=[batch], network=_Poisoned(MultiCheXNet(num_anchors=4)),
        detector=detector,
    )
    engine.run()
    out = engine.state.output
    assert [item["name"] for item in out["items"]] == ["0", "1", "3"]
    assert [(f["name"], f["stage"]) for f in out["failed"]] == [("bad", "input"), ("2", "inference")]
    assert "cannot run on this image" in out["failed"][1]["error"]
    heads = out["items"][0]["heads"]
    assert heads["cls"].shape == (14,) and heads["seg"].shape == (1, 64, 64) and heads["boxes"].shape[1] == 4


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    models = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    torch.save(MultiCheXNet(num_anchors=4).state_dict(), models / "model.pt")
    return models


def _infer(input_dir: Path, out: Path, models: Path, *extra: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable, "-m", "monai.bundle", "run", "inference", "--config_file", "configs/inference.json",
            "--input_dir", str(input_dir), "--ckpt_dir", str(models), "--output_dir", str(out),
            "--image_size", "[64,64]", "--gate_thresholds", "{'det_gate': 0.0, 'seg_gate': 0.0}", *extra,
        ],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=600,
    )


def _mixed_folder(root: Path) -> tuple[dict[str, tuple[int, int]], list[str]]:
    """A folder users really have: good files (relative path -> (W, H)) and broken ones (relative paths)."""
    good = {}
    for rel, (w, h), bits in [("ct/a.dcm", (48, 80), 8), ("a.png", (40, 30), 0), ("x/1.dcm", (70, 50), 16),
                              ("y/1.dcm", (90, 90), 8), ("y/IM0001", (64, 32), 8)]:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        write_dicom(path, w, h, bits=bits) if bits else _png(path, w, h)
        good[rel] = (w, h)
    write_dicom(root / "a.dcm", 36, 36)  # same stem as a.png
    good["a.dcm"] = (36, 36)
    reals = {"siim.dcm": SIIM[0] if SIIM else None, "nih.png": NIH_PNG, "covid.jpg": COVID_JPEG}
    for rel, source in reals.items():
        if source is not None and source.is_file():
            shutil.copy(source, root / rel)
            good[rel] = Image.open(source).size if source.suffix != ".dcm" else (1024, 1024)
    (root / "truncated.dcm").write_bytes((root / "x" / "1.dcm").read_bytes()[:2000])
    write_dicom(root / "nopixels.dcm", 20, 20)
    ds = pydicom.dcmread(root / "nopixels.dcm")
    del ds.PixelData
    ds.save_as(root / "nopixels.dcm")
    (root / "fake.dcm").write_text("this is a text file, not a DICOM")
    (root / "notes.txt").write_text("reading list")
    (root / ".hidden.png").write_bytes(b"junk")
    return good, ["truncated.dcm", "nopixels.dcm", "fake.dcm", "notes.txt"]


@pytest.mark.parametrize("batch_size", [1, 4])
def test_folder_inference_gives_every_good_file_outputs_and_every_bad_one_a_line(
    tmp_path: Path, checkpoint: Path, batch_size: int
) -> None:
    good, bad = _mixed_folder(tmp_path / "in")
    out = tmp_path / "out"
    result = _infer(tmp_path / "in", out, checkpoint, "--dataloader#batch_size", str(batch_size))
    log = result.stdout + result.stderr
    assert result.returncode == 0, log[-4000:]
    errors = json.loads((out / "errors.json").read_text())
    assert sorted(Path(e["file"]).name for e in errors) == sorted(bad)
    assert all(e["problem"] and e["action"] and "\n" not in e["problem"] for e in errors)
    for rel, size in good.items():
        name = rel if rel in ("a.png", "a.dcm") else rel.rsplit(".", 1)[0] if "." in rel else rel
        record = json.loads((out / f"{name}_pred.json").read_text())
        validate_record(record)
        assert record["input"] == {"file": str(tmp_path / "in" / rel), "image_size": list(size)}
        assert Image.open(out / Path(name).parent / record["files"]["mask"]).size == size
        assert Image.open(out / Path(name).parent / record["files"]["overlay"]).size == size
    assert f"{len(good)} done, {len(bad)} failed, 0 skipped" in log


def test_a_rerun_skips_complete_outputs_and_resumes_an_interrupted_run(tmp_path: Path, checkpoint: Path) -> None:
    inputs, out = tmp_path / "in", tmp_path / "out"
    for i in range(5):
        _png(inputs / f"{i}.png", 40 + 8 * i, 40)
    assert _infer(inputs, out, checkpoint).returncode == 0
    (out / "3_pred.json").unlink()  # as if killed before the JSON, written last, of image 3
    (out / "4_mask.png").unlink()  # or after the JSON of 4, but with a file gone
    (out / ".0_pred.json.x1y2.tmp").write_bytes(b"half")
    result = _infer(inputs, out, checkpoint)
    log = result.stdout + result.stderr
    assert result.returncode == 0 and "2 done, 0 failed, 3 skipped (outputs complete) of 5 files" in log
    assert not list(out.glob(".*.tmp")) and (out / "3_pred.json").is_file() and (out / "4_mask.png").is_file()
    policy = DecisionPolicy.default([f"c{i}" for i in range(14)], (64, 64))
    writer = PredictionWriter(str(out), policy, ErrorReport(tmp_path / "errors.json"))
    assert writer.pending(find_inputs(inputs)) == [] and len(writer.pending(find_inputs(inputs), overwrite=True)) == 5
    (inputs / "2.png").write_bytes((inputs / "1.png").read_bytes())  # a changed source is redone
    assert [f.name for f in writer.pending(find_inputs(inputs))] == ["2"]


def test_one_dicom_alone_and_a_folder_of_only_bad_files(tmp_path: Path, checkpoint: Path) -> None:
    one = tmp_path / "one"
    one.mkdir()
    write_dicom(one / "only.dcm", 50, 70)
    result = _infer(one, tmp_path / "out1", checkpoint, "--dataloader#batch_size", "1")
    assert result.returncode == 0, (result.stdout + result.stderr)[-3000:]
    assert Image.open(tmp_path / "out1" / "only_mask.png").size == (50, 70)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "x.png").write_bytes(b"not a png")
    result = _infer(bad, tmp_path / "out2", checkpoint)
    assert result.returncode != 0 and "no input could be processed" in result.stdout + result.stderr
    assert json.loads((tmp_path / "out2" / "errors.json").read_text())[0]["file"] == str(bad / "x.png")
