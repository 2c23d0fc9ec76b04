"""The gaze model's pieces: the saliency head (``sal``), the dual encoder, the fusion classifier, the saliency loss,
saliency maps in the data path, the demo's synthetic gaze, and the staged protocol run through the bundle."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from bundle.data import LoadSaliencyd, add_demo_gaze, make_demo_dataset, multitask_collate
from bundle.data.gaze import SaliencyMapError, center_bias_map, load_saliency_map, save_saliency_map
from bundle.detection import CheXDetector
from bundle.explain import grad_cam, mass_inside
from bundle.losses import MultiTaskLoss, SaliencyLoss
from bundle.metrics.saliency import cc
from bundle.networks import BACKBONE_CHANNELS, DualEncoder, MultiCheXNet, transfer_network
from bundle.packaging import read_package

ROOT = Path(__file__).resolve().parents[1]


def test_saliency_head_is_a_distribution_on_the_shared_pass_and_scripts() -> None:
    torch.manual_seed(0)
    net = MultiCheXNet(saliency_head=True).eval()
    image = torch.rand(2, 1, 64, 96)
    calls = []
    hook = net.encoder.register_forward_hook(lambda *_: calls.append(1))
    with torch.no_grad():
        out = net(image)
        hook.remove()
        assert len(calls) == 1 and out["sal"].shape == (2, 1, 64, 96)
        torch.testing.assert_close(out["sal"].exp().sum(dim=(1, 2, 3)), torch.ones(2))
        assert set(net(image, ["sal"])) == {"sal"}
        gated = net.forward_gated(image, 1.1, 1.1)  # nothing passes the gates; the saliency map is never gated
        torch.testing.assert_close(gated["sal"], out["sal"])
        scripted = torch.jit.script(net)
        torch.testing.assert_close(scripted(image)["sal"], out["sal"])
    assert "sal" not in MultiCheXNet().eval()(image)


def test_saliency_map_keeps_float32_precision_under_bfloat16_autocast() -> None:
    """A near-uniform map (an untrained head's) stays a graded distribution: under CPU bf16 autocast the
    log-softmax of bfloat16 logits rounds every pixel of this 64 x 96 map to one value (its CC is then undefined)."""
    torch.manual_seed(0)
    net = MultiCheXNet(backbone="resnet18", saliency_head=True).eval()
    image = torch.rand(2, 1, 64, 96)
    with torch.no_grad():
        reference = net(image, ["sal"])["sal"]
        with torch.autocast("cpu", dtype=torch.bfloat16):
            sal = net(image, ["sal"])["sal"]
    assert sal.dtype == torch.float32
    torch.testing.assert_close(sal.exp().sum(dim=(1, 2, 3)), torch.ones(2))
    for low, full in zip(sal.flatten(1), reference.flatten(1)):
        assert low.unique().numel() > 50  # graded, as the float32 map is
        assert np.corrcoef(low.exp().numpy(), full.exp().numpy())[0, 1] > 0.99


def test_saliency_and_fusion_outputs_match_in_onnx_runtime(tmp_path: Path) -> None:
    ort = pytest.importorskip("onnxruntime")
    from bundle.onnx_export import export_onnx, output_names

    torch.manual_seed(0)
    net = MultiCheXNet(saliency_head=True, cls_fusion=[2, 3, 4]).eval()
    export_onnx(net, tmp_path / "gaze.onnx")
    names = list(output_names(net))
    assert names[-1] == "sal"
    image = torch.rand(1, 1, 64, 96)
    zero = np.array(0.0, np.float32)  # thresholds that pass every image
    feeds = {"image": image.numpy(), "det_threshold": zero, "seg_threshold": zero}
    got = dict(zip(names, ort.InferenceSession(str(tmp_path / "gaze.onnx")).run(names, feeds)))
    with torch.no_grad():
        ref = net(image)
    for key in ("cls", "sal", "seg"):
        torch.testing.assert_close(torch.from_numpy(got[key]), ref[key], atol=1e-4, rtol=1e-4)


def test_dual_encoder_concatenates_densenet201_and_se_resnet50() -> None:
    assert DualEncoder(("densenet201", "se_resnet50")).out_channels == tuple(
        a + b for a, b in zip(BACKBONE_CHANNELS["densenet201"], BACKBONE_CHANNELS["se_resnet50"])
    )
    torch.manual_seed(0)
    net = MultiCheXNet(encoders=["densenet201", "se_resnet50"], saliency_head=True, num_classes=3).eval()
    image = torch.rand(1, 1, 64, 64)
    with torch.no_grad():
        features = net.encoder(image)
        assert [f.shape[1] for f in features] == [128, 512, 1024, 2816, 3968]
        out = net(image)
        assert out["cls"].shape == (1, 3) and out["sal"].shape == (1, 1, 64, 64)
        rebuilt = MultiCheXNet(**net.init_args).eval()
        rebuilt.load_state_dict(net.state_dict())
        torch.testing.assert_close(rebuilt(image)["sal"], out["sal"])
    with pytest.raises(ValueError, match="DualEncoder takes two backbones"):
        DualEncoder(("densenet201",))


def test_fusion_classifier_reads_several_levels_and_the_saliency_map() -> None:
    torch.manual_seed(0)
    net = MultiCheXNet(backbone="resnet18", saliency_head=True, cls_fusion=[2, 3, 4]).eval()
    image = torch.rand(2, 1, 64, 64)
    with torch.no_grad():
        before = net(image, ["cls"])
        assert set(before) == {"cls", "sal"}  # cls needs the saliency map
        for p in net.sal_head.parameters():
            p.add_(0.5 * torch.randn_like(p))
        after = net(image, ["cls"])
    assert not torch.allclose(before["cls"], after["cls"])  # the map feeds the classifier
    assert net.cls_head.feats[0].in_features == 128 + 256 + 512 + 512
    moved = transfer_network(net, None, 2)  # transfer learning swaps dec alone, as for CheXCls
    assert moved.cls_head.dec.out_features == 2 and moved(image, ["cls"])["cls"].shape == (2, 2)
    with pytest.raises(ValueError, match="cls_fusion must name encoder levels 0-4"):
        MultiCheXNet(backbone="resnet18", cls_fusion=[5])


def test_grad_cam_follows_the_channel_the_logit_reads() -> None:
    """A classifier whose finding 0 reads channel 7 of the deepest level (and finding 1 nothing): Grad-CAM of 0 is
    that channel's map, upsampled and normalised; of 1 all zero; the network's mode is left as it was."""
    torch.manual_seed(0)
    net = MultiCheXNet(backbone="resnet18", num_classes=2, cls_hidden=4).train()
    feats, dec = net.cls_head.feats[1], net.cls_head.dec
    with torch.no_grad():
        for layer in (feats, dec):
            layer.weight.zero_()
            layer.bias.zero_()
        feats.weight[0, 7] = 1.0
        dec.weight[0, 0] = 2.0
    image = torch.rand(1, 1, 64, 64)
    cams = grad_cam(net, image, [0, 1])
    assert net.training
    with torch.no_grad():
        channel = net.eval().encoder(image)[-1][:, 7:8]
    expected = torch.nn.functional.interpolate(channel, size=(64, 64), mode="bilinear", align_corners=False)
    torch.testing.assert_close(cams[:, :1], expected / expected.sum())
    assert float(cams[:, 1].abs().sum()) == 0.0
    bridged = MultiCheXNet(backbone="resnet18", saliency_bridge=True)
    with pytest.raises(ValueError, match="input-gradient saliency"):
        grad_cam(bridged, image)


def test_mass_inside_hand_values() -> None:
    values = np.array([[1.0, 3.0], [0.0, 4.0]])
    region = np.array([[True, False], [False, True]])
    assert mass_inside(values, region) == pytest.approx(5 / 8)
    assert mass_inside(np.ones((4, 4)), np.eye(4, dtype=bool)) == pytest.approx(4 / 16)  # uniform: the area
    assert np.isnan(mass_inside(np.zeros((2, 2)), region))
    with pytest.raises(ValueError, match="differ"):
        mass_inside(values, region[:1])


def test_saliency_loss_kl_hand_value_and_cc_term() -> None:
    target = torch.tensor([0.5, 0.25, 0.25, 0.0]).view(1, 1, 2, 2)
    pred = torch.tensor([0.25, 0.25, 0.25, 0.25]).view(1, 1, 2, 2)
    expected = 0.5 * np.log(0.5 / 0.25)  # the 0.25 / 0.25 terms and the zero-target term add nothing
    assert float(SaliencyLoss()(pred.log(), target)) == pytest.approx(expected, abs=1e-6)
    assert float(SaliencyLoss()(target.clamp_min(1e-9).log(), target * 4)) == pytest.approx(0.0, abs=1e-6)
    # the CC term rewards the map that matches the target (loss -1 at a perfect match)
    assert float(SaliencyLoss(kl=0.0, cc=1.0)(target.clamp_min(1e-9).log(), target)) == pytest.approx(-1.0, abs=1e-4)


def test_multitask_loss_uses_saliency_only_where_a_map_exists() -> None:
    loss = MultiTaskLoss(CheXDetector(), weights={"sal": 1.0})
    log_pred = torch.log_softmax(torch.randn(2, 16), 1).view(2, 1, 4, 4)
    target = torch.rand(2, 1, 4, 4)
    batch = {"image": torch.zeros(2, 1, 4, 4), "saliency": target, "has_sal": torch.tensor([True, False])}
    terms = loss({"sal": log_pred}, batch)
    torch.testing.assert_close(terms["sal"], SaliencyLoss()(log_pred[:1], target[:1]))
    batch["has_sal"] = torch.tensor([False, False])
    assert float(loss({"sal": log_pred}, batch)["loss"]) == 0.0


def test_load_saliency_reads_resizes_flags_and_names_bad_files(tmp_path: Path) -> None:
    values = np.zeros((32, 16))
    values[4:8, 2:6] = 1.0
    save_saliency_map(values, tmp_path / "map.png")
    out = LoadSaliencyd()({"image": torch.zeros(1, 64, 32), "saliency": str(tmp_path / "map.png")})
    assert out["has_sal"] and out["saliency"].shape == (1, 64, 32)
    assert float(out["saliency"].sum()) == pytest.approx(1.0, abs=1e-5)
    assert float(out["saliency"][0, 7:17, 3:13].sum()) > 0.97  # the hot spot, scaled by 2 (bilinear edges)
    none = LoadSaliencyd()({"image": torch.zeros(1, 64, 32)})
    assert not none["has_sal"] and float(none["saliency"].abs().sum()) == 0.0
    batch = multitask_collate([out, none])
    assert batch["saliency"].shape == (2, 1, 64, 32) and batch["has_sal"].tolist() == [True, False]
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(SaliencyMapError, match="broken.png"):
        LoadSaliencyd()({"image": torch.zeros(1, 64, 32), "saliency": str(tmp_path / "broken.png")})


def test_load_saliency_places_fixations_at_the_resized_image_and_names_bad_files(tmp_path: Path) -> None:
    """Fixations recorded on the original 200x100 image land on the 64x32 model image's pixels; a file with
    positions outside the image, none, the wrong shape or NaN is refused by name."""
    from monai.data import MetaTensor

    save_saliency_map(np.ones((200, 100)), tmp_path / "map.npy")
    np.save(tmp_path / "fix.npy", np.array([[0.0, 0.0, 0.2], [199.9, 99.9, 0.3], [100.0, 50.0, 0.0]]))
    image = MetaTensor(torch.zeros(1, 64, 32), meta={"spatial_shape": (200, 100)})
    entry = {"image": image, "saliency": str(tmp_path / "map.npy"), "fixations": str(tmp_path / "fix.npy")}
    out = LoadSaliencyd(fixations=True)(entry)
    assert out["has_fix"] and out["fixation_map"].shape == (1, 64, 32)
    assert sorted(map(tuple, torch.nonzero(out["fixation_map"][0]).tolist())) == [(0, 0), (32, 16), (63, 31)]
    bare = LoadSaliencyd(fixations=True)({"image": image, "saliency": str(tmp_path / "map.npy")})
    assert not bare["has_fix"] and float(bare["fixation_map"].sum()) == 0
    assert "fixation_map" not in LoadSaliencyd()(entry)  # training reads no fixations
    batch = multitask_collate([out, bare])
    assert batch["fixation_map"].shape == (2, 1, 64, 32) and batch["has_fix"].tolist() == [True, False]
    cases = {"outside.npy": np.array([[250.0, 10.0, 0.2]]), "empty.npy": np.zeros((0, 3)),
             "flat.npy": np.array([1.0, 2.0]), "nan.npy": np.array([[np.nan, 1.0, 0.2]])}
    for name, points in cases.items():
        np.save(tmp_path / name, points)
        with pytest.raises(SaliencyMapError, match=name):
            LoadSaliencyd(fixations=True)({**entry, "fixations": str(tmp_path / name)})


def test_demo_gaze_falls_on_the_lesions_with_reader_variability(tmp_path: Path) -> None:
    datalist = make_demo_dataset(tmp_path / "demo", num_train=24, num_val=6, num_test=6, size=64)
    gaze = add_demo_gaze(datalist)
    content = json.loads(gaze.read_text())
    entries = content["training"]
    assert all("saliency" in e and "fixations" in e for e in entries)
    inside, area, counts = [], [], set()
    for entry in entries:
        values = load_saliency_map(tmp_path / "demo" / entry["saliency"])
        fixations = np.load(tmp_path / "demo" / entry["fixations"])
        assert values.shape == (64, 64) and values.sum() == pytest.approx(1.0)
        assert (fixations[:, :2] >= 0).all() and (fixations[:, :2] < 64).all() and (fixations[:, 2] > 0).all()
        counts.add(len(fixations))
        for x1, y1, x2, y2 in entry["boxes"]:
            inside.append(values[int(x1):int(x2), int(y1):int(y2)].sum())
            area.append((x2 - x1) * (y2 - y1) / 64**2)
    assert inside and np.mean(inside) > 3 * np.mean(area)  # gaze concentrates on the boxes
    assert len(counts) > 3  # readers and images differ in how many fixations they make
    stamp = gaze.stat().st_mtime_ns
    assert add_demo_gaze(datalist) == gaze and gaze.stat().st_mtime_ns == stamp  # reused


@pytest.fixture(scope="module")
def gaze_protocol(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The staged protocol (contrastive, saliency head, fusion classifier, joint) run through ``monai.bundle`` on a
    64-pixel demo set with synthetic gaze."""
    work = tmp_path_factory.mktemp("gaze")
    gaze = add_demo_gaze(make_demo_dataset(work / "demo", num_train=48, num_val=12, num_test=6, size=64))
    configs = str(["configs/train.json", "configs/saliency.json", "configs/ssl_pretrain.json",
                   "configs/saliency_protocol.json"])
    result = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", configs,
         "--datalist_file", str(gaze), "--ckpt_dir", str(work / "models"), "--output_dir", str(work / "eval"),
         "--stage_epochs", "{'ssl': 1, 'sal': 3, 'cls': 1, 'joint': 1}", "--val_interval", "1",
         "--image_size", "[64,64]", "--batch_size", "8", "--ssl_batch_size", "8"],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=900,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {"work": work, "gaze": gaze, "log": result.stdout + result.stderr}


