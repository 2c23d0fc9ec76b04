"""Check an exported TorchScript bundle: every head's input/output shapes against its embedded metadata, and,
given the checkpoint and some images, its outputs against the eager network's.

    python scripts/check_export.py models/model.ts --ckpt_file models/model.pt --images ../shared/data/siim/dicom
"""

from __future__ import annotations

import glob
import json
import os

import fire
import torch
from monai.bundle import ConfigParser

from bundle.export import check_network_io, load_exported, max_output_difference


def main(ts_file: str = "models/model.ts", ckpt_file: str | None = None, images: str | None = None, atol: float = 1e-4) -> None:
    """Print ``{"io_problems": [...], "max_difference": {...}}`` as JSON; exit status 1 on any problem."""
    model, metadata, config = load_exported(ts_file)
    report: dict = {"io_problems": check_network_io(model, metadata)}
    if ckpt_file and images:
        parser = ConfigParser(config)
        files = sorted(f for f in glob.glob(os.path.join(images, "*")) if os.path.isfile(f)) if os.path.isdir(images) else [images]
        parser["datalist"] = [{"image": f} for f in files]
        batch = torch.stack([parser.get_parsed_content("preprocessing")({"image": f})["image"].as_tensor() for f in files])
        eager = parser.get_parsed_content("network_def").eval()
        eager.load_state_dict(torch.load(ckpt_file, map_location="cpu", weights_only=True))
        report["images"] = files
        gates = parser.get_parsed_content("gate_thresholds")
        thresholds = (gates["det_gate"], gates["seg_gate"])
        report["max_difference"] = max_output_difference(model, eager, batch.float(), thresholds)
    print(json.dumps(report, indent=2))
    bad = report["io_problems"] or any(v > atol for v in report.get("max_difference", {}).values())
    if bad:
        raise SystemExit(1)


if __name__ == "__main__":
    fire.Fire(main)
