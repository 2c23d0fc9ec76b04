"""Reading MONAI datalist JSON files with per-entry checks."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

#: Entry keys holding file paths, resolved against the datalist's folder (or ``base_dir``).
PATH_KEYS: tuple[str, ...] = ("image", "mask")


class DatalistError(ValueError):
    """A datalist entry is unusable; the message names the datalist, the entry and the problem."""


def read_entries(path: str | Path, key: str = "training", base_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Entries of ``key`` in the datalist at ``path`` with file paths made absolute (not checked to exist)."""
    path = Path(path)
    try:
        content = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise DatalistError(f"{path}: cannot read datalist JSON ({err})") from err
    if key not in content:
        raise DatalistError(f"{path}: no '{key}' list (has: {sorted(k for k in content if isinstance(content[k], list))})")
    root = Path(base_dir) if base_dir is not None else path.parent
    entries: list[dict[str, Any]] = []
    for index, raw in enumerate(content[key]):
        if not isinstance(raw, dict) or not isinstance(raw.get("image"), str):
            raise DatalistError(f"{path}: {key}[{index}] must be an object with an 'image' path, got {raw!r}")
        entry = dict(raw)
        for name in PATH_KEYS:
            if isinstance(entry.get(name), str):
                entry[name] = str((root / entry[name]).resolve())
        entries.append(entry)
    return entries


def load_datalist(path: str | Path, key: str = "training", base_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Entries of ``key`` in the datalist at ``path`` with file paths made absolute and checked to exist.

    Every missing file is reported at once, each with its entry index, key and path.
    """
    entries = read_entries(path, key, base_dir)
    missing = [
        f"{key}[{index}] '{name}': file not found: {entry[name]}"
        for index, entry in enumerate(entries)
        for name in PATH_KEYS
        if name in entry and not Path(entry[name]).is_file()
    ]
    if missing:
        raise DatalistError(f"{path}: {len(missing)} missing file(s):\n  " + "\n  ".join(missing))
    return entries


def describe_datalist(path: str | Path) -> dict[str, int]:
    """Log the datalist's split sizes, flagging synthetic data loudly; return the sizes."""
    content = json.loads(Path(path).read_text())
    sizes = {k: len(v) for k, v in content.items() if isinstance(v, list) and v and isinstance(v[0], dict)}
    kind = "SYNTHETIC demo phantoms (not real chest X-rays)" if content.get("synthetic") else "datalist"
    logging.getLogger("bundle.data").warning("%s %s: %s", kind, path, sizes)
    return sizes
