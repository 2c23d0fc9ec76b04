"""The bundle's commands, run as users run them: train, evaluate, infer, export, verify metadata."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
import torch

from bundle.data import NIH_FINDINGS
from bundle.decisions import validate_record
from bundle.export import load_exported
from bundle.packaging import file_sha256, read_package

from .conftest import ROOT, SHARED

TINY = ["--image_size", "[64,64]", "--batch_size", "8"]


def _bundle(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(
        [sys.executable, "-m", "monai.bundle", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory, tiny_datalist: Path) -> dict[str, Path]:
    """Train the tiny configuration for two epochs through ``configs/train.json``."""
    work = tmp_path_factory.mktemp("run")
    paths = {"datalist": tiny_datalist, "ckpt": work / "models", "eval": work / "eval", "pred": work / "pred"}
    _bundle(
        "run", "training", "--config_file", "configs/train.json", "--datalist_file", str(tiny_datalist),
        "--ckpt_dir", str(paths["ckpt"]), "--output_dir", str(paths["eval"]), "--epochs", "2", "--val_interval", "1",
        *TINY,
    )
    return paths


def test_training_writes_checkpoint_and_events(trained: dict[str, Path]) -> None:
    state = torch.load(trained["ckpt"] / "model.pt", map_location="cpu", weights_only=True)
    package = read_package(trained["ckpt"] / "model.pt")
    assert package is not None and set(state) == {"model", "bundle"}
    package.network().load_state_dict(state["model"])  # the network the package describes takes the weights
    policy = package.policy
    assert policy.class_names == tuple(NIH_FINDINGS) and policy.image_size == (64, 64)
    assert all(p.rule == "default" for p in policy.findings.values())  # nothing chosen yet
    assert any(p.name.startswith("events.out.tfevents") for p in trained["eval"].iterdir())


def test_evaluate_prints_head_metrics(trained: dict[str, Path]) -> None:
    # heads other than the model file's in the config (as an older default would be): the file's network is built
    result = _bundle(
        "run", "evaluating", "--config_file", "['configs/train.json','configs/evaluate.json']",
        "--datalist_file", str(trained["datalist"]), "--ckpt_dir", str(trained["ckpt"]),
        "--output_dir", str(trained["eval"]), "--network_def#fpn_channels", "16", "--network_def#seg_skip_channels",
        "48", *TINY,
    )
    for name in ("val_auroc", "val_dice", "val_map", "val_mean"):
        assert f"'{name}'" in result.stdout
    assert (trained["eval"] / "metrics.csv").is_file()
    report = json.loads((trained["eval"] / "metrics.json").read_text())
    assert report["dataset"]["split"] == "testing" and report["dataset"]["images"] == 12
    assert report["bootstrap"]["resamples"] == 1000
    policy = report["policy"]  # the model file's own, as shipped by training: defaults everywhere, said so
    assert policy["source"] == str(trained["ckpt"] / "model.pt") and not policy["chosen_on_this_split"]
    assert set(policy["fallbacks"]) >= {f"findings/{n}" for n in NIH_FINDINGS} | {"gates/det_gate", "mask_threshold"}
    for name in ("cls/auroc_macro", "cls/f1_micro", "cls/ece_calibrated_macro", "seg/dice_mean_gated", "det/rsna_map",
                 "det/coco_map"):
        assert set(report["metrics"][name]) == {"value", "low", "high"}
    assert set(report["calibration"]["findings"]) == set(NIH_FINDINGS)
    assert (trained["eval"] / "predictions.npz").is_file()


def test_evaluate_uses_the_policy_chosen_on_validation(trained: dict[str, Path]) -> None:
    model, validation = trained["ckpt"] / "model.pt", trained["eval"].parent / "eval_validation"
    common = [
        "run", "evaluating", "--config_file", "['configs/train.json','configs/evaluate.json']",
        "--datalist_file", str(trained["datalist"]), "--ckpt_dir", str(trained["ckpt"]),
        "--bootstrap_resamples", "100", *TINY,
    ]
    weights = torch.load(model, map_location="cpu", weights_only=True)["model"]
    _bundle(*common, "--eval_split", "validation", "--choose_thresholds", "True", "--output_dir", str(validation))
    assert not (trained["ckpt"] / "thresholds.json").exists()  # one home: the model file
    chosen = json.loads((validation / "metrics.json").read_text())["policy"]
    assert chosen["written_to"] == str(model) and chosen["rules"]["findings"] == "max_f1"
    stored = read_package(model).policy
    for point in [*stored.findings.values(), *stored.gates.values(), stored.box_score, stored.mask_threshold]:
        assert point.rule in ("max_f1", "youden", "max_rsna_score", "max_mean_dice") and point.n_pos is not None
        assert point.chosen_on == date.today().isoformat() and point.dataset == f"{trained['datalist'].name}#validation"
    gate = stored.gates["det_gate"]  # 12 validation images: a rule without 10 positives keeps 0.5 and says so
    assert gate.fallback == (gate.n_pos < 10 or gate.n_neg < 10)
    if gate.fallback:
        assert gate.threshold == 0.5 and chosen["fallbacks"]["gates/det_gate"] == gate.reason
    after = torch.load(model, map_location="cpu", weights_only=True)["model"]
    assert all(torch.equal(weights[k], after[k]) for k in weights)  # only the policy was rewritten
    _bundle(*common, "--output_dir", str(trained["eval"]))
    report = json.loads((trained["eval"] / "metrics.json").read_text())
    assert report["policy"]["source"] == str(model) and not report["policy"]["chosen_on_this_split"]
    assert report["policy"]["settings"] == json.loads(json.dumps(stored.to_dict()))


def test_inference_needs_only_the_checkpoint_dir(trained: dict[str, Path], tmp_path: Path) -> None:
    """Network, image size, classes and the decision policy all come from the model file: no other override."""
    images = tmp_path / "images"
    images.mkdir()
    for source in sorted((trained["datalist"].parent / "images").iterdir())[:8]:
        shutil.copyfile(source, images / source.name)
    _bundle(
        "run", "inference", "--config_file", "configs/inference.json", "--input_dir", str(images),
        "--ckpt_dir", str(trained["ckpt"]), "--output_dir", str(trained["pred"]),
    )
    records = sorted(trained["pred"].glob("*_pred.json"))
    assert len(records) == 8
    policy = read_package(trained["ckpt"] / "model.pt").policy
    for path in records:
        record = json.loads(path.read_text())
        validate_record(record)
        assert record["model"]["input_size"] == [64, 64] and record["input"]["image_size"] == [64, 64]
        assert record["model"]["sha256"] == file_sha256(trained["ckpt"] / "model.pt")
        assert list(record["findings"]) == list(policy.class_names)
        for name, gate in record["gates"].items():
            assert gate["threshold"] == round(policy.gates[name].threshold, 6)
            assert gate["open"] == (gate["probability"] >= gate["threshold"] - 1e-6)
        for box in record["boxes"]:
            assert 0 <= box["box"][0] <= box["box"][2] <= 64 and box["score"] >= policy.box_score.threshold - 1e-6
        if not record["gates"]["det_gate"]["open"]:
            assert record["boxes"] == []
        assert (trained["pred"] / record["files"]["mask"]).is_file()


def test_export_torchscript_matches_eager(trained: dict[str, Path], tmp_path: Path) -> None:
    """The trained model file exports with its package; the TorchScript gives the eager network's outputs."""
    ts = tmp_path / "model.ts"
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "scripts/export_torchscript.py", "--ckpt_dir", str(trained["ckpt"]), "--filepath", str(ts)]
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    scripted, metadata, _, package = load_exported(str(ts))
    stored = read_package(trained["ckpt"] / "model.pt")
    assert package.state_dict() == stored.state_dict() and package.policy.image_size == (64, 64)
    assert metadata["network_data_format"]["inputs"]["image"]["num_channels"] == 1
    eager = stored.network().eval()
    eager.load_state_dict(torch.load(trained["ckpt"] / "model.pt", map_location="cpu", weights_only=True)["model"])
    image = torch.rand(2, 1, 64, 64)
    gates = package.policy.forward_gate_thresholds()
    with torch.no_grad():
        pairs = [(scripted(image), eager(image)),
                 (scripted.forward_gated(image, gates["det_gate"], gates["seg_gate"]),
                  eager.forward_gated(image, gates["det_gate"], gates["seg_gate"]))]
    for got, expected in pairs:
        assert set(expected) == set(got)
        for key in expected:
            torch.testing.assert_close(got[key], expected[key])


def test_verify_metadata() -> None:
    schema = SHARED / "schemas" / "meta_schema_20240725.json"
    if not schema.is_file():
        pytest.skip(f"MONAI metadata schema not found at {schema}")
    result = _bundle("verify_metadata", "--meta_file", "configs/metadata.json", "--filepath", str(schema))
    assert "metadata is verified with no error" in result.stdout + result.stderr


def test_training_resumes_from_checkpoint(trained: dict[str, Path]) -> None:
    assert (trained["ckpt"] / "checkpoint_epoch=2.pt").is_file()
    result = _bundle(
        "run", "training", "--config_file", "configs/train.json", "--datalist_file", str(trained["datalist"]),
        "--ckpt_dir", str(trained["ckpt"]), "--output_dir", str(trained["eval"]), "--epochs", "3",
        "--val_interval", "1", *TINY,
    )
    log = result.stdout + result.stderr
    assert "resumed from" in log and "epoch 2 of 3" in log
    assert "Epoch: 3/3" in log and "Epoch: 1/3" not in log and "Epoch: 2/3" not in log
    assert (trained["ckpt"] / "checkpoint_epoch=3.pt").is_file()
