"""``configs/multi_gpu_train.json`` under ``torchrun`` with two CPU processes (gloo): same weights on both ranks,
files and logs from rank 0 only, and resume on every rank."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from .conftest import ROOT

#: Test-only ending of ``training``: every rank saves its final network, then leaves the process group.
FINAL = {
    "training": [
        "$@train#trainer.run()",
        "$torch.save(bundle.engines.unwrap(@network).state_dict(), os.path.join(@output_dir, f'final_rank{dist.get_rank()}.pt'))",
        "$dist.destroy_process_group()",
    ]
}


def _torchrun(work: Path, tiny_datalist: Path, epochs: int, name: str) -> dict[int, str]:
    """Train with two processes; return each rank's log (stdout and stderr)."""
    (work / "final.json").write_text(json.dumps(FINAL))
    logs = work / f"logs_{name}"
    cmd = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "--log-dir", str(logs),
        "--tee", "3", "-m", "monai.bundle", "run", "training", "--config_file",
        f"['configs/train.json','configs/multi_gpu_train.json','{work / 'final.json'}']",
        "--datalist_file", str(tiny_datalist), "--image_size", "[64,64]", "--batch_size", "4", "--epochs", str(epochs),
        "--val_interval", "1", "--ckpt_dir", str(work / "models"), "--output_dir", str(work / "eval"),
    ]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return {r: "".join(p.read_text() for p in sorted(logs.glob(f"*/attempt_0/{r}/*.log"))) for r in (0, 1)}


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory, tiny_datalist: Path) -> dict:
    work = tmp_path_factory.mktemp("ddp")
    first = _torchrun(work, tiny_datalist, epochs=1, name="first")
    finals = {r: torch.load(work / "eval" / f"final_rank{r}.pt", weights_only=True) for r in (0, 1)}
    second = _torchrun(work, tiny_datalist, epochs=2, name="resumed")
    return {"work": work, "first": first, "second": second, "finals": finals}


def test_both_ranks_end_with_identical_weights(runs: dict) -> None:
    from bundle.packaging import ModelPackage

    rank0, rank1 = runs["finals"][0], runs["finals"][1]
    package = ModelPackage.from_state(torch.load(runs["work"] / "models" / "model.pt", weights_only=True)["bundle"])
    parameters = {name for name, _ in package.network().named_parameters()}  # the network train.json built
    assert parameters <= set(rank0) and set(rank0) == set(rank1)
    for name in parameters:
        assert torch.equal(rank0[name], rank1[name]), name
    # the saved best model is rank 0's network, unwrapped from DDP (no "module." prefix)
    best = torch.load(runs["work"] / "models" / "model.pt", weights_only=True)["model"]
    assert set(best) == set(rank0) and all(torch.isfinite(v.float()).all() for v in best.values())


def test_only_rank_zero_writes_files_and_logs(runs: dict) -> None:
    work = runs["work"]
    events = sorted(p.name for p in (work / "eval").glob("events.out.tfevents*"))
    assert len({name.split(".")[-2] for name in events}) == 2  # one process (pid) per run wrote TensorBoard files
    assert len(events) == 4  # train and validation writers, in each of the two runs
    saved = sorted(p.name for p in (work / "models").iterdir())
    assert saved == ["checkpoint_epoch=1.pt", "checkpoint_epoch=2.pt", "model.pt"]  # no temporary or duplicate files
    for run in ("first", "second"):
        logs = runs[run]
        assert "Metrics -- val_auroc" in logs[0] and "loss:" in logs[0]
        assert "Metrics -- val_auroc" not in logs[1] and "loss:" not in logs[1]


def test_every_rank_resumes_from_the_checkpoint(runs: dict) -> None:
    for rank in (0, 1):
        assert "resumed from" in runs["second"][rank] and "epoch 1 of 2" in runs["second"][rank]
    assert "Epoch[2] Metrics" in runs["second"][0]
