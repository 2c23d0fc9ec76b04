"""Evaluation reports: the paper's tables, figures and per-run sections, as Markdown and self-contained HTML."""

from .build import build_report
from .tables import TABLES

__all__ = ["TABLES", "build_report"]
