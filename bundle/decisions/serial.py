"""Reading the decision settings' dataclasses back from JSON dicts, with errors that name the entry."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")


def from_fields(cls: type[T], data: Mapping[str, Any], where: str) -> T:
    """``cls(**data)``; a field ``cls`` does not have is an error naming ``where`` and the known fields."""
    if not isinstance(data, Mapping):
        raise ValueError(f"{where}: expected an object, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"{where}: unknown fields {sorted(unknown)}; expected some of {sorted(known)}")
    return cls(**data)
