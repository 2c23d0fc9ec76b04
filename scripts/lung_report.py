"""Score ``run inference``'s lung masks against a datalist split's true masks, at each image's own size.

Per image: Dice, 95th-percentile Hausdorff distance (pixels; MONAI's ``compute_hausdorff_distance``), whether
the prediction is empty and how many predicted pixels lie below the true mask's lowest row by more than
``margin`` of the image height (a mask leaking below the diaphragm). Summary: mean Dice and HD95 with
patient-bootstrap 95% CIs, the worst image, and a figure of the ``worst`` lowest-Dice cases (image, truth,
prediction). Writes ``lung_scores.json`` and ``worst_cases.png`` to ``--output_dir``.

    python scripts/lung_report.py data/real/covid.json OUT --output_dir docs/results/lung
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import fire
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from monai.metrics import compute_hausdorff_distance  # noqa: E402
from PIL import Image  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bundle.data.datalist import read_datalist  # noqa: E402
from bundle.data.sources import stem  # noqa: E402
from bundle.metrics.bootstrap import bootstrap_ci  # noqa: E402


def read_binary_mask(path: Path) -> np.ndarray:
    """A mask image of any mode as a boolean array: nonzero pixels are inside."""
    with Image.open(path) as image:
        return np.asarray(image.convert("L")) > 0


def score_image(pred: np.ndarray, truth: np.ndarray, margin: float = 0.02) -> dict[str, float]:
    """Dice, HD95 (pixels), emptiness and below-the-lungs pixels of one (rows, columns) prediction."""
    if pred.shape != truth.shape:
        raise ValueError(f"prediction is {pred.shape[::-1]} but the true mask is {truth.shape[::-1]} (W x H)")
    total = pred.sum() + truth.sum()
    dice = 2.0 * np.logical_and(pred, truth).sum() / total if total else 1.0
    hd95 = float("nan")
    if pred.any() and truth.any():
        tensors = [torch.as_tensor(m[None, None]) for m in (pred, truth)]
        hd95 = float(compute_hausdorff_distance(*tensors, percentile=95)[0, 0])
    rows = np.flatnonzero(truth.any(axis=1))
    limit = (rows.max() if len(rows) else -1) + margin * truth.shape[0]
    below = int(pred[np.arange(pred.shape[0]) > limit].sum())
    return {"dice": float(dice), "hd95_px": hd95, "empty": bool(not pred.any()), "pixels_below_lungs": below}


def _figure(cases: list[dict], path: Path) -> None:
    fig, axes = plt.subplots(len(cases), 3, figsize=(7.5, 2.6 * len(cases)), squeeze=False)
    for row, case in zip(axes, cases):
        image = np.asarray(Image.open(case["image"]).convert("L"))
        for ax, (title, shown) in zip(row, (("image", None), ("truth", case["truth"]), ("prediction", case["pred"]))):
            ax.imshow(image, cmap="gray")
            if shown is not None:
                ax.imshow(np.ma.masked_where(~shown, shown), cmap="autumn", alpha=0.45)
            ax.set_title(f"{title}" + (f"  Dice {case['dice']:.3f}" if title == "prediction" else
                                       f"  {case['name']}" if title == "image" else ""), fontsize=7)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def collect_cases(datalist: str, predictions: str, split: str = "testing") -> list[dict]:
    """Per-image scores of every entry of ``split`` with a mask; ``predictions`` is ``run inference``'s output
    folder (``<stem>_mask.png`` per image)."""
    base = Path(datalist).resolve().parent
    entries = [e for e in read_datalist(datalist)[split] if "mask" in e]
    if not entries:
        raise SystemExit(f"{datalist}: no entry of '{split}' has a mask")
    cases = []
    for entry in entries:
        image = base / entry["image"]
        pred_file = Path(predictions) / f"{stem(image)}_mask.png"
        if not pred_file.is_file():
            raise SystemExit(f"{pred_file}: no prediction for {image} (run inference on the split's images first)")
        truth, pred = read_binary_mask(base / entry["mask"]), read_binary_mask(pred_file)
        cases.append({"name": stem(image), "image": str(image), "patient_id": str(entry["patient_id"]),
                      "truth": truth, "pred": pred, **score_image(pred, truth)})
    return cases


def summarise(cases: list[dict], output_dir: str, worst: int = 5, n_resamples: int = 1000, seed: int = 0) -> dict:
    """Mean Dice and HD95 with patient-bootstrap 95% CIs, empty and leaking masks, the worst image; writes
    ``lung_scores.json`` and the figure of the ``worst`` lowest-Dice cases to ``output_dir``."""
    patients = [c["patient_id"] for c in cases]
    dice = np.array([c["dice"] for c in cases])
    hd95 = np.array([c["hd95_px"] for c in cases])
    summary = {
        "images": len(cases), "patients": len(set(patients)),
        "dice": bootstrap_ci(lambda i: float(dice[i].mean()), patients, n_resamples, seed)._asdict(),
        "hd95_px": bootstrap_ci(lambda i: float(np.nanmean(hd95[i])), patients, n_resamples, seed)._asdict(),
        "empty_masks": int(sum(c["empty"] for c in cases)),
        "images_with_pixels_below_lungs": int(sum(c["pixels_below_lungs"] > 0 for c in cases)),
        "worst": min(cases, key=lambda c: c["dice"])["name"],
    }
    ranked = sorted(cases, key=lambda c: c["dice"])
    out = Path(output_dir)
    out.mkdir(parents=True, exist_ok=True)
    _figure(ranked[:worst], out / "worst_cases.png")
    per_image = [{k: v for k, v in c.items() if k not in ("truth", "pred", "image")} for c in ranked]
    (out / "lung_scores.json").write_text(json.dumps({"summary": summary, "per_image": per_image}, indent=1))
    return summary


def main(datalist: str, predictions: str, output_dir: str, split: str = "testing", worst: int = 5,
         n_resamples: int = 1000, seed: int = 0) -> None:
    """Score every entry of ``split`` with a mask against ``run inference``'s masks in ``predictions``."""
    summary = summarise(collect_cases(datalist, predictions, split), output_dir, worst, n_resamples, seed)
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    fire.Fire(main)
