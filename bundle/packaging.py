"""The model file: the weights and everything inference needs to use them, in one ``model.pt``.

``model.pt`` is ``{"model": state_dict, "bundle": package}`` where the package is plain JSON-like data (so the
file loads with ``torch.load(..., weights_only=True)``): the format version, the network's and the detector's
constructor arguments, and the :class:`bundle.decisions.DecisionPolicy` (operating points, calibration, image
size, tasks, mask and box post-processing). Training writes it through Ignite's ``CheckpointSaver`` (a
:class:`ModelPackage` has ``state_dict``); choosing operating points on validation rewrites the package in place
(:func:`write_policy`); exports carry :meth:`ModelPackage.to_json` (TorchScript extra file, ONNX metadata).
A plain state dict (older checkpoints) still loads: it has no package, and the configs' defaults apply.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from bundle.decisions import DecisionPolicy, MaskPostprocessing
from bundle.detection import CheXDetector
from bundle.fileio import atomic_write
from bundle.networks import MultiCheXNet, MultiCheXNetEnsemble, build_network

log = logging.getLogger("bundle.packaging")

#: Key of the package in ``model.pt``, and of the weights.
PACKAGE_KEY = "bundle"
WEIGHTS_KEY = "model"
PACKAGE_FORMAT = "multichexnet.model_package"
PACKAGE_VERSION = 1
#: Name of the package as a TorchScript extra file.
EXTRA_FILE = "bundle_package.json"


class ModelFileError(ValueError):
    """A model file cannot be used; the message names the file and the problem."""


class ModelPackage:
    """What a model file carries besides its weights.

    Args:
        network_args: :class:`MultiCheXNet` constructor arguments (its ``init_args``), with ``members`` for an
            ensemble (:func:`bundle.networks.build_network`).
        detector_args: :class:`CheXDetector` constructor arguments (its ``init_args``).
        policy: the decision policy the model was shipped with.
    """

    def __init__(self, network_args: Mapping[str, Any], detector_args: Mapping[str, Any], policy: DecisionPolicy) -> None:
        self.network_args = dict(network_args)
        self.detector_args = dict(detector_args)
        self.policy = policy

    @classmethod
    def of(
        cls,
        network: MultiCheXNet | MultiCheXNetEnsemble,
        detector: CheXDetector,
        class_names: Sequence[str],
        image_size: Sequence[int],
        det_class_names: Sequence[str] = ("opacity",),
        tasks: Mapping[str, str] | None = None,
        policy: DecisionPolicy | None = None,
        mask_postprocessing: MaskPostprocessing | Mapping[str, Any] | None = None,
    ) -> ModelPackage:
        """The package of a network being trained: its arguments and ``policy`` (default: 0.5 everywhere, with
        ``mask_postprocessing``, a :class:`MaskPostprocessing` or its fields, as the mask post-processing)."""
        if policy is None:
            if isinstance(mask_postprocessing, Mapping):
                mask_postprocessing = MaskPostprocessing.from_dict(mask_postprocessing, "mask_postprocessing")
            settings = {} if mask_postprocessing is None else {"mask": mask_postprocessing}
            policy = DecisionPolicy.default(class_names, image_size, det_class_names, tasks, **settings)
        elif mask_postprocessing is not None:
            raise ValueError("give either a policy or mask_postprocessing, not both (the policy holds its own)")
        return cls(network.init_args, detector.init_args, policy)

    def network(self) -> MultiCheXNet | MultiCheXNetEnsemble:
        """A new network built from the stored arguments (weights not loaded)."""
        return build_network(**self.network_args)

    def detector(self) -> CheXDetector:
        """A new detector built from the stored arguments."""
        return CheXDetector(**self.detector_args)

    def state_dict(self) -> dict[str, Any]:
        return {
            "format": PACKAGE_FORMAT,
            "version": PACKAGE_VERSION,
            "network_args": self.network_args,
            "detector_args": self.detector_args,
            "policy": self.policy.to_dict(),
        }

    def load_state_dict(self, state: Mapping[str, Any], source: str = "model package") -> None:
        if state.get("format") != PACKAGE_FORMAT or state.get("version") != PACKAGE_VERSION:
            raise ModelFileError(
                f"{source}: package format {state.get('format')!r} version {state.get('version')!r}; this code reads "
                f"{PACKAGE_FORMAT!r} version {PACKAGE_VERSION}"
            )
        self.network_args = dict(state["network_args"])
        self.detector_args = dict(state["detector_args"])
        self.policy = DecisionPolicy.from_dict(state["policy"], source=source)

    @classmethod
    def from_state(cls, state: Mapping[str, Any], source: str = "model package") -> ModelPackage:
        package = cls({}, {}, DecisionPolicy.default(["none"], (32, 32)))
        package.load_state_dict(state, source)
        return package

    def to_json(self) -> str:
        return json.dumps(self.state_dict(), indent=2)

    @classmethod
    def from_json(cls, text: str | bytes, source: str = "model package") -> ModelPackage:
        return cls.from_state(json.loads(text), source)


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """``model.pt`` as ``{"model": state_dict, "bundle": package state or None}``.

    Raises:
        ModelFileError: missing, truncated or not a checkpoint of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found (train first, or set --ckpt_dir to the folder holding model.pt)")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # truncated, not a zip, pickled code: all unusable
        raise ModelFileError(f"{path}: not a readable model file ({type(err).__name__}: {err})") from err
    if not isinstance(state, Mapping):
        raise ModelFileError(f"{path}: holds a {type(state).__name__}, expected a state dict")
    if WEIGHTS_KEY in state and PACKAGE_KEY in state:
        return {WEIGHTS_KEY: state[WEIGHTS_KEY], PACKAGE_KEY: state[PACKAGE_KEY]}
    return {WEIGHTS_KEY: state, PACKAGE_KEY: None}


