"""Inference benchmark: all heads in one MultiCheXNet pass versus three single-task models.

Each single-task model has its own encoder (same backbone) and one head, as three separately trained
networks would. Every variant runs in a fresh child process so its peak memory is its own: peak resident
memory on CPU, peak allocated CUDA memory on GPU. Figures are measured in one run and reported as ratios.

    python scripts/benchmark.py --sizes "[256,512]" --batch_size 4 --iterations 5
"""

from __future__ import annotations

import json
import multiprocessing as mp
import resource
import sys
import time
from pathlib import Path

import fire
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bundle.networks import MultiCheXNet  # noqa: E402

SINGLE_TASKS = (["cls"], ["seg"], ["det"])


def _measure(variant: str, size: int, batch_size: int, iterations: int, backbone: str, device: str, queue) -> None:
    torch.manual_seed(0)
    dev = torch.device(device)
    if variant == "multitask":
        runs = [(MultiCheXNet(backbone=backbone).to(dev).eval(), None)]
    else:
        runs = [(MultiCheXNet(backbone=backbone).to(dev).eval(), tasks) for tasks in SINGLE_TASKS]
    image = torch.rand(batch_size, 1, size, size, device=dev)

    def step() -> None:
        for net, tasks in runs:
            net(image, tasks)
        if dev.type == "cuda":
            torch.cuda.synchronize()

    with torch.inference_mode():
        step()  # warm-up
        if dev.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        for _ in range(iterations):
            step()
        seconds = time.perf_counter() - start
    if dev.type == "cuda":
        peak_mib = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    queue.put({"images_per_s": batch_size * iterations / seconds, "peak_mib": peak_mib})


def _run_child(*args) -> dict:
    queue = mp.get_context("spawn").Queue()
    proc = mp.get_context("spawn").Process(target=_measure, args=(*args, queue))
    proc.start()
    result = queue.get()
    proc.join()
    return result


def benchmark(
    sizes: tuple[int, ...] = (256, 512),
    batch_size: int = 4,
    iterations: int = 5,
    backbone: str = "densenet121",
    device: str = "cuda" if torch.cuda.is_available() else "cpu",
    output: str | None = None,
) -> None:
    """Per image size, images/s and peak memory of both variants and the throughput ratio (printed as JSON)."""
    rows = []
    for size in sizes:
        multi = _run_child("multitask", size, batch_size, iterations, backbone, device)
        single = _run_child("single", size, batch_size, iterations, backbone, device)
        row = {
            "size": size,
            "backbone": backbone,
            "device": device,
            "batch_size": batch_size,
            "multitask_images_per_s": round(multi["images_per_s"], 2),
            "three_single_task_images_per_s": round(single["images_per_s"], 2),
            "throughput_ratio": round(multi["images_per_s"] / single["images_per_s"], 2),
            "multitask_peak_mib": round(multi["peak_mib"], 1),
            "three_single_task_peak_mib": round(single["peak_mib"], 1),
        }
        rows.append(row)
        print(json.dumps(row))
    if output:
        Path(output).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    fire.Fire(benchmark)
