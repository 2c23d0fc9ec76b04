"""Lung segmentation from few labelled masks: supervised-only vs semi-supervised (MultiMix terms), with and without
the saliency bridge and contrastive encoder pretraining (docs/results/semi_supervised.md).

The COVID-19 datalist (scripts/prepare.py covid, patient-disjoint splits) keeps the masks of ``n`` training images
(drawn by patient, seed 0) and drops the others, which become unlabelled for segmentation; the NIH thumbnails are
the datalist's ``unlabelled`` list. Every run has the same number of optimiser steps (``iterations``), so few
labels do not mean little training. Test Dice per image at the training size, with a patient-bootstrap 95% CI.

    python scripts/semi_supervised_experiment.py run --output docs/results/semi_supervised
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import fire
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "scripts"))

from bundle.data import LoadCXRd, PrepareTargetsd, ResizeTargetsd, read_datalist  # noqa: E402
from bundle.metrics.bootstrap import bootstrap_ci  # noqa: E402
from bundle.metrics.segmentation import dice_per_image  # noqa: E402
from bundle.packaging import read_checkpoint, read_package  # noqa: E402
from run_logged import run_logged  # noqa: E402

SHARED = ROOT.parent / "shared" / "data"
SUPERVISED = ["configs/train.json", "configs/lung.json"]
SEMI = [*SUPERVISED, "configs/semi_supervised.json"]


def prepare(work: Path, unlabelled_limit: int) -> Path:
    """The COVID datalist with the NIH thumbnails (the first ``unlabelled_limit``) and the full-resolution NIH
    images as its unlabelled list (none with ``unlabelled_limit`` 0)."""
    datalist = work / "covid.json"
    if datalist.is_file():
        return datalist
    work.mkdir(parents=True, exist_ok=True)
    covid = SHARED / "covid"
    run_logged([sys.executable, "scripts/prepare.py", "covid", str(covid / "metadata.csv"), str(datalist),
                "--images_dir", str(covid / "images"), "--masks_dir", str(covid / "lung_masks")],
               work / "prepare_covid.log", cwd=ROOT, nice=10)
    if unlabelled_limit == 0:
        return datalist
    nih = sorted((SHARED / "nih1000" / "images").glob("*.png"))[:unlabelled_limit]
    nih += sorted((SHARED / "nih_fullres").glob("*.png"))
    csv = work / "nih_unlabelled.csv"
    csv.write_text("image\n" + "\n".join(str(p) for p in nih) + "\n")
    run_logged([sys.executable, "scripts/prepare.py", "unlabelled", str(csv), str(datalist)], work / "prepare_nih.log",
               cwd=ROOT, nice=10)
    return datalist


def with_masks(datalist: Path, n: int | None, seed: int = 0) -> Path:
    """A copy of ``datalist`` whose training split keeps the masks of ``n`` images (all: None), drawn by patient."""
    content = read_datalist(datalist)
    masked = [i for i, e in enumerate(content["training"]) if "mask" in e]
    keep = set(masked)
    if n is not None and n < len(masked):
        patients: dict[str, list[int]] = {}
        for i in masked:
            patients.setdefault(str(content["training"][i].get("patient_id")), []).append(i)
        order = np.random.default_rng(seed).permutation(sorted(patients))
        keep = set()
        for patient in order:
            if len(keep) >= n:
                break
            keep.update(patients[patient][: n - len(keep)])
    content["training"] = [e if i in keep else {k: v for k, v in e.items() if k != "mask"}
                           for i, e in enumerate(content["training"])]
    out = datalist.with_name(f"covid_{'all' if n is None else n}.json")
    out.write_text(json.dumps(content, indent=1))
    return out


def test_dice(model: Path, datalist: Path, size: int) -> dict[str, Any]:
    """Dice per test image (threshold 0.5, at ``size`` px) of ``model`` and its patient-bootstrap 95% CI."""
    package = read_package(model)
    net = package.network()
    net.load_state_dict(read_checkpoint(model)["model"])
    net.eval()
    load, resize = LoadCXRd(), ResizeTargetsd([size, size])
    targets = PrepareTargetsd(package.network_args["num_classes"])
    entries = [e for e in read_datalist(datalist)["testing"] if "mask" in e]
    scores, patients = [], []
    for entry in entries:
        entry = {**entry, **{k: str((datalist.parent / entry[k]).resolve()) for k in ("image", "mask")}}
        sample = resize(targets(load(entry)))
        with torch.no_grad():
            logits = net(torch.as_tensor(sample["image"])[None], ["seg"])["seg"]
        scores.append(float(dice_per_image((torch.sigmoid(logits) > 0.5).float(), sample["mask"][None])[0]))
        patients.append(str(entry.get("patient_id")))
    values = np.asarray(scores)
    ci = bootstrap_ci(lambda idx: float(values[idx].mean()), patients)
    return {"dice": ci.value, "low": ci.low, "high": ci.high, "images": len(values), "patients": len(set(patients))}


#: Every arm: its configs and its overrides ("{encoder}" stands for the contrastive encoder file, trained first).
ARMS: dict[str, tuple[list[str], dict[str, str]]] = {
    "supervised": (SUPERVISED, {}),
    "semi + bridge": (SEMI, {}),
    "semi, no bridge": (SEMI, {"network_def#saliency_bridge": "False"}),
    "ssl + supervised": (SUPERVISED, {"pretrained_encoder": "{encoder}"}),
    "ssl + semi + bridge": (SEMI, {"pretrained_encoder": "{encoder}"}),
}
PAIR = ("supervised", "semi + bridge")
ABLATION = ("semi, no bridge", "ssl + supervised", "ssl + semi + bridge")
#: The unlabelled pool of rows written before the ``unlabelled`` field existed.
DEFAULT_POOL = "COVID + NIH"


class Experiment:
    """Lung Dice vs number of labelled masks, supervised and semi-supervised."""

    def run(
        self, output: str = "docs/results/semi_supervised", work: str = "data/real/semi_supervised",
        labelled: Any = (5, 10, 20, None), image_size: int = 256, iterations: int = 60, batch_size: int = 4,
        unlabelled_ratio: int = 1, unlabelled_limit: int = 200, ssl_epochs: int = 2, ablate_at: Any = 10,
        part: str = "", arms: Any = PAIR,
    ) -> None:
        """The ``arms`` (names of :data:`ARMS`; by default supervised and semi-supervised with the bridge) at every
        ``labelled`` count (None: all masks), and at ``ablate_at`` labels also the :data:`ABLATION` arms (without
        the bridge, and after contrastive pretraining). ``unlabelled_limit`` 0: no NIH image, only the COVID images
        without a (kept) mask are unlabelled. Results in ``output``/results``part``.json (``part`` names one share
        of the grid run by its own process) and the markdown table of every share (:meth:`table`)."""
        work_dir, out_dir = ROOT / work, ROOT / output
        out_dir.mkdir(parents=True, exist_ok=True)
        unknown = set(arms) - set(ARMS)
        if unknown:
            raise SystemExit(f"unknown arms {sorted(unknown)}; choose from {list(ARMS)}")
        base = prepare(work_dir, unlabelled_limit)
        common = ["--image_size", f"[{image_size},{image_size}]", "--batch_size", str(batch_size), "--amp", "False"]
        encoder = work_dir / "ssl" / "model.pt"
        unlabelled = "COVID" if unlabelled_limit == 0 else DEFAULT_POOL
        results: list[dict[str, Any]] = []
        for n in labelled:
            datalist = with_masks(base, n)
            masks = sum("mask" in e for e in read_datalist(datalist)["training"])
            epochs = max(1, math.ceil(iterations / math.ceil(masks / batch_size)))
            todo = list(arms) + ([a for a in ABLATION if a not in arms] if n == ablate_at else [])
            if any("{encoder}" in ARMS[a][1].values() for a in todo) and not encoder.is_file():
                cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file",
                       str(["configs/train.json", "configs/ssl_pretrain.json"]), "--datalist_file", str(datalist),
                       "--ckpt_dir", str(encoder.parent), "--ssl_epochs", str(ssl_epochs), "--ssl_batch_size", "16",
                       "--network_def#backbone", "efficientnet-b0", "--output_dir", str(work_dir / "eval_ssl"),
                       "--resume", "False", *common]
                wall = run_logged(cmd, work_dir / "ssl.log", cwd=ROOT, nice=10)
                results.append({"arm": "contrastive pretraining", "labelled": None, "wall_s": round(wall)})
            for arm in todo:
                configs, extra = ARMS[arm]
                name = f"{arm.replace(' ', '').replace('+', '_').replace(',', '_')}_n{n or 'all'}"
                ckpt = work_dir / name
                cmd = [sys.executable, "-m", "monai.bundle", "run", "training", "--config_file", str(configs),
                       "--datalist_file", str(datalist), "--ckpt_dir", str(ckpt), "--output_dir", str(ckpt / "eval"),
                       "--epochs", str(epochs), "--val_interval", str(max(1, epochs // 5)), "--resume", "False",
                       "--unlabelled_ratio", str(unlabelled_ratio), *common]
                for key, value in extra.items():
                    cmd += [f"--{key}", value.format(encoder=encoder)]
                wall = run_logged(cmd, work_dir / f"{name}.log", cwd=ROOT, nice=10)
                row = {"arm": arm, "labelled": masks, "unlabelled": unlabelled, "epochs": epochs,
                       "wall_s": round(wall), **test_dice(ckpt / "model.pt", datalist, image_size)}
                results.append(row)
                print(json.dumps(row), flush=True)
                (out_dir / f"results{part}.json").write_text(json.dumps(results, indent=1))
        self.table(output)

    def table(self, output: str = "docs/results/semi_supervised") -> None:
        """The markdown table (``output``/results.md) of every results*.json in ``output``, by labelled masks."""
        out_dir = ROOT / output
        results = [r for f in sorted(out_dir.glob("results*.json")) for r in json.loads(f.read_text())]
        rows = sorted(({"unlabelled": DEFAULT_POOL, **r} for r in results if "dice" in r),
                      key=lambda r: (r["labelled"], r["unlabelled"], r["arm"]))
        lines = ["| arm | labelled masks | unlabelled | epochs | test Dice (95% CI) | wall s |",
                 "|---|---|---|---|---|---|"]
        lines += [f"| {r['arm']} | {r['labelled']} | {r['unlabelled']} | {r['epochs']} "
                  f"| {r['dice']:.3f} ({r['low']:.3f}, {r['high']:.3f}) | {r['wall_s']} |" for r in rows]
        lines += [f"| {r['arm']} | | | | | {r['wall_s']} |" for r in results if "dice" not in r]
        (out_dir / "results.md").write_text("\n".join(lines) + "\n")
        print("\n".join(lines))


if __name__ == "__main__":
    fire.Fire(Experiment)
