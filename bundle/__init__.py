"""MultiCheXNet MONAI bundle components, named by the configs (``bundle.networks.MultiCheXNet`` ...).

Subpackages are imported when first used (``bundle.networks`` ...), so that a runtime needing only a light
part (``bundle.decisions`` in the MONAI Deploy environment) does not import Ignite, ITK or the engines.
"""

from __future__ import annotations

import importlib
from types import ModuleType

__all__ = [
    "data", "decisions", "detection", "engines", "handlers", "inference", "losses", "metrics", "networks", "outputs",
    "packaging",
]


def __getattr__(name: str) -> ModuleType:
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
