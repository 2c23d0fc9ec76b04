"""Drive MONAI Label's own BundleInferTask and BundleTrainTask on a bundle folder; run with the MONAI Label venv.

Usage: ``.venv-monailabel/bin/python scripts/ci/monailabel_driver.py BUNDLE_DIR OUT_DIR IMAGE [IMAGE ...]``

Writes ``OUT_DIR/report.json``: the infer task's ``info()``, per image the label file (moved into ``OUT_DIR``)
and result JSON that ``BundleInferTask.__call__`` returned, and the train task's validity, ``config()`` and
whether the bundle config holds each key ``BundleTrainTask`` overrides or runs.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import shutil
import sys
import types
from pathlib import Path
from typing import Any, NoReturn


def stand_in_for_torchvision() -> None:
    """Register a ``torchvision.utils`` whose functions raise, when torchvision is not installed.

    ``monailabel.transform.post`` imports ``torchvision.utils.make_grid, save_image`` at module level and uses
    them only to dump pathology / DeepEdit images, never on the bundle path. The package index has only CUDA
    builds of torchvision, which cannot load against the CPU build of torch used here.
    """
    if importlib.util.find_spec("torchvision") is not None:
        return

    def unavailable(*args: Any, **kwargs: Any) -> NoReturn:
        raise RuntimeError("torchvision is not installed in this environment")

    utils = types.ModuleType("torchvision.utils")
    utils.make_grid = utils.save_image = unavailable  # type: ignore[attr-defined]
    package = types.ModuleType("torchvision")
    package.utils = utils  # type: ignore[attr-defined]
    sys.modules.update({"torchvision": package, "torchvision.utils": utils})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("bundle", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("images", nargs="+")
    args = parser.parse_args()
    stand_in_for_torchvision()

    import monailabel
    import torch
    from monailabel.tasks.infer.bundle import BundleInferTask
    from monailabel.tasks.train.bundle import BundleConstants, BundleTrainTask

    args.out.mkdir(parents=True, exist_ok=True)
    infer = BundleInferTask(str(args.bundle), conf={"preload": "false"})
    report: dict[str, Any] = {
        "versions": {"monailabel": monailabel.__version__, "torch": torch.__version__},
        "infer": {"valid": infer.is_valid(), "info": infer.info()},
        "results": [],
    }
    for i, image in enumerate(args.images):
        label_file, result = infer({"image": image, "device": "cpu"})
        kept = args.out / f"label_{i}{''.join(Path(label_file).suffixes)}"
        shutil.move(label_file, kept)
        report["results"].append({"image": image, "label": str(kept), "result": result})

    train = BundleTrainTask(str(args.bundle), conf={})
    const = BundleConstants()
    keys = [
        const.key_bundle_root(),
        const.key_device(),
        const.key_network(),
        const.key_train_trainer_max_epochs(),
        const.key_train_dataset_data(),
        const.key_train_handlers(),
        const.key_validate_dataset_data(),
        "run",  # the run_id BundleTrainTask passes to monai.bundle.run when the request names none
    ]
    report["train"] = {
        "valid": train.is_valid(),
        "config": train.config(),
        "keys": {key: key in train.bundle_config for key in keys},
        "bundle_root": train.bundle_config["bundle_root"],
    }
    (args.out / "report.json").write_text(json.dumps(report, indent=2, default=str))


if __name__ == "__main__":
    main()
