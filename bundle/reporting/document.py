"""A report as a list of blocks, rendered to Markdown (images linked) and to a self-contained HTML page
(images inlined as base64)."""

from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    text: str


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    notes: tuple[str, ...] = ()


@dataclass
class Figure:
    path: Path
    caption: str


Block = Heading | Paragraph | Table | Figure


def to_markdown(blocks: list[Block], base: Path) -> str:
    """Markdown of the blocks; figures are linked relative to ``base`` (the folder of the .md file)."""
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Paragraph):
            lines += [block.text, ""]
        elif isinstance(block, Table):
            lines.append("| " + " | ".join(block.header) + " |")
            lines.append("|" + "---|" * len(block.header))
            lines += ["| " + " | ".join(row) + " |" for row in block.rows]
            lines += [""] + [f"*{note}*  " for note in block.notes] + [""]
        else:
            lines += [f"![{block.caption}]({Path(block.path).relative_to(base).as_posix()})", ""]
    return "\n".join(lines)


_STYLE = (
    "body{font-family:sans-serif;max-width:1200px;margin:2em auto;padding:0 1em}"
    "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #bbb;padding:.25em .6em;font-size:.9em}"
    "th{background:#eee}td:first-child{font-weight:bold}.note{color:#555;font-size:.85em;margin:0}"
    "img{max-width:100%}figcaption{font-size:.85em;color:#555}"
)


def to_html(blocks: list[Block], title: str) -> str:
    """A standalone HTML page of the blocks, every figure embedded as a base64 PNG."""
    esc = html.escape
    parts = [f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{esc(title)}</title>"
             f"<style>{_STYLE}</style></head><body>"]
    for block in blocks:
        if isinstance(block, Heading):
            parts.append(f"<h{block.level}>{esc(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            parts.append(f"<p>{esc(block.text)}</p>")
        elif isinstance(block, Table):
            head = "".join(f"<th>{esc(h)}</th>" for h in block.header)
            body = "".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in block.rows)
            parts.append(f"<table><tr>{head}</tr>{body}</table>")
            parts += [f"<p class='note'>{esc(note)}</p>" for note in block.notes]
        else:
            data = base64.b64encode(Path(block.path).read_bytes()).decode()
            parts.append(f"<figure><img src='data:image/png;base64,{data}' alt='{esc(block.caption)}'>"
                         f"<figcaption>{esc(block.caption)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)
