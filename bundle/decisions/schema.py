"""The prediction record's JSON Schema (``docs/schemas/prediction.schema.json``) and its validation."""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any

#: Version of the record layout, the schema's ``schema_version`` constant.
SCHEMA_VERSION = "1.0.0"
SCHEMA_PATH = Path(__file__).resolve().parents[2] / "docs" / "schemas" / "prediction.schema.json"


@lru_cache(maxsize=1)
def prediction_schema() -> dict[str, Any]:
    """The schema as a dict."""
    return json.loads(SCHEMA_PATH.read_text(encoding="utf-8"))


def validate_record(record: Any) -> None:
    """Raise ValueError naming the first offending field when ``record`` does not follow the schema
    (needs ``jsonschema``, in the ``test`` extra)."""
    from jsonschema import Draft202012Validator

    validator = Draft202012Validator(prediction_schema(), format_checker=Draft202012Validator.FORMAT_CHECKER)
    errors = sorted(validator.iter_errors(record), key=lambda e: list(e.absolute_path))
    if errors:
        first = errors[0]
        where = "/".join(str(p) for p in first.absolute_path) or "(record)"
        raise ValueError(f"prediction record does not follow {SCHEMA_PATH.name} at {where}: {first.message}")
