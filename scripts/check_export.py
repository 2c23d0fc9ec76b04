"""Check an exported TorchScript model: every head's input/output shapes against its embedded metadata, its
embedded package against the model file's, and, given some images, its outputs against the eager network's.

    python scripts/check_export.py models/model.ts --ckpt_dir models --images ../shared/data/siim/dicom
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import fire
import torch
from monai.bundle import ConfigParser

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bundle.export import check_network_io, load_exported, max_output_difference  # noqa: E402
from bundle.packaging import ModelFileError, read_checkpoint, read_package  # noqa: E402


def main(ts_file: str = "models/model.ts", ckpt_dir: str | None = None, images: str | None = None,
         atol: float = 1e-4) -> None:
    """Print ``{"io_problems": [...], "package_problems": [...], "max_difference": {...}}`` as JSON; exit status 1
    on any problem. With ``ckpt_dir``: the package embedded in ``ts_file`` must describe the network and detector
    of ``<ckpt_dir>/model.pt``; with ``images`` too (a file or a folder): the exported outputs on them (read by
    the embedded ``preprocessing`` at the package's image size, run at its gate thresholds) must match the eager
    network's within ``atol``."""
    if images and not ckpt_dir:
        raise SystemExit("--images needs --ckpt_dir: the folder of the model.pt whose eager outputs to compare with")
    if not Path(ts_file).is_file():
        raise SystemExit(f"{ts_file}: TorchScript model not found; export one with scripts/export_torchscript.py")
    try:
        model, metadata, config, package = load_exported(ts_file)
    except ValueError as err:  # an export without the embedded files: the message names the file
        raise SystemExit(str(err)) from None
    except RuntimeError as err:
        raise SystemExit(f"{ts_file}: not a TorchScript model ({str(err).splitlines()[0]})") from None
    report: dict = {"io_problems": check_network_io(model, metadata)}
    if ckpt_dir:
        model_file = Path(ckpt_dir) / "model.pt"
        try:
            checkpoint, stored = read_checkpoint(model_file), read_package(model_file)
        except ModelFileError as err:
            raise SystemExit(str(err)) from None
        report["package_problems"] = [] if stored is None else [
            f"{key}: the export has {getattr(package, key)}, {model_file} has {getattr(stored, key)}"
            for key in ("network_args", "detector_args") if getattr(package, key) != getattr(stored, key)
        ]
        if images:
            folder = Path(images)
            files = sorted(str(f) for f in folder.iterdir() if f.is_file()) if folder.is_dir() else [images]
            parser = ConfigParser(config)
            parser["image_size"] = list(package.policy.image_size)
            preprocessing = parser.get_parsed_content("preprocessing")
            batch = torch.stack([preprocessing({"image": f})["image"].as_tensor() for f in files]).float()
            eager = package.network().eval()
            eager.load_state_dict(checkpoint["model"])
            gates = package.policy.forward_gate_thresholds()
            report["images"] = files
            report["gate_thresholds"] = gates
            report["max_difference"] = max_output_difference(model, eager, batch, (gates["det_gate"], gates["seg_gate"]))
    print(json.dumps(report, indent=2))
    too_far = any(v > atol for v in report.get("max_difference", {}).values())
    if report["io_problems"] or report.get("package_problems") or too_far:
        raise SystemExit(1)


if __name__ == "__main__":
    fire.Fire(main)
