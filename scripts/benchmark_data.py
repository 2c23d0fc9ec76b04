"""Data benchmark: label-file preparation at full scale, and data-loading versus training throughput.

1. Seconds to read the full NIH label file (112,120 rows) and the full SIIM RLE file (12,954 rows) into entries
   and split them by patient (images are not needed for this: ``on_missing='ignore'``).
2. Through ``configs/train.json`` on a prepared real datalist: the start-up check (every entry decoded), the
   training dataset build (that check, then the CacheDataset fill: decode + preprocessing), an epoch from the
   cache with augmentation, and training steps of the model, each in images/s. Data loading keeps up when the
   cached epoch is much faster than training.

    python scripts/benchmark_data.py --datalist nih.json --image_size 128 --backbone resnet18
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import fire
import torch
from monai.bundle import ConfigParser

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bundle.data import check_datalist, sources, split_by_patient  # noqa: E402
from bundle.engines.batch import batch_to_device  # noqa: E402

DATA = ROOT.parent / "shared" / "data"


def _seconds(work) -> tuple[float, object]:
    start = time.perf_counter()
    result = work()
    return time.perf_counter() - start, result


def prepare_timings(data: Path = DATA) -> dict[str, float]:
    """Seconds to read and split the full NIH and SIIM label files."""
    nih_s, nih = _seconds(lambda: sources.nih(data / "nih1000" / "Data_Entry_2017_v2020_full.csv.gz", data,
                                              on_missing="ignore").entries)
    split_s, _ = _seconds(lambda: split_by_patient(nih))
    siim_s, siim = _seconds(lambda: sources.siim(data / "siim" / "train-rle_full.csv.gz", data,
                                                 on_missing="ignore").entries)
    print(f"full NIH: {len(nih)} images read in {nih_s:.2f} s, split by patient in {split_s:.2f} s")
    print(f"full SIIM: {len(siim)} images read (RLE checked) in {siim_s:.2f} s")
    return {"nih_s": nih_s, "nih_split_s": split_s, "siim_s": siim_s}


def _sample_datalist(folder: Path, data: Path = DATA) -> Path:
    """The real NIH sample (800 thumbnails) with RSNA boxes, prepared like a user would."""
    nih = data / "nih1000"
    rsna = nih / "rsna"
    result = sources.nih(nih / "Data_Entry_2017.csv", nih / "images", rsna_labels=rsna / "stage_2_train_labels.csv",
                         rsna_map=rsna / "patient_to_nih.csv")
    sources.index_box_classes(result.entries)
    path = folder / "nih.json"
    path.write_text(json.dumps({"training": result.entries, "validation": []}))
    return path


def main(
    datalist: str | None = None, image_size: int = 128, batch_size: int = 16, backbone: str = "resnet18",
    train_steps: int = 5, threads: int = 1, skip_prepare: bool = False,
) -> dict[str, float]:
    """Print and return every figure; ``datalist`` defaults to the real NIH sample in ../shared/data."""
    torch.set_num_threads(threads)
    figures = {} if skip_prepare else prepare_timings()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(datalist) if datalist else _sample_datalist(Path(tmp))
        parser = ConfigParser()
        parser.read_config(ROOT / "configs" / "train.json")
        parser.update({"datalist_file": str(path), "image_size": [image_size, image_size], "batch_size": batch_size,
                       "network_def#backbone": backbone, "ckpt_dir": tmp, "output_dir": tmp})
        check_s, entries = _seconds(lambda: check_datalist(path, "training"))
        fill_s, dataset = _seconds(lambda: parser.get_parsed_content("train#dataset"))
        loader = parser.get_parsed_content("train#dataloader")
        epoch_s, _ = _seconds(lambda: [None for _ in loader])
        network, loss, optimizer = (parser.get_parsed_content(k) for k in ("network", "loss", "optimizer"))
        device = parser.get_parsed_content("device")
        batches = [batch_to_device(b, device) for _, b in zip(range(train_steps + 1), loader)]

        def step(batch: dict) -> None:
            optimizer.zero_grad()
            loss(network(batch["image"]), batch)["loss"].backward()
            optimizer.step()

        step(batches[0])  # warm-up
        train_s, _ = _seconds(lambda: [step(b) for b in batches[1:]])
        trained = sum(len(b["image"]) for b in batches[1:])
    n = len(entries)
    figures.update({
        "check_images_per_s": n / check_s, "dataset_build_images_per_s": len(dataset) / fill_s,
        "cached_epoch_images_per_s": len(dataset) / epoch_s, "train_images_per_s": trained / train_s,
    })
    print(f"{n} images at {image_size} px, batch {batch_size}, {backbone}, {threads} thread(s), device {device}:")
    print(f"  start-up check (decode + labels): {figures['check_images_per_s']:.0f} images/s")
    print(f"  train dataset build (check + CacheDataset fill): {figures['dataset_build_images_per_s']:.0f} images/s")
    print(f"  cached epoch with augmentation: {figures['cached_epoch_images_per_s']:.0f} images/s")
    print(f"  training steps: {figures['train_images_per_s']:.1f} images/s")
    return figures


if __name__ == "__main__":
    fire.Fire(main)
