"""Runtime backends for MultiCheXNet: eager PyTorch, TorchScript and ONNX Runtime behind one interface.

Every backend is called like the network itself: ``backend(image)`` returns all head outputs (the keys of
``MultiCheXNet.forward``) and ``backend.forward_gated(image, det_threshold, seg_threshold)`` the keys of
``MultiCheXNet.forward_gated``, so a backend can stand wherever the engines and inferers take the network
(``bundle.engines.gating.gated_forward``, ``bundle.export.check_network_io``). Images are (B, C, W, H) float
tensors, W and H multiples of 32; outputs come back as tensors on the image's device.

An exported file carries what is needed to use its outputs: :func:`read_embedded` gives the JSON texts of a
TorchScript or ONNX export (``metadata.json``, ``inference.json``, the model package) and
:func:`read_model_package` the package (network and detector arguments, decision policy).
"""

from __future__ import annotations

import copy
import importlib.util
import zipfile
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

from bundle.networks.multichexnet import gate_outputs
from bundle.networks.saliency_bridge import refuse_export
from bundle.packaging import EXTRA_FILE, ModelPackage

#: Names accepted by :func:`load_backend`.
BACKENDS: tuple[str, ...] = ("eager", "torchscript", "onnxruntime")

_ONNX_HINT = "install the ONNX extra: pip install -e '.[onnx]'"
#: The commands that write each kind of export.
TORCHSCRIPT_EXPORT, ONNX_EXPORT = "scripts/export_torchscript.py", "scripts/export_onnx.py"
#: The JSON texts every export embeds (TorchScript extra files, ONNX ``metadata_props``).
EMBEDDED_FILES: tuple[str, ...] = ("metadata.json", "inference.json", EXTRA_FILE)


def _check_image(image: Tensor) -> None:
    if image.dim() != 4 or image.shape[-1] % 32 != 0 or image.shape[-2] % 32 != 0:
        raise ValueError(f"MultiCheXNet expects (B, C, W, H) with W and H multiples of 32, got {tuple(image.shape)}")


class Backend(ABC):
    """One way of running MultiCheXNet; ``name`` is its :data:`BACKENDS` entry."""

    name: str

    @abstractmethod
    def __call__(self, image: Tensor) -> dict[str, Tensor]:
        """All head outputs for ``image`` (``MultiCheXNet.forward`` keys)."""

    @abstractmethod
    def forward_gated(self, image: Tensor, det_threshold: float = 0.5, seg_threshold: float = 0.5) -> dict[str, Tensor]:
        """Gated head outputs for ``image`` (``MultiCheXNet.forward_gated`` keys)."""


class TorchBackend(Backend):
    """An eager ``nn.Module`` or a TorchScript module, run without autograd on its own device."""

    def __init__(self, module: nn.Module | torch.jit.ScriptModule, name: str) -> None:
        self.module = module.eval()
        self.name = name

    def __call__(self, image: Tensor) -> dict[str, Tensor]:
        with torch.no_grad():
            return self.module(image)

    def forward_gated(self, image: Tensor, det_threshold: float = 0.5, seg_threshold: float = 0.5) -> dict[str, Tensor]:
        with torch.no_grad():
            return self.module.forward_gated(image, det_threshold, seg_threshold)


class OnnxRuntimeBackend(Backend):
    """An ONNX model from :func:`bundle.onnx_export.export_onnx` in an ONNX Runtime CPU session.

    A gated graph (inputs ``image`` and the two gate thresholds, bundle 0.5.3 on) runs the detection and segmentation
    heads on the images their gate passes only; ``backend(image)`` runs it with thresholds 0 (every image passes).
    An all-heads graph of an earlier export (input ``image`` only) computes every head, and :func:`gate_outputs`
    gates its outputs.

    Args:
        model: path of the ``.onnx`` file, or its serialised bytes.
        threads: intra-op threads; None uses ``torch.get_num_threads()`` (the cores PyTorch uses here).
        spinning: let idle worker threads spin between operators (faster on a dedicated machine, steals
            cycles from other processes on a shared one).
    """

    name = "onnxruntime"

    def __init__(self, model: str | Path | bytes, threads: int | None = None, spinning: bool = False) -> None:
        if importlib.util.find_spec("onnxruntime") is None:
            raise ImportError(f"the onnxruntime backend needs onnxruntime: {_ONNX_HINT}")
        import onnxruntime as ort

        if not isinstance(model, bytes):
            if not Path(model).is_file():
                raise FileNotFoundError(f"{model}: ONNX model not found; export one with {ONNX_EXPORT}")
            model = str(model)
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "1" if spinning else "0")
        self.session = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        inputs = [i.name for i in self.session.get_inputs()]
        self.input_name, self.threshold_names = inputs[0], inputs[1:]
        self.output_names = [o.name for o in self.session.get_outputs()]

    @property
    def gated(self) -> bool:
        """Whether the graph takes gate thresholds (and skips the heads of gated-out images)."""
        return bool(self.threshold_names)

    @property
    def metadata(self) -> dict[str, str]:
        """The model's ``metadata_props`` (opset, and what the exporter embedded)."""
        return dict(self.session.get_modelmeta().custom_metadata_map)

    def _run(self, image: Tensor, thresholds: tuple[float, ...]) -> dict[str, Tensor]:
        _check_image(image)
        feeds = {self.input_name: image.detach().to("cpu", torch.float32).contiguous().numpy()}
        feeds.update({name: np.asarray(t, dtype=np.float32) for name, t in zip(self.threshold_names, thresholds)})
        values = self.session.run(self.output_names, feeds)
        return {k: torch.from_numpy(v).to(image.device) for k, v in zip(self.output_names, values)}

    def __call__(self, image: Tensor) -> dict[str, Tensor]:
        out = self._run(image, (0.0, 0.0))
        return {k: v for k, v in out.items() if k not in ("det_gated_in", "seg_gated_in")}

    def forward_gated(self, image: Tensor, det_threshold: float = 0.5, seg_threshold: float = 0.5) -> dict[str, Tensor]:
        """``forward_gated``'s outputs; an all-heads graph computes the gated-out images' heads too."""
        if self.gated:
            return self._run(image, (det_threshold, seg_threshold))
        return gate_outputs(self(image), det_threshold, seg_threshold)


