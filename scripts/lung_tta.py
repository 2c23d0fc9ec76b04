"""Test-time augmentation and mask-threshold check for a lung cross-validation fold: Dice with and without
averaging the mask probabilities over small scalings or shifts of the input, each mapped back before averaging,
and of the plain probabilities at other mask thresholds.

Every variant goes through ``run inference``'s decision (``bundle.decisions.decide`` under the model's policy:
gate, bilinear resize to the image's size, threshold, mask post-processing) with the averaged probability in place
of the network's, so the plain variant reproduces ``run inference``'s masks.

    python scripts/lung_tta.py cv/lung/fold_4
    python scripts/lung_tta.py cv/lung/fold_4 --thresholds "[0.3, 0.4, 0.6]"
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import fire
import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import Resize

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bundle.data import load_cxr  # noqa: E402
from bundle.decisions import decide, image_heads  # noqa: E402
from bundle.packaging import read_checkpoint, read_package  # noqa: E402
from lung_report import read_binary_mask, score_image  # noqa: E402

#: (scale, shift along W, shift along H as fractions of the half side) per variant; the first is the plain pass.
VARIANTS: dict[str, list[tuple[float, float, float]]] = {
    "plain": [(1.0, 0.0, 0.0)],
    "scales": [(1.0, 0.0, 0.0), (0.92, 0.0, 0.0), (1.08, 0.0, 0.0)],
    "shifts": [(1.0, 0.0, 0.0), (1.0, 0.05, 0.0), (1.0, -0.05, 0.0), (1.0, 0.0, 0.05), (1.0, 0.0, -0.05)],
}


def _theta(scale: float, dx: float, dy: float) -> torch.Tensor:
    return torch.tensor([[[1.0 / scale, 0.0, dx], [0.0, 1.0 / scale, dy]]])


def _inverse(theta: torch.Tensor) -> torch.Tensor:
    full = torch.cat([theta[0], torch.tensor([[0.0, 0.0, 1.0]])])
    return torch.linalg.inv(full)[:2][None]


def _probability(network: torch.nn.Module, image: torch.Tensor, warps: list[tuple[float, float, float]]) -> torch.Tensor:
    """Mean (1, 1, W, H) mask probability over ``warps`` of the (1, 1, W, H) ``image``, each mapped back."""
    probs = []
    for warp in warps:
        theta = _theta(*warp)
        moved = F.grid_sample(image, F.affine_grid(theta, image.shape, align_corners=False), align_corners=False)
        with torch.no_grad():
            prob = torch.sigmoid(network(moved, ["seg"])["seg"].float())
        back = F.affine_grid(_inverse(theta), image.shape, align_corners=False)
        probs.append(F.grid_sample(prob, back, padding_mode="border", align_corners=False))
    return torch.stack(probs).mean(0)


def main(fold_dir: str, threads: int = 1, thresholds: float | tuple[float, ...] = ()) -> None:
    """Print, per variant, the mean Dice and the images with mask pixels below the lungs over the
    fold's masked test images (``fold_dir`` as written by ``scripts/lung_crossval.py``); each of ``thresholds``
    adds a variant ``threshold_<t>``: the plain probabilities decided at mask threshold ``t``."""
    torch.set_num_threads(threads)
    fold = Path(fold_dir)
    model = fold / "model" / "model.pt"
    package = read_package(model)
    network = package.network()
    network.load_state_dict(read_checkpoint(model)["model"])
    network.eval()
    policy = package.policy
    entries = [e for e in json.loads((fold / "datalist.json").read_text())["testing"] if "mask" in e]
    if isinstance(thresholds, (int, float)):  # ``--thresholds 0.4``: fire passes one number
        thresholds = (thresholds,)
    thresholded = {f"threshold_{t}": policy.override(mask_threshold=t, reason="threshold check") for t in thresholds}
    scores: dict[str, list[dict]] = {name: [] for name in [*VARIANTS, *thresholded]}
    for entry in entries:
        image = load_cxr(entry["image"])
        small = Resize(spatial_size=policy.image_size, mode="area")(image).as_tensor()[None].float()
        truth = read_binary_mask(Path(entry["mask"]))
        with torch.no_grad():
            heads = network(small)
        for name, warps in VARIANTS.items():
            prob = _probability(network, small, warps).clamp(1e-7, 1 - 1e-7)
            one = image_heads({**heads, "seg": torch.logit(prob)}, 0)
            mask = decide(one, policy, tuple(image.shape[1:])).mask
            scores[name].append(score_image(mask.T, truth))  # (W, H) -> (rows, columns)
        plain = image_heads(heads, 0)
        for name, other in thresholded.items():
            scores[name].append(score_image(decide(plain, other, tuple(image.shape[1:])).mask.T, truth))
    summary = {
        name: {"dice_mean": round(float(np.mean([s["dice"] for s in rows])), 4),
               "images_with_pixels_below_lungs": sum(s["pixels_below_lungs"] > 0 for s in rows),
               "dice": [round(s["dice"], 3) for s in rows]}
        for name, rows in scores.items()
    }
    print(json.dumps(summary))


if __name__ == "__main__":
    fire.Fire(main)
