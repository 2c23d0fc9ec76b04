"""What the README's demo training spends outside the network's forward and backward, measured in one run.

1. Generating the synthetic demo set: one process against the forked workers :func:`bundle.data.make_demo_dataset`
   uses (the same files either way).
2. The spatial augmentation of ``configs/train.json`` per image, applied every time (``prob`` 1): MONAI's
   dictionary transforms (``RandFlipBoxd`` + ``RandAffined`` on image and mask, the bundle's box update
   excluded) against the bundle's ``RandMirrorBoxd`` + ``RandAffineBoxd`` (boxes included), on demo images;
   ``rounds`` interleaved blocks, the median block.
3. The optimiser step of the default network: AdamW's per-tensor loop (``foreach``) against its fused kernel
   (``fused``, ``configs/train.json``), interleaved likewise.

    python scripts/benchmark_demo.py --output docs/results/speed/demo_parts.json
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from unittest import mock

import fire
import torch
from monai.apps.detection.transforms.dictionary import RandFlipBoxd
from monai.bundle import ConfigParser
from monai.transforms import Compose, RandAffined

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import bundle.data.synthetic as synthetic  # noqa: E402
from bundle.data import LoadCXRd, PrepareTargetsd, RandAffineBoxd, RandMirrorBoxd, ResizeTargetsd  # noqa: E402


def _seconds_per_call(work: Callable[[], object], repeats: int) -> float:
    start = time.perf_counter()
    for _ in range(repeats):
        work()
    return (time.perf_counter() - start) / repeats


def generation_seconds(num_images: int, size: int) -> dict[str, float]:
    """Seconds to generate a demo set of ``num_images`` images with one process and with the default workers."""
    split = {"num_train": num_images - 2 * (num_images // 6), "num_val": num_images // 6, "num_test": num_images // 6}
    seconds = {}
    with tempfile.TemporaryDirectory() as folder:
        for name, cores in (("one_process", 1), ("workers", synthetic.os.cpu_count())):
            root = Path(folder) / name
            with mock.patch.object(synthetic.os, "cpu_count", lambda cores=cores: cores):
                start = time.perf_counter()
                synthetic.make_demo_dataset(root, size=size, **split)
                seconds[name] = round(time.perf_counter() - start, 2)
            shutil.rmtree(root)
    return seconds


def augmentation_ms(size: int, images: int, rounds: int) -> dict[str, float]:
    """Milliseconds per image of the two spatial augmentations (see the module docstring)."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder) / "demo"
        datalist = synthetic.make_demo_dataset(root, num_train=images, num_val=2, num_test=2, size=size)
        entries = json.loads(datalist.read_text())["training"]
        load = Compose([LoadCXRd(["image", "mask"]), PrepareTargetsd(14), ResizeTargetsd((size, size))])
        samples = [load({**e, "image": str(datalist.parent / e["image"]), "mask": str(datalist.parent / e["mask"])})
                   for e in entries]
    translate = size / 32
    monai_way = Compose([
        RandFlipBoxd(["image", "mask"], "boxes", "image", prob=1.0, spatial_axis=0),
        RandAffined(["image", "mask"], prob=1.0, rotate_range=float(torch.pi / 36), scale_range=(0.05, 0.05),
                    translate_range=(translate, translate), mode=["bilinear", "nearest"], padding_mode="zeros"),
    ])
    bundle_way = Compose([
        RandMirrorBoxd(["image", "mask"], prob=1.0, spatial_axis=0),
        RandAffineBoxd(["image", "mask"], rotate_degrees=5.0, scale=0.05, translate=translate, prob=1.0),
    ])
    blocks: dict[str, list[float]] = {"monai": [], "bundle": []}
    for _ in range(rounds):
        for name, transform in (("monai", monai_way), ("bundle", bundle_way)):
            blocks[name].append(_seconds_per_call(lambda t=transform: [t(dict(s)) for s in samples], 1) / len(samples))
    return {name: round(1000 * statistics.median(values), 3) for name, values in blocks.items()}


def optimizer_ms(steps: int, rounds: int) -> dict[str, float]:
    """Milliseconds per AdamW step of the default network (``configs/train.json``'s ``network_def``)."""
    parser = ConfigParser()
    parser.read_config(ROOT / "configs" / "train.json")
    network = parser.get_parsed_content("network_def").to(memory_format=torch.channels_last)
    for parameter in network.parameters():
        parameter.grad = torch.randn_like(parameter)
    optimizers = {name: torch.optim.AdamW(network.parameters(), lr=1e-3, weight_decay=1e-4, **{name: True})
                  for name in ("foreach", "fused")}
    blocks: dict[str, list[float]] = {name: [] for name in optimizers}
    for optimizer in optimizers.values():
        optimizer.step()  # state allocated outside the timing
    for _ in range(rounds):
        for name, optimizer in optimizers.items():
            blocks[name].append(_seconds_per_call(optimizer.step, steps))
    return {name: round(1000 * statistics.median(values), 2) for name, values in blocks.items()}


def main(
    size: int = 128, num_images: int = 1280, augment_images: int = 64, steps: int = 10, rounds: int = 5,
    output: str | None = None,
) -> dict:
    """Print (and write to ``output``) the three comparisons with the threads and cores they ran on."""
    figures = {
        "threads": torch.get_num_threads(),
        "cores": synthetic.os.cpu_count(),
        "generation_s": generation_seconds(num_images, size),
        "augmentation_ms_per_image": augmentation_ms(size, augment_images, rounds),
        "adamw_step_ms": optimizer_ms(steps, rounds),
    }
    print(json.dumps(figures, indent=1))
    if output:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(json.dumps(figures, indent=1) + "\n")
    return figures


if __name__ == "__main__":
    fire.Fire(main)
