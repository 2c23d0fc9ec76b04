"""The bundle as a MONAI Label model: MONAI Label's own BundleInferTask / BundleTrainTask, run in .venv-monailabel.

MONAI Label is not installed in the main environment (its requirements replace torch with a CUDA build);
``scripts/ci/setup_monailabel.sh`` makes the venv and ``scripts/ci/monailabel_driver.py`` runs the tasks there.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.bundle import ConfigParser
from PIL import Image

from bundle.data import NIH_FINDINGS
from bundle.decisions import DecisionPolicy, validate_record
from bundle.networks import MultiCheXNet
from bundle.packaging import ModelPackage, save_model

from .conftest import ROOT, SHARED

VENV_PYTHON = ROOT / ".venv-monailabel" / "bin" / "python"
NIH_IMAGE = SHARED / "data" / "nih1000" / "images" / "00000001_000.png"
COVID_IMAGE = SHARED / "data" / "covid" / "images" / "41182_2020_203_Fig3_HTML.jpg"  # 685 x 756, not square


def _bundle_copy(dest: Path) -> Path:
    """The bundle's code and configs copied to ``dest`` (MONAI Label loads a bundle from its folder)."""
    ignore = shutil.ignore_patterns("__pycache__")
    for part in ("configs", "bundle"):
        shutil.copytree(ROOT / part, dest / part, ignore=ignore)
    (dest / "models").mkdir()
    return dest


