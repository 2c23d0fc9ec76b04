"""Reading MONAI datalist JSON files: the file, its split lists and the structure of each entry."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

#: Entry keys holding file paths, resolved against the datalist's folder (or ``base_dir``).
PATH_KEYS: tuple[str, ...] = ("image", "mask", "saliency", "fixations")
#: What to do about a datalist that is broken as a whole.
REWRITE = "fix it, or write the datalist with scripts/prepare.py"


class DatalistError(ValueError):
    """A datalist entry is unusable; the message names the datalist, the entry and the problem."""


def json_kind(value: Any) -> str:
    """The JSON name of a parsed value's type (object, array, string, number, true/false, null)."""
    if isinstance(value, bool):
        return "true/false"
    kinds = {dict: "object", list: "array", str: "string", int: "number", float: "number", type(None): "null"}
    return kinds.get(type(value), type(value).__name__)


def read_datalist(path: str | Path) -> dict[str, Any]:
    """The parsed datalist at ``path``: a JSON object; its split lists are not checked here.

    Raises:
        DatalistError: missing, unreadable, not JSON (with line and column), or not a JSON object.
    """
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DatalistError(
            f"{path}: datalist not found (set --datalist_file, or write one with scripts/prepare.py)"
        ) from None
    except UnicodeDecodeError:
        raise DatalistError(f"{path}: not a text file (not UTF-8), so not a JSON datalist: {REWRITE}") from None
    except OSError as err:
        raise DatalistError(f"{path}: cannot read the datalist ({err})") from err
    try:
        content = json.loads(text)
    except json.JSONDecodeError as err:
        where = f"line {err.lineno}, column {err.colno}"
        raise DatalistError(f"{path}: not valid JSON: {err.msg} at {where}: {REWRITE}") from None
    if not isinstance(content, dict):
        raise DatalistError(
            f"{path}: a datalist is a JSON object with 'training'/'validation'/'testing' lists of entries, "
            f"got a JSON {json_kind(content)}: {REWRITE}"
        )
    return content


def split_list(content: dict[str, Any], path: str | Path, key: str, allow_empty: bool = False) -> list[Any]:
    """The raw ``key`` list of a parsed datalist.

    Raises:
        DatalistError: ``key`` is absent, not a list, or (unless ``allow_empty``) empty.
    """
    if key not in content:
        lists = sorted(k for k, v in content.items() if isinstance(v, list))
        raise DatalistError(f"{path}: no '{key}' list (has: {lists})")
    items = content[key]
    if not isinstance(items, list):
        raise DatalistError(f"{path}: '{key}' must be a list of entries, got a JSON {json_kind(items)}: {REWRITE}")
    if not items and not allow_empty:
        raise DatalistError(
            f"{path}: '{key}' is empty: nothing to use; fill it (scripts/prepare.py) or choose another datalist"
        )
    return items


def structure_problems(raw: Any) -> list[str]:
    """Type problems of one raw entry, each naming its field: an object with an ``image`` path; ``mask``,
    ``saliency`` and ``fixations`` paths; ``mask_rle`` a list of strings; ``patient_id`` a non-empty string or an
    integer. Label values are checked after loading (:meth:`bundle.data.transforms.PrepareTargetsd.problems`)."""
    if not isinstance(raw, dict):
        return [f"must be an object like {{\"image\": \"a.png\", \"patient_id\": \"1\"}}, got a JSON {json_kind(raw)}"]
    problems = []
    for name in PATH_KEYS:
        value = raw.get(name)
        if (name == "image" or name in raw) and not (isinstance(value, str) and value.strip()):
            problems.append(f"'{name}' must be a file path (a string), got {value!r}")
    rle = raw.get("mask_rle", [])
    if not isinstance(rle, list) or not all(isinstance(item, str) for item in rle):
        problems.append(f"'mask_rle' must be a list of RLE strings, got {rle!r}")
    if "patient_id" in raw:
        patient = raw["patient_id"]
        if isinstance(patient, bool) or not isinstance(patient, (str, int)) or not str(patient).strip():
            problems.append(f"'patient_id' must be a non-empty string or an integer, got {patient!r}")
    return problems


def resolve_paths(raw: dict[str, Any], root: Path) -> dict[str, Any]:
    """A copy of ``raw`` with its file paths made absolute against ``root``."""
    entry = dict(raw)
    for name in PATH_KEYS:
        if isinstance(entry.get(name), str):
            entry[name] = str((root / entry[name]).resolve())
    return entry


def read_entries(
    path: str | Path, key: str = "training", base_dir: str | Path | None = None, allow_empty: bool = False
) -> list[dict[str, Any]]:
    """Entries of ``key`` in the datalist at ``path`` with file paths made absolute (not checked to exist).

    Raises:
        DatalistError: the datalist or its ``key`` list is unusable (:func:`read_datalist`, :func:`split_list`),
            or entries are malformed (:func:`structure_problems`; every one is listed).
    """
    path = Path(path)
    return entries_of(read_datalist(path), path, key, base_dir, allow_empty)


def entries_of(
    content: dict[str, Any], path: str | Path, key: str, base_dir: str | Path | None = None, allow_empty: bool = False
) -> list[dict[str, Any]]:
    """:func:`read_entries` on the already parsed ``content`` of the datalist at ``path``."""
    items = split_list(content, path, key, allow_empty)
    problems = [f"{key}[{index}]: {p}" for index, raw in enumerate(items) for p in structure_problems(raw)]
    if problems:
        raise DatalistError(f"{path}: {len(problems)} malformed entry field(s):\n  " + "\n  ".join(problems))
    root = Path(base_dir) if base_dir is not None else Path(path).parent
    return [resolve_paths(raw, root) for raw in items]


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
    content = read_datalist(path)
    sizes = {k: len(v) for k, v in content.items() if isinstance(v, list) and v and isinstance(v[0], dict)}
    kind = "SYNTHETIC demo phantoms (not real chest X-rays)" if content.get("synthetic") else "datalist"
    logging.getLogger("bundle.data").warning("%s %s: %s", kind, path, sizes)
    return sizes