def test_saliency_protocol_runs_its_stages_and_learns_the_gaze(gaze_protocol: dict) -> None:
    """Each phase's checkpoint, a model file that rebuilds the gaze network, and a saliency head whose validation
    CC moved above its untrained value and the centre-bias baseline's."""
    work = gaze_protocol["work"]
    for phase in ("ssl_pretrain", "saliency_head", "fusion_classifier", "joint"):
        assert (work / "models" / f"phase_{phase}.pt").is_file()
    package = read_package(work / "models" / "model.pt")
    assert package.network_args["saliency_head"] and package.network_args["cls_fusion"] == [2, 3, 4]
    values = [float(line.split("val_sal_cc: ")[1].split()[0])
              for line in gaze_protocol["log"].splitlines() if "val_sal_cc: " in line]
    assert len(values) == 6
    validation = json.loads(gaze_protocol["gaze"].read_text())["validation"]
    centre = np.mean([cc(center_bias_map((64, 64)), load_saliency_map(work / "demo" / e["saliency"]))
                      for e in validation])
    assert values[0] < centre < max(values[1:])


def test_inference_writes_the_saliency_map_for_slicer_and_in_the_record(gaze_protocol: dict, tmp_path: Path) -> None:
    """``run inference`` with the checkpoint directory alone (and ``--explain True``): per image a heat overlay, a
    float NIfTI map over the source and the record's ``saliency`` entry, and the Grad-CAM maps of the explained
    findings (schema-valid); a file that is not an image gets its error line."""
    jsonschema = pytest.importorskip("jsonschema")
    work, inputs = gaze_protocol["work"], tmp_path / "in"
    inputs.mkdir()
    test = json.loads(gaze_protocol["gaze"].read_text())["testing"][:2]
    for entry in test:
        (inputs / Path(entry["image"]).name).write_bytes((work / "demo" / entry["image"]).read_bytes())
    (inputs / "notes.txt").write_text("not an image")
    result = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "inference", "--config_file", "configs/inference.json",
         "--ckpt_dir", str(work / "models"), "--input_dir", str(inputs), "--output_dir", str(tmp_path / "out"),
         "--explain", "True"],
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    schema = json.loads((ROOT / "docs" / "schemas" / "prediction.schema.json").read_text())
    nib = pytest.importorskip("nibabel")
    for entry in test:
        stem = Path(entry["image"]).stem
        record = json.loads((tmp_path / "out" / f"{stem}_pred.json").read_text())
        jsonschema.validate(record, schema)
        assert record["files"]["saliency"] == f"{stem}_saliency.png"
        peak = record["saliency"]["peak"]
        volume = nib.load(tmp_path / "out" / record["files"]["saliency_nifti"]).get_fdata()
        assert volume.shape == (64, 64, 1) and volume.max() == pytest.approx(1.0)
        assert volume[peak[0], peak[1], 0] == pytest.approx(1.0)
        # Grad-CAM of the positive findings (or the most probable one): overlay, NIfTI map and record entry
        explained = record["explanations"]
        positives = [n for n, f in record["findings"].items() if f["positive"]]
        top = max(record["findings"], key=lambda n: record["findings"][n]["probability"])
        assert sorted(explained) == sorted(positives or [top])
        for finding, explanation in explained.items():
            assert (tmp_path / "out" / record["files"][f"gradcam_{finding}"]).is_file()
            cam = nib.load(tmp_path / "out" / record["files"][f"gradcam_nifti_{finding}"]).get_fdata()
            assert cam.shape == (64, 64, 1) and cam[explanation["peak"][0], explanation["peak"][1], 0] == cam.max()
    errors = json.loads((tmp_path / "out" / "errors.json").read_text())
    assert [Path(e["file"]).name for e in errors] == ["notes.txt"]


