"""Report figures from a predictions.npz and metrics.json (written by
:class:`bundle.handlers.metrics_report.MetricsReport`): ROC and precision-recall curves per class, reliability
diagrams per finding and a gallery of decisions over ground truth. Matplotlib with the headless Agg backend; every
function writes one PNG and returns its path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from bundle.decisions import MaskPostprocessing, postprocess_mask  # noqa: E402
from bundle.metrics.classification import binary_auroc  # noqa: E402

Predictions = Mapping[str, np.ndarray]


def curve_points(scores: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """False/true positive rates and precision/recall at every distinct score threshold (highest first)."""
    order = np.argsort(-scores, kind="mergesort")
    scores, labels = scores[order], labels[order].astype(bool)
    last = np.r_[np.flatnonzero(np.diff(scores)), scores.size - 1]
    tp, fp = np.cumsum(labels)[last], np.cumsum(~labels)[last]
    n_pos, n_neg = max(int(labels.sum()), 1), max(int((~labels).sum()), 1)
    return {
        "fpr": np.r_[0.0, fp / n_neg],
        "tpr": np.r_[0.0, tp / n_pos],
        "recall": np.r_[0.0, tp / n_pos],
        "precision": np.r_[1.0, tp / (tp + fp)],
    }


def _grid(n: int, size: float = 2.6) -> tuple[plt.Figure, np.ndarray]:
    cols = min(n, 4)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(size * cols, size * rows), squeeze=False)
    for ax in axes.ravel()[n:]:
        ax.axis("off")
    return fig, axes.ravel()


def _save(fig: plt.Figure, path: Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return path


def _class_data(pred: Predictions, c: int) -> tuple[np.ndarray, np.ndarray]:
    keep = pred["has_cls"].astype(bool) & pred["cls_known"][:, c].astype(bool)
    return pred["cls_prob"][keep, c], pred["cls"][keep, c]


def roc_pr_figures(pred: Predictions, out_dir: Path, prefix: str) -> list[Path]:
    """One ROC and one precision-recall figure, a panel per class with both label values present."""
    names = [str(n) for n in pred["class_names"]]
    shown = [c for c in range(len(names)) if 0 < _class_data(pred, c)[1].sum() < len(_class_data(pred, c)[1])]
    paths = []
    for kind in ("roc", "pr"):
        fig, axes = _grid(max(len(shown), 1))
        if not shown:
            axes[0].text(0.5, 0.5, "no class with known positives and negatives", ha="center", fontsize=8)
        for ax, c in zip(axes, shown):
            scores, labels = _class_data(pred, c)
            pts = curve_points(scores, labels)
            if kind == "roc":
                ax.plot(pts["fpr"], pts["tpr"])
                ax.plot([0, 1], [0, 1], ":", color="grey")
                ax.set(xlabel="1 - specificity", ylabel="sensitivity")
                ax.set_title(f"{names[c]} AUROC {binary_auroc(scores, labels):.3f}", fontsize=8)
            else:
                ax.step(pts["recall"], pts["precision"], where="post")
                ax.axhline(labels.mean(), ls=":", color="grey")
                ax.set(xlabel="recall", ylabel="precision", ylim=(0, 1.02))
                ax.set_title(f"{names[c]} (prevalence {labels.mean():.2f})", fontsize=8)
        paths.append(_save(fig, out_dir / f"{prefix}_{kind}.png"))
    return paths


def _method(found: Mapping[str, Any]) -> str:
    return f"temperature {found['temperature']:.2f}" if found["method"] == "temperature" else found["method"]


def reliability_figure(
    calibration: Mapping[str, Any], metrics: Mapping[str, Mapping[str, Any]], out_dir: Path, prefix: str
) -> Path:
    """Reliability diagrams, a panel per finding with known labels: fraction positive against mean predicted
    probability per bin, before and after the finding's calibration, titled with both expected calibration errors.

    ``calibration`` and ``metrics`` are metrics.json's sections (``reliability_*`` from
    :meth:`bundle.decisions.ReliabilityBins.to_dict`), so no predictions are needed.
    """
    findings = {n: f for n, f in calibration["findings"].items() if sum(f["reliability_uncalibrated"]["count"])}
    fig, axes = _grid(max(len(findings), 1))
    if not findings:
        axes[0].text(0.5, 0.5, "no finding with known labels", ha="center", fontsize=8)
    for ax, (name, found) in zip(axes, findings.items()):
        ax.plot([0, 1], [0, 1], ":", color="grey")
        ece = []
        for version, style in (("uncalibrated", "o--"), ("calibrated", "s-")):
            bins = found[f"reliability_{version}"]
            filled = [i for i, c in enumerate(bins["count"]) if c]
            ax.plot([bins["confidence"][i] for i in filled], [bins["accuracy"][i] for i in filled], style, ms=3,
                    label=version)
            value = (metrics.get(f"cls/ece_{version}/{name}") or {}).get("value")
            ece.append("—" if value is None else f"{value:.3f}")
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="mean predicted probability", ylabel="fraction positive")
        ax.set_title(f"{name}: ECE {ece[0]} -> {ece[1]}\n({_method(found)})", fontsize=7)
        ax.legend(fontsize=6, loc="upper left")
    return _save(fig, out_dir / f"{prefix}_reliability.png")


def gallery_figure(
    pred: Predictions, out_dir: Path, prefix: str, mask_threshold: float, mask: MaskPostprocessing
) -> Path | None:
    """Images with true masks/boxes (green) and the decided masks/boxes (red): the mask post-processed by
    :func:`bundle.decisions.postprocess_mask` with the policy's settings (a minimum area in pixels scaled to the
    gallery's size), the boxes the decision step kept, both ungated."""
    if "gallery_index" not in pred:
        return None
    index = pred["gallery_index"]
    fig, axes = _grid(len(index), size=2.4)
    scale = pred["gallery_image"].shape[1] / np.asarray(pred["image_size"], dtype=float)
    shown = replace(mask, min_area_pixels=round(mask.min_area_pixels * float(np.prod(scale))))
    for ax, k, i in zip(axes, range(len(index)), index):
        # arrays are (x, y): transpose so that x runs across and y down, as boxes [x1, y1, x2, y2] expect
        ax.imshow(pred["gallery_image"][k].T, cmap="gray")
        predicted = postprocess_mask(pred["gallery_seg_prob"][k] / 255, mask_threshold, shown)
        for drawn, color in ((pred["gallery_mask"][k], "lime"), (predicted, "red")):
            if drawn.any() and not drawn.all():
                ax.contour(drawn.T.astype(float), levels=[0.5], colors=color, linewidths=0.8)
        for boxes, color, style in (
            (pred["true_boxes"][pred["true_image"] == i], "lime", "-"),
            (pred["kept_boxes"][pred["kept_image"] == i], "red", "--"),
        ):
            for x1, y1, x2, y2 in boxes * np.tile(scale, 2):
                ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color=color, ls=style, lw=0.8))
        ax.set_title(f"{pred['patient_id'][i]} / {Path(str(pred['image'][i])).stem}"[:32], fontsize=6)
        ax.axis("off")
    return _save(fig, out_dir / f"{prefix}_gallery.png")