def read_package(path: str | Path) -> ModelPackage | None:
    """The package of the model file at ``path``; None for a plain state dict."""
    state = read_checkpoint(path)[PACKAGE_KEY]
    return None if state is None else ModelPackage.from_state(state, source=str(path))


def file_sha256(path: str | Path) -> str:
    """SHA-256 of a file's bytes (the model hash of prediction records)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def write_policy(path: str | Path, policy: DecisionPolicy) -> None:
    """Replace the decision policy inside the model file at ``path`` (atomically; the weights are unchanged).

    Raises:
        ModelFileError: the file is a plain state dict with no package to update.
    """
    checkpoint = read_checkpoint(path)
    if checkpoint[PACKAGE_KEY] is None:
        raise ModelFileError(f"{path}: a plain state dict without a model package; retrain to get one")
    package = ModelPackage.from_state(checkpoint[PACKAGE_KEY], source=str(path))
    package.policy = policy
    save_model(path, checkpoint[WEIGHTS_KEY], package)


def save_model(path: str | Path, weights: Mapping[str, torch.Tensor], package: ModelPackage) -> None:
    """Write a model file (``{"model": weights, "bundle": package}``) atomically."""
    buffer = io.BytesIO()
    torch.save({WEIGHTS_KEY: dict(weights), PACKAGE_KEY: package.state_dict()}, buffer)
    atomic_write(Path(path), buffer.getvalue())


def inference_policy(
    package: ModelPackage | None,
    class_names: Sequence[str],
    image_size: Sequence[int],
    det_class_names: Sequence[str] = ("opacity",),
    tasks: Mapping[str, str] | None = None,
    gate_thresholds: Mapping[str, float] | None = None,
    legacy_thresholds: str | Path | None = None,
    mask_postprocessing: Mapping[str, Any] | None = None,
) -> DecisionPolicy:
    """The decision policy an inference run applies: the model file's, else a legacy ``thresholds.json``, else
    defaults (0.5); then the explicit overrides (``tasks``, ``gate_thresholds``, ``mask_postprocessing`` fields,
    an ``image_size`` other than the model's), which win, are logged and are recorded in every prediction (gates
    with rule ``override``)."""
    if package is not None:
        policy = package.policy
    elif legacy_thresholds is not None and Path(legacy_thresholds).is_file():
        policy = DecisionPolicy.from_thresholds_json(legacy_thresholds, image_size)
    else:
        policy = DecisionPolicy.default(class_names, image_size, det_class_names, tasks)
    if tasks is not None and dict(tasks) != dict(policy.tasks):
        log.warning("tasks %s set explicitly (the model file says %s)", dict(tasks), dict(policy.tasks))
        policy = replace(policy, tasks=dict(tasks))
    if gate_thresholds is not None:
        log.warning("gate thresholds %s set explicitly (the model file's: %s)", dict(gate_thresholds),
                    {g: p.threshold for g, p in policy.gates.items()})
        policy = policy.override(gates=gate_thresholds, reason="set on the command line (gate_thresholds)")
    if mask_postprocessing is not None:
        mask = MaskPostprocessing.from_dict({**policy.mask.to_dict(), **dict(mask_postprocessing)},
                                            "mask_postprocessing override")
        log.warning("mask post-processing %s set explicitly (the model file's: %s)", mask.to_dict(), policy.mask.to_dict())
        policy = replace(policy, mask=mask)
    if tuple(image_size) != policy.image_size:
        log.warning("image size %s set explicitly (the model was shipped for %s)", list(image_size), list(policy.image_size))
        policy = replace(policy, image_size=tuple(image_size))
    return policy


def bundle_version(bundle_root: str | Path) -> str:
    """The bundle's version from ``configs/metadata.json`` ("unknown" without one): recorded in predictions."""
    try:
        return str(json.loads((Path(bundle_root) / "configs" / "metadata.json").read_text())["version"])
    except (OSError, ValueError, KeyError):
        return "unknown"