def test_saliency_report_scores_the_head_the_baselines_and_lung_mass(gaze_protocol: dict, tmp_path: Path) -> None:
    """``scripts/saliency_report.py``: the five metrics with CIs for the head and both baselines, and the mass of
    Grad-CAM, the input gradient and the saliency map inside the true lungs of the shared COVID images and inside
    the RSNA boxes of the NIH thumbnails (skipped without them)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    import saliency_report

    ckpt = str(gaze_protocol["work"] / "models" / "model.pt")
    scores = saliency_report.gaze(ckpt, str(gaze_protocol["gaze"]), resamples=50)
    assert set(scores["models"]) == {"saliency_head", "centre_bias", "mean_gaze"}
    for metrics in scores["models"].values():
        assert set(metrics) == {"cc", "kl", "sim", "nss", "auc_judd"}
        assert all(low <= value <= high for value, low, high in metrics.values())
    covid = ROOT.parent / "shared" / "data" / "covid"
    if not covid.is_dir():
        pytest.skip(f"shared COVID samples not found at {covid}")
    datalist = tmp_path / "covid.json"
    subprocess.run([sys.executable, "scripts/prepare.py", "covid", str(covid / "metadata.csv"), str(datalist),
                    "--images_dir", str(covid / "images"), "--masks_dir", str(covid / "lung_masks")],
                   cwd=ROOT, check=True, capture_output=True)
    lungs = saliency_report.lungs(ckpt, str(datalist), split="testing", resamples=50)
    assert lungs["images"] > 0 and set(lungs["mass_inside"]) == {"grad_cam", "input_gradient", "uniform",
                                                                  "saliency_head"}
    for name, (value, low, high) in lungs["mass_inside"].items():  # NaN: every map of the method is all zero
        assert 0 <= low <= value <= high <= 1 or lungs["all_zero_maps"][name] == lungs["images"]
    assert lungs["all_zero_maps"]["uniform"] == lungs["all_zero_maps"]["saliency_head"] == 0
    # RSNA pneumonia boxes on the NIH thumbnails: the region is the union of each image's boxes
    nih = ROOT.parent / "shared" / "data" / "nih1000"
    rsna = tmp_path / "nih_rsna.json"
    subprocess.run([sys.executable, "scripts/prepare.py", "nih", str(nih / "Data_Entry_2017.csv"), str(nih / "images"),
                    str(rsna), "--rsna_labels", str(nih / "rsna" / "stage_2_train_labels.csv"),
                    "--rsna_map", str(nih / "rsna" / "patient_to_nih.csv")], cwd=ROOT, check=True, capture_output=True)
    boxes = saliency_report.regions(ckpt, str(rsna), "training,validation,testing", "boxes", "Pneumonia", 50)
    annotated = [e for part in ("training", "validation", "testing") for e in json.loads(rsna.read_text())[part]
                 if "boxes" in e]
    assert boxes["images"] == sum(1 for e in annotated if e["boxes"]) and boxes["left_out_empty"] > 0
    assert 0 < boxes["mass_inside"]["uniform"][0] < 0.5  # boxes cover a small part of each image
    for name, (value, low, high) in boxes["mass_inside"].items():  # NaN: no map with mass on any image
        assert 0 <= low <= value <= high <= 1 or boxes["all_zero_maps"][name] == boxes["images"]
    assert boxes["all_zero_maps"]["uniform"] == boxes["all_zero_maps"]["input_gradient"] == 0
    with pytest.raises(SystemExit, match="no finding 'Covid'"):
        saliency_report.regions(ckpt, str(rsna), "testing", "boxes", "Covid")


def test_evaluate_scores_the_saliency_head_and_baselines_with_patient_cis(gaze_protocol: dict, tmp_path: Path) -> None:
    """``evaluate.json`` on top of ``saliency.json``: the five saliency metrics of the head and of both baselines in
    metrics.json with patient-bootstrap CIs, equal to what ``saliency_report.py gaze`` computes image by image,
    and their table in the evaluation report."""
    work = gaze_protocol["work"]
    configs = str(["configs/train.json", "configs/saliency.json", "configs/evaluate.json"])
    result = subprocess.run(
        [sys.executable, "-m", "monai.bundle", "run", "evaluating", "--config_file", configs,
         "--datalist_file", str(gaze_protocol["gaze"]), "--ckpt_dir", str(work / "models"),
         "--output_dir", str(tmp_path / "eval"), "--image_size", "[64,64]", "--bootstrap_resamples", "50",
         "--amp", "False"],  # float32 as saliency_report.py (a CPU with native bfloat16 would autocast)
        cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=600,
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    test = json.loads(gaze_protocol["gaze"].read_text())["testing"]
    assert report["dataset"]["images_with_saliency"] == report["dataset"]["images_with_fixations"] == len(test)
    metrics = report["metrics"]
    sys.path.insert(0, str(ROOT / "scripts"))
    import saliency_report

    direct = saliency_report.gaze(str(work / "models" / "model.pt"), str(gaze_protocol["gaze"]), resamples=50)
    for model, suffix in (("saliency_head", ""), ("centre_bias", "/centre_bias"), ("mean_gaze", "/mean_gaze")):
        for name, (value, low, high) in direct["models"][model].items():
            entry = metrics[f"sal/{name}{suffix}"]
            assert entry["value"] == pytest.approx(value, abs=1e-3)
            assert entry["low"] <= entry["value"] <= entry["high"]
    from bundle.reporting import build_report

    markdown = Path(build_report([str(tmp_path / "eval" / "metrics.json")], tmp_path / "report")["markdown"])
    assert "| saliency head |" in markdown.read_text() and "| centre bias |" in markdown.read_text()


def test_explain_needs_the_eager_backend() -> None:
    from bundle.engines.folder_inference import FolderInferenceEvaluator

    detector = CheXDetector()
    network = MultiCheXNet(backbone="resnet18", num_anchors=detector.num_anchors)
    with pytest.raises(ValueError, match="explanation maps need gradients, so the eager backend, not 'torchscript'"):
        FolderInferenceEvaluator(torch.device("cpu"), [], network, detector=detector, backend="torchscript",
                                 explain=True)


def test_explain_runs_the_encoder_once_and_gives_the_gated_outputs() -> None:
    """With ``explain`` the heads run on the Grad-CAM pass's features: one encoder pass per batch, and the same
    gated outputs as without it."""
    from bundle.engines.folder_inference import FolderInferenceEvaluator

    torch.manual_seed(0)
    detector = CheXDetector()
    network = MultiCheXNet(num_anchors=detector.num_anchors, saliency_head=True).eval()
    gates = {"det_gate": 0.5, "seg_gate": 0.5}
    plain = FolderInferenceEvaluator(torch.device("cpu"), [], network, detector=detector, gate_thresholds=gates)
    explained = FolderInferenceEvaluator(torch.device("cpu"), [], network, detector=detector, gate_thresholds=gates,
                                         explain=True)
    image = torch.rand(2, 1, 64, 64)
    calls = []
    hook = network.encoder.register_forward_hook(lambda *_: calls.append(1))
    try:
        out = explained._explained(image)
        assert len(calls) == 1
        reference = plain.forward(image)
    finally:
        hook.remove()
    assert out["gradcam"].shape == (2, 14, 64, 64)
    for key in ("cls", "seg", "det_cls", "det_box", "sal", "det_gated_in", "seg_gated_in"):
        torch.testing.assert_close(out[key], reference[key], atol=1e-5, rtol=1e-5)
