"""Export the model of a checkpoint folder to TorchScript, all heads and the gating (``forward_gated``) in one
file, with ``metadata.json``, ``inference.json`` and the model package (network, detector, decision policy)
embedded as extra files, so that the file alone is enough to run it as ``run inference`` does.

    python scripts/export_torchscript.py --ckpt_dir models --filepath models/model.ts
"""

from __future__ import annotations

import io
import json
import sys
from pathlib import Path
from typing import Any

import fire
import torch
from monai.data.torchscript_utils import save_net_with_metadata

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bundle.export import exportable  # noqa: E402
from bundle.fileio import atomic_write  # noqa: E402
from bundle.packaging import ModelFileError  # noqa: E402


def main(
    ckpt_dir: str = "models",
    filepath: str = "models/model.ts",
    config_file: str = "configs/inference.json",
    meta_file: str = "configs/metadata.json",
    **override: Any,
) -> None:
    """Script ``<ckpt_dir>/model.pt`` (``override``: config ids and values, e.g. ``--gate_thresholds``) to
    ``filepath``; print the embedded file names as JSON."""
    try:
        network, texts = exportable(ckpt_dir, config_file, meta_file, **override)
    except (ModelFileError, FileNotFoundError) as err:
        raise SystemExit(str(err)) from None
    meta = json.loads(texts.pop("metadata.json"))
    buffer = io.BytesIO()
    save_net_with_metadata(
        torch.jit.script(network), buffer, include_config_vals=False, meta_values=meta,
        more_extra_files={k: v.encode() for k, v in texts.items()},
    )
    atomic_write(Path(filepath), buffer.getvalue())
    print(json.dumps({"filepath": filepath, "extra_files": ["metadata.json", *texts]}))


if __name__ == "__main__":
    fire.Fire(main)
