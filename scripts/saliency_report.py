"""Saliency results (issue 13): the saliency head against the gaze baselines, explanation mass inside the lungs,
and the head's cost. Each command prints and writes (``--output``) a JSON of its figures.

``gaze``: on a gaze datalist split (``saliency`` maps and ``fixations`` files), CC, KL, SIM (against the maps) and
NSS, AUC-Judd (against the fixations) of the model's saliency head, of the centre-bias baseline (a fixed
Gaussian) and of the mean training gaze map, each with patient-bootstrap 95% CIs.

``regions``: on a datalist split with masks or boxes, the fraction of each explanation's mass inside each image's
region (its mask: lung fields, a lesion mask, SIIM RLE; or the union of its boxes: RSNA, NIH): Grad-CAM and the
input gradient (MultiMix's saliency) of the finding the model rates highest (or of ``--finding``), the saliency
head's map (if any), and a uniform map (the region's area fraction, what chance gives), patient-bootstrap 95%
CIs. ``lungs`` is ``regions`` on lung masks.

``cost``: ms per batch of encoder + cls, encoder + cls + saliency head and all heads, interleaved in one run.

    python scripts/saliency_report.py gaze models/saliency/model.pt data/demo/datalist_gaze.json
    python scripts/saliency_report.py lungs models/saliency/model.pt data/real/covid.json --split training
    python scripts/saliency_report.py regions models/saliency/model.pt data/real/nih_rsna.json --region boxes \
        --finding Pneumonia --split training,validation,testing
    python scripts/saliency_report.py cost --sizes "[256,512]"
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import fire
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bundle.data import LoadCXRd, LoadSaliencyd, ResizeImaged  # noqa: E402
from bundle.data.datalist import load_datalist  # noqa: E402
from bundle.engines.batch import plain  # noqa: E402
from bundle.data.gaze import center_bias_map, fixation_map, load_saliency_map, mean_gaze_map  # noqa: E402
from bundle.explain import grad_cam, input_gradient, mass_inside  # noqa: E402
from bundle.metrics.bootstrap import bootstrap_metrics  # noqa: E402
from bundle.metrics.saliency import saliency_intervals, saliency_scores  # noqa: E402
from bundle.networks import MultiCheXNet  # noqa: E402
from bundle.packaging import read_checkpoint, read_package  # noqa: E402


def _model(ckpt: str) -> tuple[MultiCheXNet, tuple[int, int]]:
    package = read_package(ckpt)
    if package is None:
        raise SystemExit(f"{ckpt}: not a packaged model file (train with configs/saliency.json)")
    network = package.network()
    network.load_state_dict(read_checkpoint(ckpt)["model"])
    return network.eval(), tuple(package.policy.image_size)


def _image(entry: dict, size: tuple[int, int], saliency: bool = False) -> dict[str, Any]:
    """The entry's image (and mask, saliency map) at the model's size; ``image`` as a (1, 1, W, H) batch."""
    data = ResizeImaged(size)(LoadCXRd()(dict(entry)))
    data = LoadSaliencyd()(data) if saliency else data
    data["batch"] = plain(torch.as_tensor(data["image"])).float()[None]
    return data


def _report(result: dict, output: str | None) -> dict:
    text = json.dumps(result, indent=2)
    print(text)
    if output:
        Path(output).write_text(text + "\n")
    return result


def gaze(ckpt: str, datalist: str, split: str = "testing", resamples: int = 1000, output: str | None = None) -> dict:
    """The saliency head, the centre bias and the mean training gaze map on ``split`` (see the module docstring)."""
    network, size = _model(ckpt)
    if network.sal_head is None:
        raise SystemExit(f"{ckpt}: the network has no saliency head")
    entries = load_datalist(datalist, split)
    mean_map = mean_gaze_map([e["saliency"] for e in load_datalist(datalist, "training")], size)
    maps: dict[str, list[np.ndarray]] = {"saliency_head": [], "centre_bias": [], "mean_gaze": []}
    truths, fixated = [], []
    for entry in entries:
        data = _image(entry, size, saliency=True)
        with torch.no_grad():
            maps["saliency_head"].append(network(data["batch"], ["sal"])["sal"][0, 0].exp().numpy())
        maps["centre_bias"].append(center_bias_map(size))
        maps["mean_gaze"].append(mean_map)
        truths.append(data["saliency"][0].numpy())
        original = load_saliency_map(entry["saliency"]).shape
        points = np.load(entry["fixations"])
        scale = np.array([size[0] / original[0], size[1] / original[1]])
        xy = np.clip(points[:, :2] * scale, 0, np.array(size) - 1e-3)
        fixated.append(fixation_map(xy[:, 0], xy[:, 1], size))
    patients = [str(e.get("patient_id", i)) for i, e in enumerate(entries)]
    result: dict[str, Any] = {"ckpt": ckpt, "datalist": datalist, "split": split, "images": len(entries),
                              "patients": len(set(patients)), "size": list(size), "models": {}}
    for name, predicted in maps.items():
        scores = saliency_scores(predicted, truths, fixated)
        result["models"][name] = {k: [round(v, 4) for v in iv] for k, iv in
                                  saliency_intervals(scores, patients, resamples).items()}
    return _report(result, output)


def regions(ckpt: str, datalist: str, split: str = "testing", region: str = "mask", finding: str | None = None,
            resamples: int = 1000, output: str | None = None) -> dict:
    """Explanation mass inside each entry's region of ``split`` (one list or several, "training,testing"): its ``mask`` (lung fields, a lesion mask, SIIM RLE
    included) or the union of its ``boxes`` (RSNA, NIH); entries with an empty region are left out and counted.
    Maps: Grad-CAM (networks without the saliency bridge) and the input gradient of ``finding`` (None: the finding
    the model rates highest on each image), the saliency head's map (if any) and a uniform map (the region's area
    fraction, what chance gives); means with patient-bootstrap 95% CIs over the images where a map has mass (an
    all-zero Grad-CAM, no positive evidence for the finding, is left out and counted in ``all_zero_maps``)."""
    if region not in ("mask", "boxes"):
        raise SystemExit(f"region must be 'mask' or 'boxes', got {region!r}")
    network, size = _model(ckpt)
    names = list(read_package(ckpt).policy.class_names)
    if finding is not None and finding not in names:
        raise SystemExit(f"{ckpt}: no finding {finding!r}; the model's findings are {names}")
    key = "mask" if region == "mask" else "boxes"
    lists = split.split(",") if isinstance(split, str) else list(split)
    entries = [e for part in lists for e in load_datalist(datalist, part)
               if key in e or (key == "mask" and "mask_rle" in e)]
    rows: dict[str, list[float]] = {"input_gradient": [], "uniform": []}
    if network.bridge is None:
        rows["grad_cam"] = []
    if network.sal_head is not None:
        rows["saliency_head"] = []
    kept, empty = [], 0
    for entry in entries:
        data = _image(entry, size)
        inside = _region(entry, data, size, region)
        if not inside.any():
            empty += 1
            continue
        kept.append(entry)
        image = data["batch"]
        with torch.no_grad():
            out = network(image, ["cls"] + (["sal"] if network.sal_head is not None else []))
        k = names.index(finding) if finding is not None else int(out["cls"][0].argmax())
        rows["input_gradient"].append(mass_inside(input_gradient(network, image, [k])[0, 0].numpy(), inside))
        if "grad_cam" in rows:
            rows["grad_cam"].append(mass_inside(grad_cam(network, image, [k])[0, 0].numpy(), inside))
        if "saliency_head" in rows:
            rows["saliency_head"].append(mass_inside(out["sal"][0, 0].exp().numpy(), inside))
        rows["uniform"].append(float(inside.mean()))
    if not kept:
        raise SystemExit(f"{datalist}#{split}: no entry with a non-empty {region} region ({empty} empty)")
    patients = [str(e.get("patient_id", i)) for i, e in enumerate(kept)]
    values = {k: np.asarray(v, dtype=float) for k, v in rows.items()}
    intervals = bootstrap_metrics(lambda idx: {k: _nanmean(v[idx]) for k, v in values.items()}, patients, resamples)
    return _report({"ckpt": ckpt, "datalist": datalist, "split": split, "region": region,
                    "finding": finding or "top", "images": len(kept), "patients": len(set(patients)),
                    "left_out_empty": empty, "size": list(size),
                    "all_zero_maps": {k: int(np.isnan(v).sum()) for k, v in values.items()},
                    "mass_inside": {k: [round(x, 4) for x in iv] for k, iv in intervals.items()}}, output)


def _nanmean(values: np.ndarray) -> float:
    """The mean of the finite values (a map with no mass has none), NaN when there is none."""
    return float(np.nanmean(values)) if np.isfinite(values).any() else float("nan")


def _region(entry: dict, data: dict, size: tuple[int, int], region: str) -> np.ndarray:
    """The (W, H) boolean region at the model's size: the entry's mask, or the union of its boxes."""
    if region == "mask":
        mask = plain(torch.as_tensor(data["mask"]))[None].float()
        return torch.nn.functional.interpolate(mask, size, mode="nearest")[0, 0].numpy() > 0
    original = [int(s) for s in data["image"].meta["spatial_shape"]]
    inside = np.zeros(size, dtype=bool)
    for x1, y1, x2, y2 in np.asarray(entry["boxes"], dtype=float).reshape(-1, 4):
        sx, sy = size[0] / original[0], size[1] / original[1]
        inside[int(np.floor(x1 * sx)):int(np.ceil(x2 * sx)), int(np.floor(y1 * sy)):int(np.ceil(y2 * sy))] = True
    return inside


def lungs(ckpt: str, datalist: str, split: str = "training", resamples: int = 1000, output: str | None = None) -> dict:
    """Explanation mass inside the true lung masks of ``split``: :func:`regions` with the masks, for the top
    finding."""
    return regions(ckpt, datalist, split, "mask", None, resamples, output)


def cost(sizes: tuple[int, ...] = (256, 512), batch_size: int = 4, iterations: int = 2, rounds: int = 3,
         threads: int | None = 1, output: str | None = None) -> dict:
    """ms per batch of encoder + cls, + saliency head, and all heads (random weights, DenseNet121, interleaved)."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    network = MultiCheXNet(saliency_head=True).eval()
    rows = []
    with torch.inference_mode():
        for size in sizes:
            image = torch.rand(batch_size, 1, size, size)
            modes = {"encoder_cls": ["cls"], "encoder_cls_sal": ["cls", "sal"], "all_heads": None}
            seconds: dict[str, list[float]] = {m: [] for m in modes}
            for tasks in modes.values():
                network(image, tasks)  # warm-up
            for _ in range(rounds):
                for mode, tasks in modes.items():
                    start = time.perf_counter()
                    for _ in range(iterations):
                        network(image, tasks)
                    seconds[mode].append((time.perf_counter() - start) / iterations)
            median = {m: statistics.median(s) for m, s in seconds.items()}
            rows.append({"size": size, "batch_size": batch_size, "threads": torch.get_num_threads(),
                         "ms_per_batch": {m: round(1000 * v, 1) for m, v in median.items()},
                         "ratio_to_encoder_cls": {m: round(v / median["encoder_cls"], 3) for m, v in median.items()}})
    return _report({"rows": rows}, output)


if __name__ == "__main__":
    fire.Fire({"gaze": gaze, "lungs": lungs, "regions": regions, "cost": cost}, serialize=lambda _: None)