def _parse(bundle_dir: Path) -> ConfigParser:
    parser = ConfigParser()
    parser.read_config(str(bundle_dir / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle_dir)
    return parser


def _expected_mask(parser: ConfigParser, net: torch.nn.Module, image: Path) -> np.ndarray:
    """The lesion mask as rows x columns, from the bundle's ``preprocessing`` and ``inferer`` run here."""
    sample = parser.get_parsed_content("preprocessing")({"image": str(image)})
    with torch.no_grad():
        seg = parser.get_parsed_content("inferer")(sample["image"][None], net)["seg"]
    size = [int(s) for s in sample["image"].meta["spatial_shape"]]
    prob = F.interpolate(torch.sigmoid(seg), size=size, mode="bilinear")[0, 0]
    return (prob > 0.5).numpy().T


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """MONAI Label's tasks run on a bundle copy with a seeded checkpoint, on a real NIH PNG and COVID JPEG."""
    if not VENV_PYTHON.is_file():
        pytest.skip(f"MONAI Label venv not found at {VENV_PYTHON}; run scripts/ci/setup_monailabel.sh")
    if not (NIH_IMAGE.is_file() and COVID_IMAGE.is_file()):
        pytest.skip(f"real chest X-rays not found under {SHARED / 'data'}")
    work = tmp_path_factory.mktemp("monailabel")
    bundle_dir = _bundle_copy(work / "multichexnet")
    parser = _parse(bundle_dir)
    torch.manual_seed(0)
    net = MultiCheXNet(num_anchors=4).eval()
    covid = parser.get_parsed_content("preprocessing")({"image": str(COVID_IMAGE)})["image"]
    with torch.no_grad():  # shift the random mask logits so that about half of the COVID image is lesion
        median = float(net(covid.as_tensor()[None])["seg"].median())
        [conv for conv in net.seg_head.modules() if isinstance(conv, torch.nn.Conv2d)][-1].bias -= median
        net.det_head.cls_subnet.cls_logits.bias.zero_()  # box scores near 0.5 instead of the 0.01 prior: boxes
    policy = DecisionPolicy.default(NIH_FINDINGS, (128, 128)).override(gates={"det_gate": 0.0, "seg_gate": 0.0})
    package = ModelPackage(net.init_args, parser.get_parsed_content("detector").init_args, policy)
    save_model(bundle_dir / "models" / "model.pt", net.state_dict(), package)  # every head runs
    images = [NIH_IMAGE, COVID_IMAGE]
    out = work / "out"
    result = subprocess.run(
        [str(VENV_PYTHON), "scripts/ci/monailabel_driver.py", str(bundle_dir), str(out), *map(str, images)],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    report = json.loads((out / "report.json").read_text())
    report["expected"] = [_expected_mask(parser, net, image) for image in images]
    report["bundle_dir"] = str(bundle_dir)
    return report


def test_venv_uses_main_torch(served: dict[str, Any]) -> None:
    assert served["versions"] == {"monailabel": "0.8.5", "torch": torch.__version__}


def test_infer_task_reads_bundle(served: dict[str, Any]) -> None:
    info = served["infer"]["info"]
    assert served["infer"]["valid"]
    assert info["type"] == "segmentation" and info["dimension"] == 2
    assert info["labels"] == {"lesion": 0}  # channel_def of the first network_data_format output, seg
    assert info["version"] == json.loads((ROOT / "configs" / "metadata.json").read_text())["version"]
    assert info["config"]["model_filename"] == ["model.pt"]


def test_label_map_is_binary_at_image_size(served: dict[str, Any]) -> None:
    for item, expected in zip(served["results"], served["expected"]):
        label = Path(item["label"])
        assert label.suffix == ".png"  # also for the JPEG input: postprocessing's default result_extension
        mask = np.asarray(Image.open(label))
        width, height = Image.open(item["image"]).size
        assert mask.shape == (height, width)
        assert set(np.unique(mask)) <= {0, 1}
        assert np.mean(mask != expected) < 1e-3  # the bundle's own preprocessing + inferer, run in-process
    covid_mask = np.asarray(Image.open(served["results"][1]["label"]))
    assert 0.2 < covid_mask.mean() < 0.8


def test_result_json_has_findings_gates_and_boxes(served: dict[str, Any]) -> None:
    for item in served["results"]:
        result = item["result"]
        width, height = Image.open(item["image"]).size
        assert list(result["findings"]) == list(NIH_FINDINGS)
        assert all(0.0 <= f["probability"] <= 1.0 for f in result["findings"].values())
        assert {g: (d["threshold"], d["head_ran"]) for g, d in result["gates"].items()} == {
            "det_gate": (0.0, True), "seg_gate": (0.0, True)
        }
        assert result["operating_points"]["gates"]["seg_gate"]["rule"] == "override"
        validate_record({k: v for k, v in result.items() if k not in ("label_names", "latencies", "centroids")})
        for box in result["boxes"]:
            x1, y1, x2, y2 = box["box"]
            assert 0 <= x1 <= x2 <= width and 0 <= y1 <= y2 <= height and box["label"] == "opacity"
        assert result["label_names"] == {"lesion": 0} and result["latencies"]["total"] > 0
    assert served["results"][1]["result"]["boxes"]


def test_train_task_reads_train_config(served: dict[str, Any]) -> None:
    train = served["train"]
    assert train["valid"] and train["bundle_root"] == served["bundle_dir"]
    assert all(train["keys"].values()), train["keys"]
    assert train["config"]["model_filename"] == ["model.pt"] and "max_epochs" in train["config"]


def test_postprocessing_without_monailabel(tmp_path: Path) -> None:
    """The config path MONAI Label takes (preprocessing, inferer, un-batching, postprocessing), run here."""
    bundle_dir = _bundle_copy(tmp_path / "multichexnet")
    image = tmp_path / "wide.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (48, 80), dtype=np.uint8)).save(image)
    parser = _parse(bundle_dir)
    torch.manual_seed(0)
    net = parser.get_parsed_content("network_def").eval()
    data = parser.get_parsed_content("preprocessing")({"image": str(image)})
    with torch.no_grad():
        heads = parser.get_parsed_content("inferer")(data["image"][None], net)
    data["pred"] = {key: value[0] for key, value in heads.items()}
    post = parser.get_parsed_content("postprocessing")
    out = post(data)
    assert out["pred"].shape == (80, 48) and out["pred"].dtype == np.uint8  # (W, H), MONAI's reader layout
    assert out["seg"].shape == (1, 80, 48) and out["result_extension"] == ".png"
    validate_record(out["result"])
    assert out["result"]["input"] == {"file": str(image), "image_size": [80, 48]}
    assert post({**data, "result_extension": ".nrrd"})["result_extension"] == ".nrrd"


def test_train_preprocessing_reads_monailabel_label_as_mask(tiny_datalist: Path) -> None:
    """BundleTrainTask replaces ``train#dataset#data`` with ``{"image", "label"}`` pairs: the label is the mask."""
    entry = next(e for e in json.loads(tiny_datalist.read_text())["training"] if e.get("mask"))
    root = tiny_datalist.parent
    parser = ConfigParser()
    parser.read_config(str(ROOT / "configs" / "train.json"))
    parser["image_size"] = [64, 64]
    pairs = [{"image": str(root / entry["image"]), "label": str(root / entry["mask"])}, {"image": str(root / entry["image"])}]
    loaded = [parser.get_parsed_content("validate#preprocessing")(pair) for pair in pairs]
    expected = np.asarray(Image.open(root / entry["mask"])).T > 0
    assert loaded[0]["has_seg"] and not loaded[1]["has_seg"]
    assert loaded[0]["mask"].shape == (1, 64, 64)
    np.testing.assert_array_equal(loaded[0]["mask"][0].numpy() > 0.5, expected)
