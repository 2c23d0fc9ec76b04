"""Build the evaluation report (Markdown + self-contained HTML + PNG figures) from metrics.json files.

    python scripts/report.py build eval/metrics.json --out docs/results/demo \
        --table1 "bigbang=runs/bigbang/metrics.json,multichexnet=eval/metrics.json" \
        --table2 "teacher_forcing=runs/tf/metrics.json,gated=eval/metrics.json"

Roles: table1 single_cls, single_seg, single_det, bigbang, multichexnet; table2 teacher_forcing, gated;
table3 transfer, scratch; table4 multichexnet, chexnet. Each run's section shows its decision policy and
reliability diagrams (from metrics.json); curves and gallery need the predictions.npz that the evaluation writes
beside each metrics.json.
"""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import fire

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bundle.reporting import build_report  # noqa: E402


def build(
    *metrics_files: str,
    out: str = "report",
    table1: str = "",
    table2: str = "",
    table3: str = "",
    table4: str = "",
    title: str = "MultiCheXNet evaluation report",
) -> str:
    """Write report.md, report.html and figures to ``out``; return the Markdown path."""
    tables = {"table1": table1, "table2": table2, "table3": table3, "table4": table4}
    command = "python scripts/report.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    paths = build_report(metrics_files, out, tables, title, command)
    return str(paths["markdown"])


if __name__ == "__main__":
    fire.Fire({"build": build})
