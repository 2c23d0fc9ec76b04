"""Random states as plain tensors, lists and numbers, so a checkpoint holding them loads with ``weights_only=True``.

Two kinds: the process-wide generators (Python ``random``, NumPy's global ``RandomState``, torch's CPU and CUDA
generators) and the generators reachable from the training data: every MONAI ``Randomizable`` transform's
``RandomState`` ``R`` and every ``torch.Generator`` of a sampler or loader. The latter are found by walking the
data objects' attributes and named by their attribute path (``data.dataset.transform.transforms.5.R``), so the
same configuration built again finds the same names.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from monai.transforms import Randomizable

#: Values the walk does not look into: they hold no generator.
_LEAVES = (
    str,
    bytes,
    int,
    float,
    bool,
    complex,
    type(None),
    torch.Tensor,
    np.ndarray,
    np.generic,
    type,
    torch.nn.Module,
)


#: Modules whose objects (worker processes, queues, locks of a loader's live iterator) are not entered.
_PROCESS_MODULES = ("multiprocessing", "threading", "queue", "concurrent", "_thread", "torch.multiprocessing")


def _pack_numpy(state: tuple) -> dict[str, Any]:
    """A legacy NumPy (MT19937) state tuple as a tensor and numbers."""
    _, keys, pos, has_gauss, cached = state
    return {
        "keys": torch.from_numpy(keys.astype(np.int64)),
        "pos": int(pos),
        "has_gauss": int(has_gauss),
        "gauss": float(cached),
    }


def _unpack_numpy(state: Mapping[str, Any]) -> tuple:
    return ("MT19937", state["keys"].numpy().astype(np.uint32), state["pos"], state["has_gauss"], state["gauss"])


def global_random_state() -> dict[str, Any]:
    """The process-wide random states: ``python``, ``numpy``, ``torch`` and ``cuda`` (one per device, or none)."""
    version, internal, gauss = random.getstate()
    return {
        "python": [version, list(internal), gauss],
        "numpy": _pack_numpy(np.random.get_state(legacy=True)),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def set_global_random_state(state: Mapping[str, Any]) -> None:
    """Restore what :func:`global_random_state` returned (CUDA states for the devices present)."""
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    np.random.set_state(_unpack_numpy(state["numpy"]))
    torch.set_rng_state(state["torch"])
    if torch.cuda.is_available() and state["cuda"]:
        torch.cuda.set_rng_state_all(state["cuda"][: torch.cuda.device_count()])


def data_generators(root: Any, name: str = "data") -> dict[str, np.random.RandomState | torch.Generator]:
    """Every NumPy ``RandomState`` and ``torch.Generator`` reachable from ``root`` through attributes, mappings and
    sequences, by attribute path (each generator once, under its first path). Tensors, arrays, modules and
    worker processes are not entered."""
    found: dict[str, np.random.RandomState | torch.Generator] = {}
    seen: set[int] = set()
    stack: list[tuple[str, Any]] = [(name, root)]
    while stack:
        path, obj = stack.pop()
        if isinstance(obj, _LEAVES) or id(obj) in seen or type(obj).__module__.startswith(_PROCESS_MODULES):
            continue
        seen.add(id(obj))
        if isinstance(obj, (np.random.RandomState, torch.Generator)):
            found[path] = obj
            continue
        children: list[tuple[Any, Any]]
        if isinstance(obj, Mapping):
            children = list(obj.items())
        elif isinstance(obj, (list, tuple)):
            children = list(enumerate(obj))
        elif hasattr(obj, "__dict__"):
            children = list(vars(obj).items())
            if isinstance(obj, Randomizable) and "R" not in vars(obj):
                children.append(("R", obj.R))  # the class-level generator, until set_random_state gives its own
        else:
            continue
        stack.extend((f"{path}.{key}", child) for key, child in reversed(children))
    return found


def data_random_state(roots: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The states of the generators of :func:`data_generators` for each named root, by path."""
    state: dict[str, dict[str, Any]] = {}
    for name, root in roots.items():
        for path, rng in data_generators(root, name).items():
            state[path] = (
                {"torch": rng.get_state()}
                if isinstance(rng, torch.Generator)
                else {"numpy": _pack_numpy(rng.get_state(legacy=True))}
            )
    return state


def set_data_random_state(roots: Mapping[str, Any], state: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Restore what :func:`data_random_state` returned; the paths present on one side only are returned (a
    changed data configuration), the others are restored."""
    current: dict[str, np.random.RandomState | torch.Generator] = {}
    for name, root in roots.items():
        current.update(data_generators(root, name))
    unmatched = sorted(set(current) ^ set(state))
    for path, rng in current.items():
        saved = state.get(path)
        if saved is None:
            continue
        if isinstance(rng, torch.Generator) and "torch" in saved:
            rng.set_state(saved["torch"])
        elif isinstance(rng, np.random.RandomState) and "numpy" in saved:
            rng.set_state(_unpack_numpy(saved["numpy"]))
        else:
            unmatched.append(path)
    return unmatched
