"""Patient-level k-fold cross-validation of a lung recipe, every image scored through ``run inference``.

Each fold's test patients are one k-th of the patients with a lung mask; a seeded ``val_fraction`` of the other
patients is the fold's validation split (model selection), the rest trains. Per fold: ``run training`` with the
recipe's configs, ``run inference`` on the fold's test images with nothing but ``--ckpt_dir``, and the per-image
scores of ``scripts/lung_report.py``. The pooled scores (every masked image once, by a model that never saw its
patient) are summarised with patient-bootstrap 95% CIs.

    python scripts/lung_crossval.py data/real/covid.json cv/lung --folds 5
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import fire
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bundle.data.datalist import read_datalist  # noqa: E402
from bundle.data.splits import SPLITS  # noqa: E402
from lung_report import collect_cases, summarise  # noqa: E402
from run_logged import run_logged  # noqa: E402

RECIPE = ("configs/train.json", "configs/lung.json")


def fold_datalists(datalist: str, folds: int = 5, val_fraction: float = 0.12, seed: int = 0) -> list[dict]:
    """``folds`` datalists (absolute image paths) whose ``testing`` splits partition the patients with a mask.

    Patients without any mask always train (a recipe may use their images as unlabelled); every other patient is
    in exactly one fold's ``testing``, and in no other split of that fold.
    """
    base = Path(datalist).resolve().parent
    content = read_datalist(datalist)
    entries = []
    for split in SPLITS:
        for entry in content.get(split, []):
            absolute = {k: str((base / v).resolve()) if k in ("image", "mask") else v for k, v in entry.items()}
            entries.append(absolute)
    masked = sorted({str(e["patient_id"]) for e in entries if "mask" in e})
    if len(masked) < folds:
        raise ValueError(f"{datalist}: {len(masked)} patients with a mask, fewer than {folds} folds")
    rng = np.random.default_rng(seed)
    order = [masked[i] for i in rng.permutation(len(masked))]
    result = []
    for fold in range(folds):
        test = set(order[fold::folds])
        rest = [p for p in order if p not in test]
        validation = set(rest[: max(1, round(val_fraction * len(rest)))])
        split_of = {p: "testing" for p in test} | {p: "validation" for p in validation}
        lists: dict[str, list] = {name: [] for name in SPLITS}
        for entry in entries:
            lists[split_of.get(str(entry["patient_id"]), "training")].append(entry)
        extra = {k: v for k, v in content.items() if k not in SPLITS}
        result.append({**extra, **lists, "fold": fold, "folds": folds, "seed": seed})
    return result


def _flags(overrides: dict[str, Any] | None) -> list[str]:
    """``--key value`` command-line pairs of ``overrides``."""
    return [str(x) for key, value in (overrides or {}).items() for x in (f"--{key}", value)]


def main(
    datalist: str, output_dir: str, folds: int = 5, val_fraction: float = 0.12, seed: int = 0,
    configs: Any = RECIPE, overrides: dict[str, Any] | None = None, worst: int = 5, train: bool = True,
    inference_overrides: dict[str, Any] | None = None, tag: str = "", only: list[int] | None = None,
) -> None:
    """Train, infer and score every fold; write ``crossval.json`` (per fold and pooled) and the pooled
    ``lung_scores.json`` / ``worst_cases.png`` to ``output_dir`` (``output_dir/<tag>`` with a ``tag``).

    Args:
        configs: the recipe's config files, in order.
        overrides: extra ``--key value`` pairs for ``run training`` (e.g. ``{"epochs": 12}``).
        train: False scores each fold's model already in ``output_dir`` again (e.g. with other
            ``inference_overrides``) without training; a fold's ``training_s`` and ``training_overrides`` are
            always those its training recorded (``fold_<i>/training.json``), None without a record.
        inference_overrides: extra ``--key value`` pairs for ``run inference`` (e.g.
            ``{"mask_postprocessing": "{'neck_fraction': 0}"}``).
        tag: names the predictions folders (``predictions_<tag>``) and the summary folder of this scoring.
        only: run these folds only (e.g. ``[1, 4]``, to share the folds between processes); their summary goes to
            ``folds_<i>_<j>`` under the summary folder, and a later ``train=False`` run pools every fold.
    """
    out = Path(output_dir).resolve()
    summary_dir = out / tag if tag else out
    if only is not None:
        summary_dir = summary_dir / ("folds_" + "_".join(str(i) for i in only))
    config = "[" + ",".join(f"'{Path(c).resolve()}'" for c in configs) + "]"
    extra = _flags(overrides)
    bundle = [sys.executable, "-m", "monai.bundle", "run"]
    pooled, per_fold = [], []
    for content in fold_datalists(datalist, folds, val_fraction, seed):
        if only is not None and content["fold"] not in only:
            continue
        fold_dir = out / f"fold_{content['fold']}"
        images = fold_dir / "test_images"
        images.mkdir(parents=True, exist_ok=True)
        for entry in content["testing"]:
            link = images / Path(entry["image"]).name
            if not link.exists():
                link.symlink_to(entry["image"])
        fold_list = fold_dir / "datalist.json"
        fold_list.write_text(json.dumps(content, indent=1))
        model = fold_dir / "model"
        record = fold_dir / "training.json"  # how the fold's model was trained, for a later scoring pass to report
        if train:
            train_s = round(run_logged(bundle + ["training", "--config_file", config, "--datalist_file",
                                                 str(fold_list), "--ckpt_dir", str(model), "--output_dir",
                                                 str(fold_dir / "train"), *extra], fold_dir / "training.log"), 1)
            record.write_text(json.dumps({"training_s": train_s, "training_overrides": overrides or {}}))
        unrecorded = {"training_s": None, "training_overrides": None}
        trained = json.loads(record.read_text()) if record.is_file() else unrecorded
        predictions = fold_dir / ("predictions_" + tag if tag else "predictions")
        infer_s = run_logged(bundle + ["inference", "--config_file", str(Path("configs/inference.json").resolve()),
                                       "--ckpt_dir", str(model), "--input_dir", str(images), "--output_dir",
                                       str(predictions), *_flags(inference_overrides)],
                             fold_dir / f"inference{'_' + tag if tag else ''}.log")
        cases = collect_cases(str(fold_list), str(predictions))
        for case in cases:
            case["fold"] = content["fold"]
        pooled += cases
        dice = [c["dice"] for c in cases]
        per_fold.append({"fold": content["fold"], "test_images": len(cases),
                         "test_patients": len({c["patient_id"] for c in cases}),
                         "training_images_with_mask": sum("mask" in e for e in content["training"]),
                         "validation_images_with_mask": sum("mask" in e for e in content["validation"]),
                         "dice_mean": float(np.mean(dice)), "dice_min": float(np.min(dice)),
                         **trained, "inference_s": round(infer_s, 1)})
        print(json.dumps(per_fold[-1]))
    summary = summarise(pooled, str(summary_dir), worst)
    (summary_dir / "crossval.json").write_text(json.dumps({
        "pooled": summary, "folds": per_fold, "configs": list(configs), "overrides": overrides or {},
        "inference_overrides": inference_overrides or {}}, indent=1))
    print(json.dumps(summary, indent=1))


if __name__ == "__main__":
    fire.Fire(main)
