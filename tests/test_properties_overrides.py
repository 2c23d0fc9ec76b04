"""Configs name what they override: no override or reference by list position, handlers in named sets whose order
does not change training, and one key metric per training or evaluation config."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from monai.bundle import ConfigParser

from bundle.data import make_demo_dataset

from .conftest import ROOT
from .test_properties_workflows import SMALL, workflow

CONFIGS = ROOT / "configs"
#: A config id (``a#b#c``, MONAI also reads ``a::b::c``) after ``@`` (reference) or ``%`` (macro) in a string value.
REFERENCE = re.compile(r"[@%]([A-Za-z_]\w*(?:(?:#|::)\w+)+)")
#: Config stacks as the docs run them: every training variant, and evaluation.
STACKS = [
    ["train"], ["train", "multi_gpu_train"], ["train", "protocol"], ["train", "protocol", "bigbang"],
    ["train", "protocol", "joint_mtl"], ["train", "protocol", "real_protocol"], ["train", "single_cls"],
    ["train", "single_det"], ["train", "single_seg"], ["train", "transfer"], ["train", "transfer", "real_transfer"],
    ["train", "evaluate"], ["train", "protocol", "evaluate", "real_protocol"],
]


def positional(config: dict[str, Any]) -> list[str]:
    """The override keys (``a#b``) and the ``@``/``%`` references in ``config`` that name a list position."""
    found = [key for key in config if any(part.isdigit() for part in re.split(r"#|::", key)[1:])]

    def values(value: Any) -> None:
        if isinstance(value, dict):
            for item in value.values():
                values(item)
        elif isinstance(value, list):
            for item in value:
                values(item)
        elif isinstance(value, str):
            found.extend(ref for ref in REFERENCE.findall(value) if any(p.isdigit() for p in re.split(r"#|::", ref)))

    values(config)
    return found


def test_properties_no_config_overrides_by_list_position() -> None:
    assert positional({"train#handlers#4#_mode_": "callable", "x": "$@validate#handlers#1.attach"}) == [
        "train#handlers#4#_mode_", "validate#handlers#1",
    ]
    files = sorted(CONFIGS.glob("*.json"))
    assert len(files) > 10
    found = {f.name: hits for f in files if (hits := positional(json.loads(f.read_text())))}
    assert found == {}, f"name what you override (a named handler, a phase key), not its list position: {found}"


@pytest.fixture(scope="module")
def small_datalist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """16 training and 8 validation images: two iterations per epoch."""
    return make_demo_dataset(tmp_path_factory.mktemp("small"), num_train=16, num_val=8, num_test=2, size=64)


def _train(datalist: Path, work: Path, reverse: bool) -> dict[str, Any]:
    """Two epochs of configs/train.json (validation each epoch); with ``reverse``, both handler sets reversed."""
    override: dict[str, Any] = {
        "datalist_file": str(datalist), "ckpt_dir": str(work / "models"), "output_dir": str(work / "eval"),
        "epochs": 2, "val_interval": 1, **SMALL,
    }
    if reverse:
        raw = json.loads((CONFIGS / "train.json").read_text())
        for part in ("train", "validate"):
            override[f"{part}#handler_set"] = dict(reversed(raw[part]["handler_set"].items()))
    flow = workflow(["train"], "train", **override)
    flow.run()
    return {
        "order": [list(flow.parser.get_parsed_content(f"{p}#handler_set")) for p in ("train", "validate")],
        "weights": flow.parser.get_parsed_content("network").state_dict(),
        "lr": [g["lr"] for g in flow.parser.get_parsed_content("optimizer").param_groups],
        "metrics": dict(flow.parser.get_parsed_content("validate#evaluator").state.metrics),
        "files": sorted(p.name for p in (work / "models").iterdir()),
    }


def test_properties_reordered_handlers_train_the_same(small_datalist: Path, tmp_path: Path) -> None:
    first = _train(small_datalist, tmp_path / "as_written", reverse=False)
    second = _train(small_datalist, tmp_path / "reversed", reverse=True)
    assert [o[::-1] for o in first["order"]] == second["order"] and "validation" in first["order"][0]
    assert first["files"] == second["files"] and "model.pt" in first["files"]
    assert first["lr"] == second["lr"]
    np.testing.assert_equal(first["metrics"], second["metrics"])  # NaN (a metric undefined on 8 images) equals NaN
    assert first["weights"].keys() == second["weights"].keys()
    for name, value in first["weights"].items():
        assert torch.equal(value, second["weights"][name]), name


@pytest.mark.parametrize("stack", STACKS, ids=["+".join(s) for s in STACKS])
def test_properties_every_config_stack_has_one_key_metric(stack: list[str]) -> None:
    """One named key metric, made of the named validation metrics, selects the evaluator's best model."""
    parser = ConfigParser()
    parser.read_config([str(CONFIGS / f"{name}.json") for name in stack])
    key_metric = parser["validate#key_metric"]
    assert isinstance(key_metric, dict) and len(key_metric) == 1
    (expression,) = key_metric.values()
    used = re.findall(r"@validate#metrics#(\w+)", expression)
    assert used and set(used) <= set(parser["validate#metrics"])
    assert parser["validate#evaluator#key_val_metric"] == "@validate#key_metric"


def test_seed_override_sets_the_initialisation(tmp_path: Path) -> None:
    """``--seed`` (the lung cross-validation's draws) changes the initial weights; the same seed repeats them."""

    def first_weights(seed: int) -> torch.Tensor:
        parser = ConfigParser()
        parser.read_config(str(CONFIGS / "train.json"))
        parser.update({"seed": seed, "datalist_file": str(tmp_path / "none.json"), "split_datalists": [],
                       "network_def#backbone": "resnet18"})
        parser.get_parsed_content("initialize#0")
        return next(parser.get_parsed_content("network_def").parameters()).detach().clone()

    assert torch.equal(first_weights(0), first_weights(0)) and not torch.equal(first_weights(0), first_weights(1))
