"""MONAI bundle properties of the train, evaluate and infer workflows, as MONAI's ``ConfigWorkflow`` checks them;
MONAI experiment tracking beside the named handlers; the split check that training runs at initialize."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
from monai.bundle import ConfigWorkflow, create_workflow
from monai.bundle.utils import DEFAULT_HANDLERS_ID
from monai.handlers import StatsHandler, ValidationHandler
from monai.inferers import SimpleInferer
from torch import Tensor, nn

from bundle.data import DatalistError

from .conftest import ROOT

#: Each workflow: its config files and the ``workflow_type`` MONAI checks it as ("eval" takes InferProperties).
WORKFLOWS = {
    "train": (["train"], "train"),
    "evaluate": (["train", "evaluate"], "eval"),
    "infer": (["inference"], "infer"),
}
SMALL = {"image_size": [64, 64], "batch_size": 8, "network_def#backbone": "resnet18"}


def workflow(configs: list[str], workflow_type: str, **override: Any) -> ConfigWorkflow:
    """``create_workflow`` on ``configs/<name>.json`` (initialized), without MONAI's warning that configs run code."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return create_workflow(
            config_file=[str(ROOT / "configs" / f"{name}.json") for name in configs], workflow_type=workflow_type,
            meta_file=str(ROOT / "configs" / "metadata.json"), logging_file=False, **override,
        )


def _paths(name: str, tiny_datalist: Path, work: Path) -> dict[str, Any]:
    if name == "infer":
        images = tiny_datalist.parent / "images"
        return {"input_dir": str(images), "output_dir": str(work / "pred"), "ckpt_dir": str(work)}
    return {"datalist_file": str(tiny_datalist), "ckpt_dir": str(work / "models"), "output_dir": str(work / "eval")}


@pytest.mark.parametrize("name", list(WORKFLOWS))
def test_properties_of_every_workflow_are_complete(name: str, tiny_datalist: Path, tmp_path: Path) -> None:
    """Nothing required missing, no optional property under a wrong ID (``check_properties`` returns ``[]``).

    ``evaluate`` needs ``dataset``, ``evaluator`` and ``inferer`` at the top of ``configs/evaluate.json``."""
    configs, workflow_type = WORKFLOWS[name]
    small = {} if name == "infer" else SMALL  # inference takes its network from the model file
    flow = workflow(configs, workflow_type, **_paths(name, tiny_datalist, tmp_path), **small)
    assert flow.check_properties() == []


class RecordingInferer(SimpleInferer):
    """SimpleInferer that records the shape of every input it runs the network on."""

    def __init__(self) -> None:
        super().__init__()
        self.shapes: list[tuple[int, ...]] = []

    def __call__(self, inputs: Tensor, network: nn.Module, *args: Any, **kwargs: Any) -> Any:
        self.shapes.append(tuple(inputs.shape))
        return super().__call__(inputs, network, *args, **kwargs)


def test_properties_engines_run_the_network_through_their_inferers(tiny_datalist: Path, tmp_path: Path) -> None:
    """``train#inferer`` and ``validate#inferer`` are the engines' inferers, and each engine's step calls its own."""
    flow = workflow(["train"], "train", **_paths("train", tiny_datalist, tmp_path), **SMALL)
    batch = next(iter(flow.parser.get_parsed_content("train#dataloader")))
    for engine_id, inferer_id in (("train#trainer", "train#inferer"), ("validate#evaluator", "validate#inferer")):
        engine = flow.parser.get_parsed_content(engine_id)
        assert engine.inferer is flow.parser.get_parsed_content(inferer_id)
        engine.inferer = RecordingInferer()
        engine._iteration(engine, batch)
        assert engine.inferer.shapes == [tuple(batch["image"].shape)], engine_id


def test_properties_tracking_handler_joins_the_named_handlers(tiny_datalist: Path, tmp_path: Path) -> None:
    """MONAI tracking appends its handler to ``train#handlers`` / ``validate#handlers``: the engines then attach it
    together with every handler of ``train#handler_set`` / ``validate#handler_set``."""
    probe = {"_target_": "StatsHandler", "name": "tracking_probe", "iteration_log": False}
    configs = {"trainer": probe, "validator": probe, "save_execute_config": False}
    tracking = {"handlers_id": DEFAULT_HANDLERS_ID, "configs": configs}
    flow = workflow(["train"], "train", tracking=tracking, **_paths("train", tiny_datalist, tmp_path), **SMALL)
    assert flow.check_properties() == []
    flow.trainer  # noqa: B018 - instantiates the trainer, its evaluator and their handlers
    for engine, handler_set in (("train#trainer#train_handlers", "train#handler_set"),
                                ("validate#evaluator#val_handlers", "validate#handler_set")):
        attached = flow.parser.get_parsed_content(engine)
        named = flow.parser.get_parsed_content(handler_set)
        assert all(any(h is n for h in attached) for n in named.values()), engine
        probes = [h for h in attached if isinstance(h, StatsHandler) and h.logger.name == "tracking_probe"]
        assert len(probes) == 1 and len(attached) == len(named) + 1, engine
    assert any(isinstance(h, ValidationHandler) for h in flow.parser.get_parsed_content("train#trainer#train_handlers"))


def test_training_refuses_a_patient_in_training_and_validation(tiny_datalist: Path, tmp_path: Path) -> None:
    """``initialize`` runs ``bundle.data.check_splits`` on ``split_datalists``: a leak stops the run before any
    epoch."""
    content = json.loads(tiny_datalist.read_text())
    for split in ("training", "validation", "testing"):
        for entry in content[split]:
            entry.update({k: str(tiny_datalist.parent / entry[k]) for k in ("image", "mask") if entry.get(k)})
    shared = content["validation"][0]["patient_id"]
    content["training"][0]["patient_id"] = shared
    leaky = tmp_path / "leaky.json"
    leaky.write_text(json.dumps(content))
    with pytest.raises(RuntimeError, match="check_splits") as failure:
        workflow(["train"], "train", **_paths("train", leaky, tmp_path), **SMALL)
    error = failure.value.__cause__
    assert isinstance(error, DatalistError)
    assert str(leaky) in str(error) and shared in str(error) and "training" in str(error) and "validation" in str(error)
    assert not (tmp_path / "models").exists() and not (tmp_path / "eval").exists()
