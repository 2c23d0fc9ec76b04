"""Lung segmentation ablation of KLTV and APPAU-Net (Imran & Terzopoulos, arXiv:1908.03693) on a lung datalist.

Each variant is ``configs/train.json`` + ``configs/lung.json`` (seg head only, 256 px, EfficientNet-B0) with
config overrides (:data:`VARIANTS`): the mask loss (Dice, Dice+BCE, Tversky, KLTV), the decoder (U-Net or
attention pyramid), deep supervision, the adversarial term, all training masks or 10 of them. Per variant:
validation Dice after every epoch, training seconds per epoch, the first epoch whose validation Dice reaches 95 %
of the last epoch's, and the test Dice (mean per image at 0.5, at the model size, no mask post-processing) of
the best-validation checkpoint (``model.pt``, as ``configs/lung.json`` ships) with a patient-bootstrap 95 % CI.
``run`` appends each variant's record to a JSON file as it finishes (a rerun skips recorded variants);
``report`` writes the Markdown table.

    python scripts/segmentation_ablation.py run data/real/covid.json results.json --epochs 12
    python scripts/segmentation_ablation.py report results.json docs/results/segmentation_ablation_table.md
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path
from typing import Any

import fire
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bundle.fileio import atomic_write  # noqa: E402
from bundle.metrics.bootstrap import bootstrap_ci  # noqa: E402
from bundle.metrics.segmentation import dice_per_image, mean_dice  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CONFIGS = [str(ROOT / "configs" / "train.json"), str(ROOT / "configs" / "lung.json")]

_DICE = {"_target_": "monai.losses.DiceLoss", "sigmoid": True, "batch": True}
_TVERSKY = {"_target_": "monai.losses.TverskyLoss", "sigmoid": True, "alpha": 0.3, "beta": 0.7, "batch": True}
_KLTV = {"_target_": "bundle.losses.KLTVLoss", "sigmoid": True, "alpha": 0.3, "beta": 0.7, "batch": True}
_PYRAMID = {"network_def#seg_decoder": "attention_pyramid"}
_DEEP = {**_PYRAMID, "network_def#deep_supervision": True, "loss#deep_supervision_weights": [0.5, 0.25, 0.125, 0.0625]}
_ADVERSARIAL = {"train#parts": {"adversarial": {
    "_target_": "bundle.engines.AdversarialMaskPart",
    "discriminator": {"_target_": "bundle.networks.MaskDiscriminator", "in_channels": 1}, "weight": 0.1, "lr": 0.0002,
}}}
_TEN = {"train#dataset#data": "$[@masked('training')[i] for i in "
        "torch.randperm(len(@masked('training')), generator=torch.Generator().manual_seed(0))[:10].tolist()]"}

#: Variant name: config overrides on train.json + lung.json, in the order run (most wanted comparisons first).
VARIANTS: dict[str, dict[str, Any]] = {
    "dice_bce": {},
    "kltv": {"loss#seg_loss": _KLTV},
    "kltv_appau": {"loss#seg_loss": _KLTV, **_DEEP, **_ADVERSARIAL},
    "dice_bce_10": {**_TEN},
    "kltv_appau_10": {"loss#seg_loss": _KLTV, **_DEEP, **_ADVERSARIAL, **_TEN},
    "tversky": {"loss#seg_loss": _TVERSKY},
    "dice": {"loss#seg_loss": _DICE},
    "kltv_pyramid": {"loss#seg_loss": _KLTV, **_PYRAMID},
    "kltv_pyramid_ds": {"loss#seg_loss": _KLTV, **_DEEP},
}


def _parser(datalist: str, work: Path, epochs: int, overrides: dict[str, Any]) -> Any:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(CONFIGS)
    settings = {
        "bundle_root": str(ROOT), "datalist_file": str(Path(datalist).resolve()), "epochs": epochs, "val_interval": 1,
        "ckpt_dir": str(work / "models"), "output_dir": str(work / "eval"), "resume": False, **overrides,
    }
    for key, value in settings.items():
        parser[key] = value
    return parser


def epoch_to_fraction(dice: list[float], fraction: float = 0.95) -> int | None:
    """First epoch (1-based) whose validation Dice reaches ``fraction`` of the last epoch's."""
    if not dice:
        return None
    return next(i + 1 for i, d in enumerate(dice) if d >= fraction * dice[-1])


