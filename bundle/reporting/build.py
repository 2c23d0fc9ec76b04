"""Assemble the evaluation report: the paper's comparison tables, then one section per metrics.json with its
decision policy, metrics, per-class table, reliability diagrams and (when a predictions.npz lies beside it)
curves and gallery."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from bundle.decisions import MaskPostprocessing

from .document import Block, Figure, Heading, Paragraph, Table, to_html, to_markdown
from .figures import gallery_figure, reliability_figure, roc_pr_figures
from .tables import MISSING, TABLES, build_table, format_cell, parse_roles

PER_CLASS_COLUMNS: tuple[tuple[str, str], ...] = (
    ("cls/auroc", "AUROC"),
    ("cls/f1", "F1"),
    ("cls/sensitivity", "Sensitivity"),
    ("cls/specificity", "Specificity"),
    ("cls/accuracy", "Accuracy"),
    ("cls/ece_uncalibrated", "ECE uncalibrated"),
    ("cls/ece_calibrated", "ECE calibrated"),
)
SALIENCY_COLUMNS: tuple[tuple[str, str], ...] = (
    ("sal/cc", "CC"), ("sal/kl", "KL (lower is better)"), ("sal/sim", "SIM"), ("sal/nss", "NSS"),
    ("sal/auc_judd", "AUC-Judd"),
)
SALIENCY_ROWS: tuple[tuple[str, str], ...] = (
    ("", "saliency head"), ("/mean_gaze", "mean training gaze map"), ("/centre_bias", "centre bias"),
)


def load_metrics(path: str | Path) -> dict[str, Any]:
    """Contents of a metrics.json."""
    return json.loads(Path(path).read_text())


def _run_name(path: Path, taken: set[str]) -> str:
    name = path.parent.name or path.stem
    while name in taken:
        name = f"{name}_"
    taken.add(name)
    return name


def _point(point: Mapping[str, Any]) -> str:
    """An operating point as ``threshold (rule)``, ``(default)`` for a default kept instead of a choice."""
    return f"{point['threshold']:.3f} ({'default' if point.get('fallback') else point['rule']})"


def policy_paragraphs(policy: Mapping[str, Any]) -> list[Block]:
    """Where the decision policy came from, its gate, mask and box settings, and the defaults it kept."""
    settings = policy["settings"]
    gates = ", ".join(f"{g} {_point(p)}" for g, p in settings["gates"].items())
    mask, boxes = settings["mask"], settings["boxes"]
    origin = f"chosen on this split and written into {policy['written_to']}" if policy["chosen_on_this_split"] \
        else policy["source"]
    blocks: list[Block] = [Paragraph(
        f"Decision policy: {origin}. Tasks {settings['tasks']}; gates {gates}; mask threshold "
        f"{_point(settings['mask_threshold'])}, fill holes {mask['fill_holes']}, neck cut "
        f"{mask.get('neck_fraction', 0.0):g} of the shorter side, minimum component "
        f"max({mask['min_area_pixels']} px, {mask['min_area_fraction']:g} of the image), keep largest "
        f"{mask['keep_largest']}; box score {_point(settings['box_score'])}, NMS IoU {boxes['nms_iou']}, at most "
        f"{boxes['max_boxes']} boxes."
    )]
    if policy["fallbacks"]:
        blocks.append(Paragraph("Defaults kept instead of choices: " + "; ".join(
            f"{key}: {reason}" for key, reason in policy["fallbacks"].items()) + "."))
    return blocks


def run_section(name: str, path: Path, run: Mapping[str, Any], out_dir: Path) -> list[Block]:
    """Blocks describing one evaluation: provenance, decision policy, all summary metrics, per-class metrics and
    calibration, figures."""
    data, ckpt, boot = run["dataset"], run["checkpoint"], run["bootstrap"]
    blocks: list[Block] = [Heading(f"Run: {name}"), Paragraph(f"Source: {path}")]
    if data.get("synthetic"):
        blocks.append(Paragraph("WARNING: synthetic demo phantoms, not real chest X-rays: nothing clinical here."))
    blocks.append(Paragraph(
        f"Dataset: {data['datalist']} (split '{data['split']}'): {data['images']} images of {data['patients']} "
        f"patients; {data['images_with_cls']} with findings, {data['images_with_seg']} with masks, "
        f"{data['images_with_det']} with boxes. Checkpoint: {ckpt['path']} (sha256 {ckpt['sha256']}). "
        f"CIs: {boot['method']} bootstrap over {boot['unit']}s, {boot['resamples']} resamples, seed {boot['seed']}."
    ))
    policy = run.get("policy")
    blocks += policy_paragraphs(policy) if policy else [Paragraph("No decision policy recorded in this metrics.json.")]
    metrics = run["metrics"]
    summary = sorted(k for k in metrics if k.count("/") == 1)
    blocks.append(Table(["Metric", "Value (95% CI)"], [[k, format_cell(metrics[k])] for k in summary]))
    if "sal/cc" in metrics:
        blocks.append(Table(["Saliency map"] + [label for _, label in SALIENCY_COLUMNS], [
            [label] + [format_cell(metrics.get(key + suffix)) for key, _ in SALIENCY_COLUMNS]
            for suffix, label in SALIENCY_ROWS if any(key + suffix in metrics for key, _ in SALIENCY_COLUMNS)
        ]))
    names = run.get("class_names", [])
    findings = policy["settings"]["findings"] if policy else {}
    rows = [
        [c] + [format_cell(metrics.get(f"{key}/{c}")) for key, _ in PER_CLASS_COLUMNS]
        + [_point(findings[c]) if c in findings else MISSING]
        for c in names
    ]
    if rows:
        blocks.append(Table(["Finding"] + [label for _, label in PER_CLASS_COLUMNS] + ["Threshold (rule)"], rows))
    if "calibration" in run:
        blocks.append(Figure(
            reliability_figure(run["calibration"], metrics, out_dir, name.replace("/", "_")),
            f"{name}: reliability per finding, before (dashed) and after (solid) calibration",
        ))
    predictions = path.parent / "predictions.npz"
    if predictions.is_file():
        prefix = name.replace("/", "_")
        with np.load(predictions) as pred:
            loaded = {k: pred[k] for k in pred.files}
        roc, pr = roc_pr_figures(loaded, out_dir, prefix)
        blocks += [Figure(roc, f"{name}: ROC curve per finding"), Figure(pr, f"{name}: precision-recall per finding")]
        if policy:
            settings = policy["settings"]
            mask = MaskPostprocessing.from_dict(settings["mask"])
            gallery = gallery_figure(loaded, out_dir, prefix, settings["mask_threshold"]["threshold"], mask)
            if gallery is not None:
                blocks.append(Figure(gallery, f"{name}: truth in green, decided masks and boxes in red (ungated)"))
    else:
        blocks.append(Paragraph(f"No predictions.npz beside {path}: no curves or gallery."))
    return blocks


def build_report(
    metrics_files: Sequence[str | Path],
    out_dir: str | Path,
    tables: Mapping[str, str | Mapping[str, str]] | None = None,
    title: str = "MultiCheXNet evaluation report",
    command: str | None = None,
) -> dict[str, Path | list[Path]]:
    """Write ``report.md``, ``report.html`` and the PNG figures in ``out_dir``; return their paths.

    Args:
        metrics_files: metrics.json files, each given its own section.
        tables: for ``table1`` .. ``table4``, the metrics.json of each role (``"role=path,..."``); every table
            is shown, with "—" rows for the roles not given.
        command: the command line that made the report, recorded in it.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    blocks: list[Block] = [Heading(title, 1)]
    if command:
        blocks.append(Paragraph(f"Generated by: {command}"))
    tables = dict(tables or {})
    unknown = sorted(set(tables) - set(TABLES))
    if unknown:
        raise ValueError(f"unknown table(s) {unknown}; expected some of {sorted(TABLES)}")
    for key, spec in TABLES.items():
        runs = {role: load_metrics(p) for role, p in parse_roles(tables.get(key, ""), spec).items()}
        header, rows, notes = build_table(spec, runs)
        blocks += [Heading(spec.title), Table(header, rows, tuple(notes))]
    taken: set[str] = set()
    for file in metrics_files:
        path = Path(file)
        blocks += run_section(_run_name(path, taken), path, load_metrics(path), out)
    md, page = out / "report.md", out / "report.html"
    md.write_text(to_markdown(blocks, out))
    page.write_text(to_html(blocks, title))
    return {"markdown": md, "html": page, "figures": [b.path for b in blocks if isinstance(b, Figure)]}