def load_backend(
    name: str,
    network: nn.Module | None = None,
    path: str | Path | None = None,
    threads: int | None = None,
    device: str | torch.device = "cpu",
) -> Backend:
    """The backend ``name`` (one of :data:`BACKENDS`) of a network given as a module or a file.

    * ``eager``: ``network`` (weights loaded);
    * ``torchscript``: ``path`` of a ``scripts/export_torchscript.py`` file, else ``network`` scripted here;
    * ``onnxruntime``: ``path`` of a ``scripts/export_onnx.py`` file, else ``network`` exported here (in memory).

    ``threads`` sets ONNX Runtime's intra-op threads (see :class:`OnnxRuntimeBackend`); ``device`` is where a
    TorchScript file is loaded (the eager network stays where it is, ONNX Runtime runs on the CPU).
    """
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}: choose one of {', '.join(BACKENDS)}")
    if path is None and network is None:
        raise ValueError(f"backend {name!r} needs a network or a model file path")
    if name == "eager":
        if network is None:
            raise ValueError("the eager backend needs the network module (path is for torchscript/onnxruntime)")
        return TorchBackend(network, name)
    if name == "torchscript":
        if path is not None:
            if not Path(path).is_file():
                raise FileNotFoundError(f"{path}: TorchScript model not found; export one with {TORCHSCRIPT_EXPORT}")
            return TorchBackend(torch.jit.load(str(path), map_location=device), name)
        refuse_export(network, "torchscript backend")
        return TorchBackend(torch.jit.script(network.eval()), name)
    if path is not None:
        return OnnxRuntimeBackend(path, threads)
    if importlib.util.find_spec("onnxscript") is None:
        raise ImportError(f"exporting to ONNX needs onnx and onnxscript: {_ONNX_HINT}")
    from bundle.onnx_export import export_onnx

    refuse_export(network, "onnxruntime backend")

    return OnnxRuntimeBackend(export_onnx(copy.deepcopy(network).cpu()).SerializeToString(), threads)


def read_embedded(path: str | Path) -> dict[str, str]:
    """The :data:`EMBEDDED_FILES` texts of an exported model file, TorchScript (a zip archive: its extra files)
    or ONNX (its ``metadata_props``), by name.

    Raises:
        FileNotFoundError: no file at ``path``.
        ValueError: a text is missing (an export by another tool); the message names the export command.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: exported model not found; export one with {TORCHSCRIPT_EXPORT} or {ONNX_EXPORT}")
    if zipfile.is_zipfile(path):
        texts, command = dict.fromkeys(EMBEDDED_FILES, ""), TORCHSCRIPT_EXPORT
        torch.jit.load(str(path), map_location="cpu", _extra_files=texts)
    else:
        if importlib.util.find_spec("onnx") is None:
            raise ImportError(f"{path}: reading an ONNX model needs onnx: {_ONNX_HINT}")
        from bundle.onnx_export import read_onnx_metadata

        texts, command = read_onnx_metadata(path), ONNX_EXPORT
    missing = [name for name in EMBEDDED_FILES if not texts.get(name)]
    if missing:
        raise ValueError(f"{path}: no embedded {', '.join(missing)}; export it again with {command}")
    return {name: texts[name] for name in EMBEDDED_FILES}


def read_model_package(path: str | Path) -> ModelPackage:
    """The model package (network and detector arguments, decision policy) embedded in a TorchScript or ONNX
    export (:func:`read_embedded`)."""
    return ModelPackage.from_json(read_embedded(path)[EXTRA_FILE], source=f"{path}:{EXTRA_FILE}")