def _test_dice(parser: Any, work: Path) -> dict[str, float]:
    """Mean per-image test Dice of ``model.pt`` at 0.5, with its patient-bootstrap 95 % CI."""
    from monai.data import DataLoader, Dataset

    from bundle.data import multitask_collate
    from bundle.packaging import read_checkpoint

    network = parser.get_parsed_content("network_def")
    network.load_state_dict(read_checkpoint(str(work / "models" / "model.pt"))["model"])
    network.eval()
    entries = parser.get_parsed_content("masked")("testing")
    data = Dataset(entries, transform=parser.get_parsed_content("validate#preprocessing"))
    scores: list[np.ndarray] = []
    with torch.no_grad():
        for batch in DataLoader(data, batch_size=4, collate_fn=multitask_collate):
            probs = torch.sigmoid(network(torch.as_tensor(batch["image"]), ["seg"])["seg"])
            scores.append(dice_per_image(probs > 0.5, torch.as_tensor(batch["mask"]) > 0).numpy())
    per_image = np.concatenate(scores)
    interval = bootstrap_ci(lambda idx: mean_dice(per_image[idx]), [e["patient_id"] for e in entries])
    return {"test_dice": interval.value, "test_dice_low": interval.low, "test_dice_high": interval.high,
            "test_images": len(entries), "test_patients": len({e["patient_id"] for e in entries})}


def run_variant(datalist: str, name: str, work: Path, epochs: int) -> dict[str, Any]:
    """Train one variant of :data:`VARIANTS` in ``work`` (emptied first) and measure it."""
    from ignite.engine import Events

    shutil.rmtree(work, ignore_errors=True)
    parser = _parser(datalist, work, epochs, VARIANTS[name])
    parser.get_parsed_content("initialize")
    trainer, evaluator = parser.get_parsed_content("train#trainer"), parser.get_parsed_content("validate#evaluator")
    seconds: list[float] = []
    dice: list[float] = []
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: seconds.append(e.state.times["EPOCH_COMPLETED"]))
    evaluator.add_event_handler(Events.EPOCH_COMPLETED, lambda e: dice.append(float(e.state.metrics["val_dice"])))
    trainer.run()
    return {
        "variant": name, "overrides": VARIANTS[name], "epochs": epochs,
        "training_images": len(trainer.data_loader.dataset), "val_dice": dice, "seconds_per_epoch": seconds,
        "epoch_to_95pct": epoch_to_fraction(dice), "best_val_dice": max(dice), **_test_dice(parser, work),
    }


def run(datalist: str, results: str, epochs: int = 12, variants: list[str] | None = None,
        work_dir: str = "eval/ablation") -> None:
    """Train and measure ``variants`` (default: all of :data:`VARIANTS`), appending each record to ``results``."""
    names = list(VARIANTS) if variants is None else list(variants)
    unknown = sorted(set(names) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    path = Path(results)
    records = json.loads(path.read_text()) if path.is_file() else []
    for name in names:
        if any(r["variant"] == name and r["epochs"] == epochs for r in records):
            continue
        records.append(run_variant(datalist, name, Path(work_dir) / name, epochs))
        atomic_write(path, (json.dumps(records, indent=1) + "\n").encode())
        print(json.dumps({k: records[-1][k] for k in ("variant", "best_val_dice", "test_dice", "epoch_to_95pct")}))


def report(results: str, output: str) -> None:
    """A Markdown table of the records in ``results``."""
    rows = [
        "| variant | epochs | training masks | val Dice by epoch | epoch to 95 % of final | s / epoch (median) | "
        "test Dice (95 % CI) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in json.loads(Path(results).read_text()):
        rows.append(
            f"| {r['variant']} | {r['epochs']} | {r['training_images']} | {' '.join(f'{d:.2f}' for d in r['val_dice'])} | "
            f"{r['epoch_to_95pct']} | {np.median(r['seconds_per_epoch']):.1f} | "
            f"{r['test_dice']:.3f} ({r['test_dice_low']:.3f}, {r['test_dice_high']:.3f}) |"
        )
    atomic_write(Path(output), ("\n".join(rows) + "\n").encode())


if __name__ == "__main__":
    fire.Fire({"run": run, "report": report})
