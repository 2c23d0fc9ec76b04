"""The experiment scripts' shared pieces: the logged subprocess helper and the semi-supervised results table."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from .conftest import ROOT

sys.path.insert(0, str(ROOT / "scripts"))
from run_logged import run_logged  # noqa: E402

spec = importlib.util.spec_from_file_location("semi_supervised_experiment",
                                              ROOT / "scripts" / "semi_supervised_experiment.py")
semi = importlib.util.module_from_spec(spec)
spec.loader.exec_module(semi)


def test_run_logged_writes_the_output_to_the_log_and_names_a_failed_command(tmp_path: Path) -> None:
    assert run_logged([sys.executable, "-c", "print('hello')"], tmp_path / "ok.log", nice=5) >= 0
    assert (tmp_path / "ok.log").read_text() == "hello\n"
    with pytest.raises(SystemExit, match=r"failed \(3\): see .*bad\.log"):
        run_logged([sys.executable, "-c", "import sys; print('oops'); sys.exit(3)"], tmp_path / "bad.log")
    assert "oops" in (tmp_path / "bad.log").read_text()


def test_semi_supervised_table_merges_every_share_and_refuses_an_unknown_arm(tmp_path: Path) -> None:
    row = {"epochs": 50, "wall_s": 10, "dice": 0.9, "low": 0.85, "high": 0.95, "images": 6, "patients": 4}
    (tmp_path / "results_a.json").write_text(json.dumps([{"arm": "supervised", "labelled": 10, **row},
                                                         {"arm": "contrastive pretraining", "labelled": None,
                                                          "wall_s": 492}]))
    (tmp_path / "results_b.json").write_text(json.dumps([{"arm": "semi + bridge", "labelled": 5,
                                                          "unlabelled": "COVID", **row, "dice": 0.8}]))
    semi.Experiment().table(str(tmp_path))  # an absolute output is used as given
    lines = (tmp_path / "results.md").read_text().splitlines()
    assert lines[2] == "| semi + bridge | 5 | COVID | 50 | 0.800 (0.850, 0.950) | 10 |"  # fewest masks first
    assert lines[3] == "| supervised | 10 | COVID + NIH | 50 | 0.900 (0.850, 0.950) | 10 |"
    assert lines[4] == "| contrastive pretraining | | | | | 492 |"
    with pytest.raises(SystemExit, match="unknown arms \\['semi'\\]"):
        semi.Experiment().run(output=str(tmp_path), work=str(tmp_path / "work"), arms=["semi"])
