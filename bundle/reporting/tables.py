"""The paper's comparison tables (Ibrahim et al., MultiCheXNet, arXiv:2008.01973) built from metrics.json files.

Each table compares runs given by role; a cell is ``value (low, high)`` with the patient-bootstrap 95% CI, and
"—" where a run was not given or does not report that metric.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

MISSING = "—"

HEADLINE: tuple[tuple[str, str], ...] = (
    ("cls/auroc_macro", "AUROC (macro)"),
    ("cls/f1_macro", "F1 (macro)"),
    ("cls/f1_micro", "F1 (micro)"),
    ("seg/dice_mean", "Dice (all images)"),
    ("seg/dice_positive", "Dice (positive images)"),
    ("det/rsna_map", "RSNA mAP"),
    ("det/coco_map", "COCO mAP@[.50:.95]"),
)
GATING: tuple[tuple[str, str], ...] = (
    ("seg/dice_mean", "Dice"),
    ("seg/dice_mean_gated", "Dice, gated"),
    ("seg/dice_positive", "Dice (positive)"),
    ("seg/dice_positive_gated", "Dice (positive), gated"),
    ("det/rsna_map", "RSNA mAP"),
    ("det/rsna_map_gated", "RSNA mAP, gated"),
    ("seg/gate_auroc", "Seg gate AUROC"),
    ("det/gate_auroc", "Det gate AUROC"),
)


@dataclass(frozen=True)
class TableSpec:
    """A comparison table: runs (role, label) against metrics (key, label).

    ``per_class`` tables have one row per class of the runs' ``class_names`` (metric ``<metric>/<class>``) plus
    the macro mean, and one column per run.
    """

    title: str
    roles: tuple[tuple[str, str], ...]
    metrics: tuple[tuple[str, str], ...] = HEADLINE
    per_class: str | None = None


TABLES: dict[str, TableSpec] = {
    "table1": TableSpec(
        "Table 1. Single-task baselines vs BigBang multi-task learning vs MultiCheXNet",
        (
            ("single_cls", "Single-task classifier"),
            ("single_seg", "Single-task segmenter"),
            ("single_det", "Single-task detector"),
            ("bigbang", "BigBang MTL"),
            ("multichexnet", "MultiCheXNet"),
        ),
    ),
    "table2": TableSpec(
        "Table 2. 100% teacher forcing vs gated heads",
        (("teacher_forcing", "100% teacher forcing"), ("gated", "Gated")),
        GATING,
    ),
    "table3": TableSpec(
        "Table 3. Transfer learning vs training from scratch",
        (("transfer", "Transfer (pre-trained encoder)"), ("scratch", "From scratch")),
    ),
    "table4": TableSpec(
        "Table 4. MultiCheXNet classifier vs CheXNet-style multi-label baseline (AUROC per finding)",
        (("multichexnet", "MultiCheXNet classifier"), ("chexnet", "CheXNet-style baseline")),
        (("cls/auroc_macro", "Mean (macro)"),),
        per_class="cls/auroc",
    ),
}


def parse_roles(text: str | Mapping[str, str], spec: TableSpec) -> dict[str, str]:
    """``"role=path,role=path"`` (or a mapping) as {role: path}, refusing roles the table does not have."""
    pairs = dict(text) if isinstance(text, Mapping) else dict(p.split("=", 1) for p in str(text).split(",") if p)
    known = [role for role, _ in spec.roles]
    unknown = sorted(set(pairs) - set(known))
    if unknown:
        raise ValueError(f"{spec.title}: unknown role(s) {unknown}; expected some of {known}")
    return {role.strip(): path.strip() for role, path in pairs.items()}


def format_cell(entry: Mapping[str, Any] | None, digits: int = 3) -> str:
    """``value (low, high)``; "—" without a value; the value alone without an interval."""
    if not entry or entry.get("value") is None:
        return MISSING
    value = f"{entry['value']:.{digits}f}"
    if entry.get("low") is None or entry.get("high") is None:
        return value
    return f"{value} ({entry['low']:.{digits}f}, {entry['high']:.{digits}f})"


def build_table(spec: TableSpec, runs: Mapping[str, Mapping[str, Any]]) -> tuple[list[str], list[list[str]], list[str]]:
    """(header, rows, notes) of ``spec`` for the metrics.json contents ``runs`` given by role."""
    notes = [f"{label}: not provided." for role, label in spec.roles if role not in runs]
    if spec.per_class:
        class_names: Sequence[str] = next((r.get("class_names", []) for r in runs.values()), [])
        keys = [(f"{spec.per_class}/{name}", name) for name in class_names] + list(spec.metrics)
        header = ["Metric"] + [label for _, label in spec.roles]
        rows = [
            [label] + [format_cell(runs.get(role, {}).get("metrics", {}).get(key)) for role, _ in spec.roles]
            for key, label in keys
        ]
    else:
        header = ["Model"] + [label for _, label in spec.metrics]
        rows = [
            [label] + [format_cell(runs.get(role, {}).get("metrics", {}).get(key)) for key, _ in spec.metrics]
            for role, label in spec.roles
        ]
    notes.append(f"Cells: value (95% CI, patient bootstrap); {MISSING}: not evaluated or not defined.")
    return header, rows, notes
