"""Report figures from a predictions.npz (written by :class:`bundle.handlers.metrics_report.MetricsReport`):
ROC and precision-recall curves per class, a calibration plot and a gallery of predictions over ground truth.
Matplotlib with the headless Agg backend; every function writes one PNG and returns its path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from matplotlib.patches import Rectangle  # noqa: E402

from bundle.metrics.classification import binary_auroc  # noqa: E402
from bundle.metrics.segmentation import postprocess_mask  # noqa: E402

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


def calibration_figure(pred: Predictions, out_dir: Path, prefix: str, bins: int = 10) -> Path:
    """Reliability diagram (observed frequency against mean predicted probability, equal-width bins) of the
    classifier pooled over its known labels and of the two gates, with the distribution of probabilities."""
    known = pred["cls_known"].astype(bool) & pred["has_cls"].astype(bool)[:, None]
    series = {
        "classifier (all findings)": (pred["cls_prob"][known], pred["cls"][known]),
        "segmentation gate": (pred["seg_gate_prob"][pred["has_seg"]], pred["seg_positive"][pred["has_seg"]]),
        "detection gate": (
            pred["det_gate_prob"][pred["has_det"]],
            np.bincount(pred["true_image"], minlength=len(pred["has_det"]))[pred["has_det"]] > 0,
        ),
    }
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(5, 6), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    top.plot([0, 1], [0, 1], ":", color="grey")
    edges = np.linspace(0, 1, bins + 1)
    for label, (prob, truth) in series.items():
        if len(prob) == 0:
            continue
        which = np.clip(np.digitize(prob, edges) - 1, 0, bins - 1)
        filled = [b for b in range(bins) if (which == b).any()]
        mean_prob = [prob[which == b].mean() for b in filled]
        top.plot(mean_prob, [truth[which == b].mean() for b in filled], "o-", label=label)
        bottom.hist(prob, bins=edges, histtype="step", label=label)
    top.set(ylabel="observed frequency", xlim=(0, 1), ylim=(0, 1), title="Calibration")
    top.legend(fontsize=7)
    bottom.set(xlabel="predicted probability", ylabel="count")
    return _save(fig, out_dir / f"{prefix}_calibration.png")


def gallery_figure(
    pred: Predictions,
    out_dir: Path,
    prefix: str,
    seg_threshold: float = 0.5,
    seg_min_area: int = 0,
    box_score: float = 0.5,
) -> Path | None:
    """Images with true masks/boxes (green) and predicted masks/boxes (red, boxes scoring >= ``box_score``);
    the predicted mask is post-processed as in the metrics (minimum area scaled to the gallery's size)."""
    if "gallery_index" not in pred:
        return None
    index = pred["gallery_index"]
    fig, axes = _grid(len(index), size=2.4)
    scale = pred["gallery_image"].shape[1] / np.asarray(pred["image_size"], dtype=float)
    min_area = round(seg_min_area * float(np.prod(scale)))
    for ax, k, i in zip(axes, range(len(index)), index):
        # arrays are (x, y): transpose so that x runs across and y down, as boxes [x1, y1, x2, y2] expect
        ax.imshow(pred["gallery_image"][k].T, cmap="gray")
        predicted = postprocess_mask(pred["gallery_seg_prob"][k] / 255, seg_threshold, min_area)
        for mask, color in ((pred["gallery_mask"][k], "lime"), (predicted, "red")):
            if mask.any() and not mask.all():
                ax.contour(mask.T.astype(float), levels=[0.5], colors=color, linewidths=0.8)
        for boxes, color, style in (
            (pred["true_boxes"][pred["true_image"] == i], "lime", "-"),
            (pred["pred_boxes"][(pred["pred_image"] == i) & (pred["pred_scores"] >= box_score)], "red", "--"),
        ):
            for x1, y1, x2, y2 in boxes * np.tile(scale, 2):
                ax.add_patch(Rectangle((x1, y1), x2 - x1, y2 - y1, fill=False, color=color, ls=style, lw=0.8))
        ax.set_title(f"{pred['patient_id'][i]} / {Path(str(pred['image'][i])).stem}"[:32], fontsize=6)
        ax.axis("off")
    return _save(fig, out_dir / f"{prefix}_gallery.png")
