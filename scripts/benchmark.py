"""Inference benchmarks, figures measured in one run and reported as ratios.

``--compare tasks`` (default): all heads in one MultiCheXNet pass versus three single-task models. Each
single-task model has its own encoder (same backbone) and one head, as three separately trained networks
would. Every variant runs in a fresh child process so its peak memory is its own: peak resident memory on
CPU, peak allocated CUDA memory on GPU. The two variants alternate for ``rounds`` rounds and each reports its
median round, so that the machine's drift in speed does not fall on one of them. ``--backend torchscript``
scripts every model; ``--backend onnxruntime`` (CPU) runs the multi-task model's gated export with every image
passing (all heads) and each single-task model as an ONNX graph of its one head.

``--compare runtimes``: eager PyTorch versus TorchScript versus ONNX Runtime (``bundle.runtimes``) on the CPU,
all heads and gated, for one random-initialised network. The backends take turns: ``rounds`` timed blocks of
``iterations`` batches each, images/s from the median block, so load from other processes hits all alike.

``--compare heads``: in one process, encoder + classifier versus all heads versus gated inference with one image
of the batch passing each gate (interleaved like the runtimes), and the time of every head module (encoder, FPN,
box and class subnets, seg decoder, gates) and of the decision post-processing of the outputs; ``--backend
torchscript`` or ``onnxruntime`` gives the same three ratios for the exported model, ``onnxruntime`` also the
per-module breakdown from its kernel profiler.

``--compare train``: seconds per training step (forward of every head, backward, fused AdamW step; channels-last
weights, as ``configs/train.json``) in float32 and with CPU bfloat16 autocast, and whether this CPU has native
bfloat16 (without it the engines run float32, :mod:`bundle.engines.precision`).

Every comparison builds the bundle's default network, ``configs/train.json``'s ``network_def`` (its light heads),
with ``--network_args`` over it; each row records the arguments it ran with.

    python scripts/benchmark.py --sizes "[256,512]" --batch_size 4 --iterations 5
    python scripts/benchmark.py --sizes "[256,512]" --batch_size 4 --iterations 10 --rounds 3 --backend onnxruntime
    python scripts/benchmark.py --compare runtimes --sizes "[256,512]" --batch_size 2 --iterations 2 --rounds 3
    python scripts/benchmark.py --compare heads --sizes "[256,512]" --batch_size 4 --iterations 2 --rounds 3
    python scripts/benchmark.py --compare train --sizes "[128]" --batch_size 16 --iterations 3
"""

from __future__ import annotations

import ast
import json
import multiprocessing as mp
import re
import resource
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import fire
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bundle.data import NIH_FINDINGS  # noqa: E402
from bundle.decisions import DecisionPolicy, MaskPostprocessing, decide, image_heads  # noqa: E402
from bundle.detection import CheXDetector  # noqa: E402
from bundle.engines.precision import native_bfloat16_cpu  # noqa: E402
from bundle.networks import MultiCheXNet  # noqa: E402
from bundle.runtimes import BACKENDS, Backend, load_backend  # noqa: E402

SINGLE_TASKS = (["cls"], ["seg"], ["det"])
#: Untimed steps before ``--compare tasks`` times: TorchScript's profiling executor optimises a graph on its second
#: call, so one warm-up step would time the optimisation.
WARMUP_STEPS = 3
#: The suffix ONNX Runtime's graph rewrites append to the name of a node they replace (layout, fused batch norm);
#: fusions also prefix "fused " or append "/<fusion>/".
REWRITE_SUFFIX = re.compile(r"_(nchwc|bn|token_\d+)$")
#: Gate thresholds of the gated runtime measurement.
GATE_THRESHOLDS = (0.5, 0.5)


def default_network_args() -> dict[str, Any]:
    """The literal MultiCheXNet arguments of ``configs/train.json``'s ``network_def`` (the bundle's default network),
    less the backbone (``--backbone``) and the arguments it takes from other config entries."""
    spec = json.loads((ROOT / "configs" / "train.json").read_text())["network_def"]
    return {k: v for k, v in spec.items()
            if not k.startswith("_") and k != "backbone" and not (isinstance(v, str) and v.startswith(("@", "$")))}


def _task_runner(network: MultiCheXNet, tasks: list[str] | None, backend: str) -> Callable:
    """``image -> outputs`` of ``network`` on ``tasks`` (None: all heads) through ``backend``."""
    if backend == "eager":
        return lambda image: network(image, tasks)
    if backend == "torchscript":
        scripted = torch.jit.script(network)
        return lambda image: scripted(image, tasks)
    if backend == "onnxruntime":
        return load_backend(backend, network=network) if tasks is None else _tasks_onnx(network, tasks, None)
    raise SystemExit(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")


def _measure(
    variant: str, size: int, batch_size: int, iterations: int, backbone: str, device: str, network_args: dict,
    backend: str, queue,
) -> None:
    torch.manual_seed(0)
    dev = torch.device(device)
    variants = [None] if variant == "multitask" else list(SINGLE_TASKS)
    runs = [_task_runner(MultiCheXNet(backbone=backbone, **network_args).to(dev).eval(), tasks, backend)
            for tasks in variants]
    image = torch.rand(batch_size, 1, size, size, device=dev)

    def step() -> None:
        for run in runs:
            run(image)
        if dev.type == "cuda":
            torch.cuda.synchronize()

    with torch.inference_mode():
        for _ in range(WARMUP_STEPS):
            step()
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


def _runtime_modes(backend: Backend) -> dict[str, Callable]:
    return {"all_heads": backend, "gated": lambda image: backend.forward_gated(image, *GATE_THRESHOLDS)}


def _compare_runtimes(
    size: int, batch_size: int, iterations: int, rounds: int, backends: dict[str, Backend]
) -> dict[str, dict]:
    """Images/s of every backend and mode at one image size, interleaved, with the largest output difference
    from eager and the share of images each gate lets through."""
    image = torch.rand(batch_size, 1, size, size)
    seconds: dict[tuple[str, str], list[float]] = {}
    reference = {mode: run(image) for mode, run in _runtime_modes(backends["eager"]).items()}
    max_diff: dict[tuple[str, str], float] = {}
    for name, backend in backends.items():
        for mode, run in _runtime_modes(backend).items():
            run(image)  # warm-up (TorchScript's profiling executor optimises on the second call)
            out = run(image)
            max_diff[name, mode] = max(float((out[k].float() - reference[mode][k].float()).abs().max()) for k in out)
    for _ in range(rounds):
        for name, backend in backends.items():
            for mode, run in _runtime_modes(backend).items():
                start = time.perf_counter()
                for _ in range(iterations):
                    run(image)
                seconds.setdefault((name, mode), []).append(time.perf_counter() - start)
    report: dict[str, dict] = {}
    for mode in ("all_heads", "gated"):
        speed = {name: batch_size * iterations / statistics.median(seconds[name, mode]) for name in backends}
        fastest = max(speed, key=speed.get)
        report[mode] = {
            "images_per_s": {name: round(v, 2) for name, v in speed.items()},
            "ratio_to_eager": {name: round(v / speed["eager"], 2) for name, v in speed.items()},
            "max_abs_diff_vs_eager": {name: max_diff[name, mode] for name in backends},
            "fastest": fastest,
            "fastest_speedup_over_eager": round(speed[fastest] / speed["eager"], 2),
        }
    gated = reference["gated"]
    report["gated"]["gated_in"] = {k: float(gated[f"{k}_gated_in"].float().mean()) for k in ("det", "seg")}
    return report


def benchmark_runtimes(
    sizes: tuple[int, ...], batch_size: int, iterations: int, rounds: int, backbone: str, threads: int | None,
    network_args: dict[str, Any],
) -> list[dict]:
    """One row per image size: eager vs TorchScript vs ONNX Runtime on the CPU (see the module docstring)."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    network = MultiCheXNet(backbone=backbone, **network_args).eval()
    backends = {name: load_backend(name, network=network, threads=threads) for name in BACKENDS}
    rows = []
    with torch.inference_mode():
        for size in sizes:
            row = {
                "size": size,
                "backbone": backbone,
                "network_args": network_args,
                "device": "cpu",
                "threads": torch.get_num_threads(),
                "batch_size": batch_size,
                **_compare_runtimes(size, batch_size, iterations, rounds, backends),
            }
            rows.append(row)
            print(json.dumps(row))
    return rows


#: Modules timed in the per-module breakdown, by their name in MultiCheXNet.
BREAKDOWN = ("encoder", "cls_head", "det_gate", "seg_gate", "seg_head.lateral", "seg_head.decoder", "seg_head.head",
             "det_head.fpn", "det_head.cls_subnet", "det_head.box_subnet")


def _module_seconds(network: MultiCheXNet, image: torch.Tensor, iterations: int) -> dict[str, float]:
    """Seconds per batch spent in each :data:`BREAKDOWN` module over ``iterations`` all-heads passes, and in
    the whole pass (``total``)."""
    modules = dict(network.named_modules())
    spent = dict.fromkeys((name for name in BREAKDOWN if name in modules), 0.0)  # the attention decoder: no lateral
    started: dict[str, float] = {}
    handles = []
    for name in list(spent):  # a ModuleList (CheXSeg's projections) is timed as the sum of its members
        module = modules[name]
        for part in module if isinstance(module, torch.nn.ModuleList) else [module]:
            handles.append(part.register_forward_pre_hook(lambda *_, n=name: started.__setitem__(n, time.perf_counter())))
            handles.append(part.register_forward_hook(
                lambda *_, n=name: spent.__setitem__(n, spent[n] + time.perf_counter() - started[n])))
    start = time.perf_counter()
    try:
        for _ in range(iterations):
            network(image)
    finally:
        for handle in handles:
            handle.remove()
    spent["total"] = time.perf_counter() - start
    return {name: seconds / iterations for name, seconds in spent.items()}


def _decision_seconds(network: MultiCheXNet, detector: CheXDetector, image: torch.Tensor, iterations: int) -> float:
    """Seconds per batch from the all-heads outputs to the findings: box decoding and selection
    (``CheXDetector.predict``) and ``bundle.decisions.decide`` per image (thresholds, the lung recipe's mask
    post-processing: holes, neck cut, the two largest components), at the model's size."""
    size = tuple(image.shape[2:])
    policy = replace(DecisionPolicy.default(NIH_FINDINGS, size),
                     mask=MaskPostprocessing(fill_holes=True, neck_fraction=0.02, keep_largest=2))
    out = network(image)
    start = time.perf_counter()
    for _ in range(iterations):
        found = detector.predict(out["det_cls"], out["det_box"], size)
        for i in range(image.shape[0]):
            decide(image_heads(out, i, found), policy, size)
    return (time.perf_counter() - start) / iterations


class _Tasks(torch.nn.Module):
    """``network`` on ``tasks`` only (None: every head), its outputs as a tuple in ``network``'s key order (an
    exportable graph)."""

    def __init__(self, network: MultiCheXNet, tasks: list[str] | None) -> None:
        super().__init__()
        self.network = network
        self.tasks = None if tasks is None else list(tasks)
        with torch.no_grad():
            self.names = list(network(torch.rand(1, 1, 64, 64), self.tasks))

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.network(image, self.tasks)
        return tuple(out[key] for key in self.names)


def _onnx_session(network: MultiCheXNet, tasks: list[str] | None, threads: int | None, profile: str | None = None):
    """The ONNX model of ``network`` on ``tasks`` (dynamic batch and size) and an ONNX Runtime session of it,
    profiling its kernels into files named ``profile``* when given."""
    import onnxruntime as ort
    from torch.export import Dim

    graph = _Tasks(network, tasks).eval()
    program = torch.onnx.export(
        graph, (torch.rand(2, 1, 64, 64),), dynamo=True, input_names=["image"], output_names=graph.names,
        dynamic_shapes={"image": {0: Dim("batch", min=1), 2: 32 * Dim("w32", min=1), 3: 32 * Dim("h32", min=1)}},
        verbose=False)
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if profile:
        options.enable_profiling, options.profile_file_prefix = True, profile
    model = program.model_proto
    return model, ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def _tasks_onnx(network: MultiCheXNet, tasks: list[str], threads: int | None) -> Callable:
    """An ONNX Runtime session of ``network`` on ``tasks`` only (dynamic batch and size), as a callable."""
    session = _onnx_session(network, tasks, threads)[1]
    return lambda image: session.run(None, {"image": image.numpy()})


def _onnx_module_seconds(
    network: MultiCheXNet, image: torch.Tensor, iterations: int, threads: int | None
) -> dict[str, float]:
    """Seconds per batch that ONNX Runtime's kernels spend in each :data:`BREAKDOWN` module over ``iterations``
    all-heads runs of a plain graph, from its profiler: each kernel is attributed to the module scope the exporter
    recorded on the node it came from; kernels of nodes that ONNX Runtime's rewrites created without one (the
    reorders between its blocked and plain layouts) are ``unattributed``; ``total`` is the sum of all kernels."""
    with tempfile.TemporaryDirectory() as tmp:
        model, session = _onnx_session(network, None, threads, profile=str(Path(tmp) / "ort"))
        feed = {"image": image.numpy()}
        for _ in range(WARMUP_STEPS + iterations):
            session.run(None, feed)
        events = json.loads(Path(session.end_profiling()).read_text())
    kernels = [e for e in events if e.get("cat") == "Node" and e["name"].endswith("_kernel_time")]
    timed = kernels[len(kernels) * WARMUP_STEPS // (WARMUP_STEPS + iterations):]  # every run has the same kernels
    owner: dict[str, str] = {}
    for node in model.graph.node:
        meta = {prop.key: prop.value for prop in node.metadata_props}
        scopes = ast.literal_eval(meta.get("pkg.torch.onnx.name_scopes", "[]"))
        path = next((sc.removeprefix("network.") for sc in reversed(scopes) if sc.startswith("network.")), "")
        module = next((m for m in BREAKDOWN if path == m or path.startswith(m + ".")), "unattributed")
        for name in (node.name, *node.output):
            owner[name] = module
    spent = dict.fromkeys((*BREAKDOWN, "unattributed"), 0.0)
    for event in timed:
        name = event["name"].removesuffix("_kernel_time").removeprefix("fused ").split("/")[0]
        while name not in owner and REWRITE_SUFFIX.search(name):  # a node ONNX Runtime's rewrites renamed
            name = REWRITE_SUFFIX.sub("", name)
        spent[owner.get(name, "unattributed")] += event["dur"] * 1e-6
    spent["total"] = sum(spent.values())
    return {name: seconds / iterations for name, seconds in spent.items() if seconds > 0 or name == "total"}


def _head_modes(
    backend: str, network: MultiCheXNet, image: torch.Tensor, det_t: float, seg_t: float, threads: int | None
) -> dict[str, Callable]:
    """Encoder + cls, all heads and gated calls of ``network`` run by ``backend`` (eager, TorchScript or ONNX
    Runtime, whose encoder + cls is a graph of its own)."""
    if backend == "eager":
        return {"encoder_cls": lambda: network(image, ["cls"]), "all_heads": lambda: network(image),
                "gated": lambda: network.forward_gated(image, det_t, seg_t)}
    if backend == "torchscript":
        scripted = torch.jit.script(network)
        return {"encoder_cls": lambda: scripted(image, ["cls"]), "all_heads": lambda: scripted(image),
                "gated": lambda: scripted.forward_gated(image, det_t, seg_t)}
    if backend == "onnxruntime":
        encoder_cls = _tasks_onnx(network, ["cls"], threads)
        heads = load_backend(backend, network=network, threads=threads)
        return {"encoder_cls": lambda: encoder_cls(image), "all_heads": lambda: heads(image),
                "gated": lambda: heads.forward_gated(image, det_t, seg_t)}
    raise SystemExit(f"--backend must be one of {', '.join(BACKENDS)}, got {backend!r}")


def _compare_heads(
    network: MultiCheXNet, detector: CheXDetector, size: int, batch_size: int, iterations: int, rounds: int,
    backend: str = "eager", threads: int | None = None,
) -> dict:
    """Encoder + cls vs all heads vs gated (one image of the batch through each gate), interleaved, run by
    ``backend``; for eager also the per-module breakdown of an all-heads pass and the decision post-processing's
    time."""
    # brightness differs per image, so that even a network whose gates barely depend on noise ranks the images
    image = torch.rand(batch_size, 1, size, size) * torch.linspace(1.0, 0.5, batch_size).view(-1, 1, 1, 1)
    gates = network(image, ["det_gate", "seg_gate"])
    # thresholds at each gate's highest probability in the batch: exactly one image passes each (random weights)
    det_t, seg_t = (float(torch.sigmoid(gates[g][:, 0]).max()) for g in ("det_gate", "seg_gate"))
    modes = _head_modes(backend, network, image, det_t, seg_t, threads)
    passed = network.forward_gated(image, det_t, seg_t)
    seconds: dict[str, list[float]] = {mode: [] for mode in modes}
    for run in modes.values():
        run()  # warm-up (TorchScript's profiling executor optimises on the second call)
        run()
    for _ in range(rounds):
        for mode, run in modes.items():
            start = time.perf_counter()
            for _ in range(iterations):
                run()
            seconds[mode].append((time.perf_counter() - start) / iterations)
    per_batch = {mode: statistics.median(s) for mode, s in seconds.items()}
    report = {
        "ms_per_batch": {mode: round(1000 * v, 1) for mode, v in per_batch.items()},
        "ratio_to_encoder_cls": {mode: round(v / per_batch["encoder_cls"], 3) for mode, v in per_batch.items()},
        "gated_in": {g: float(passed[f"{g}_gated_in"].float().mean()) for g in ("det", "seg")},
    }
    if backend == "torchscript":
        return report
    if backend == "onnxruntime":
        modules = _onnx_module_seconds(network, image, iterations, threads)
    else:
        modules = _module_seconds(network, image, iterations)
    total = modules.pop("total")
    report.update({
        "module_ms_per_batch": {name: round(1000 * v, 2) for name, v in modules.items()},
        "module_share_of_all_heads": {name: round(v / total, 3) for name, v in modules.items()},  # of that pass
    })
    if backend == "eager":
        report["decisions_ms_per_batch"] = round(1000 * _decision_seconds(network, detector, image, iterations), 1)
    return report


def benchmark_heads(
    sizes: tuple[int, ...], batch_size: int, iterations: int, rounds: int, backbone: str, threads: int | None,
    network_args: dict[str, Any], backend: str = "eager",
) -> list[dict]:
    """One row per image size: the cost of the heads over the encoder (see the module docstring), on the CPU,
    run by ``backend``, for MultiCheXNet(``backbone``, ``network_args``)."""
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(0)
    detector = CheXDetector()
    network = MultiCheXNet(backbone=backbone, num_anchors=detector.num_anchors, **network_args).eval()
    rows = []
    with torch.inference_mode():
        for size in sizes:
            row = {"size": size, "backbone": backbone, "network_args": network_args, "backend": backend,
                   "device": "cpu", "threads": torch.get_num_threads(), "batch_size": batch_size,
                   **_compare_heads(network, detector, size, batch_size, iterations, rounds, backend, threads)}
            rows.append(row)
            print(json.dumps(row))
    return rows


def benchmark_tasks(
    sizes: tuple[int, ...], batch_size: int, iterations: int, backbone: str, device: str,
    network_args: dict[str, Any], backend: str = "eager", rounds: int = 1,
) -> list[dict]:
    """One row per image size: one multi-task pass vs three single-task models (see the module docstring), all
    built with ``network_args`` and run by ``backend``; ``rounds`` alternating pairs of child processes, images/s
    from each variant's median round (drift of the machine's speed then hits both alike), peak memory the largest."""
    rows = []
    for size in sizes:
        runs: dict[str, list[dict]] = {"multitask": [], "single": []}
        for _ in range(rounds):
            for variant, results in runs.items():
                args = (variant, size, batch_size, iterations, backbone, device, network_args, backend)
                results.append(_run_child(*args))
        multi, single = ({"images_per_s": statistics.median(r["images_per_s"] for r in results),
                          "peak_mib": max(r["peak_mib"] for r in results)} for results in runs.values())
        row = {
            "size": size,
            "backbone": backbone,
            "network_args": network_args,
            "device": device,
            "backend": backend,
            "batch_size": batch_size,
            "multitask_images_per_s": round(multi["images_per_s"], 2),
            "three_single_task_images_per_s": round(single["images_per_s"], 2),
            "throughput_ratio": round(multi["images_per_s"] / single["images_per_s"], 2),
            "round_ratios": [round(m["images_per_s"] / s["images_per_s"], 2) for m, s in zip(*runs.values())],
            "multitask_peak_mib": round(multi["peak_mib"], 1),
            "three_single_task_peak_mib": round(single["peak_mib"], 1),
        }
        rows.append(row)
        print(json.dumps(row))
    return rows


def benchmark_train(
    sizes: tuple[int, ...], batch_size: int, iterations: int, backbone: str, network_args: dict[str, Any],
) -> list[dict]:
    """One row per image size: median seconds per CPU training step in float32 and in bfloat16 autocast, and the
    process's peak resident memory after the float32 steps (sizes in increasing order: the peak only grows)."""
    rows = []
    for size in sizes:
        torch.manual_seed(0)
        network = MultiCheXNet(backbone=backbone, **network_args).to(memory_format=torch.channels_last).train()
        optimizer = torch.optim.AdamW(network.parameters(), fused=True)  # as configs/train.json
        image = torch.rand(batch_size, 1, size, size)
        seconds: dict[str, float] = {}
        for mode, amp in (("float32", False), ("bfloat16_autocast", True)):
            steps = []
            for _ in range(iterations + 1):  # the first is warm-up
                start = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
                    out = network(image)
                loss = sum(v.float().mean() for v in out.values())
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                steps.append(time.perf_counter() - start)
            seconds[mode] = statistics.median(steps[1:])
            if mode == "float32":  # the process's peak so far: the float32 steps, weights and optimiser state
                peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        row = {"size": size, "backbone": backbone, "network_args": network_args, "batch_size": batch_size,
               "threads": torch.get_num_threads(), "native_bfloat16": native_bfloat16_cpu(),
               "s_per_step": {m: round(v, 3) for m, v in seconds.items()},
               "float32_peak_rss_mib": round(peak_mib, 1),
               "autocast_over_float32": round(seconds["bfloat16_autocast"] / seconds["float32"], 2)}
        rows.append(row)
        print(json.dumps(row))
    return rows


def benchmark(
    sizes: tuple[int, ...] = (256, 512),
    batch_size: int = 4,
    iterations: int = 5,
    backbone: str = "densenet121",
    device: str = "cuda" if torch.cuda.is_available() else "cpu",
    output: str | None = None,
    compare: str = "tasks",
    rounds: int = 3,
    threads: int | None = None,
    network_args: dict[str, Any] | None = None,
    backend: str = "eager",
) -> None:
    """Print one JSON row per image size (and write them all to ``output``).

    Args:
        compare: ``tasks`` (multi-task vs three single-task models, on ``device``, ``rounds`` alternating pairs of
            child processes), ``runtimes`` (eager vs
            TorchScript vs ONNX Runtime, CPU, ``rounds`` interleaved timed blocks, ``threads`` intra-op threads
            for PyTorch and ONNX Runtime alike, default PyTorch's) or ``heads`` (the heads' cost over the
            encoder, gated inference and the per-module breakdown, CPU, ``rounds`` and ``threads`` likewise) or
            ``train`` (seconds per CPU training step, float32 vs bfloat16 autocast);
        network_args: MultiCheXNet arguments over :func:`default_network_args`, e.g. the full decoder and
            detector ``{"seg_output_stride": 1, "seg_skip_channels": None, "seg_channels": [128, 64, 32, 16, 8],
            "det_subnet_depth": 4}``.
        backend: what runs ``heads`` and ``tasks``: ``eager`` (with the per-module breakdown), ``torchscript`` or
            ``onnxruntime`` (the gated export, and for the floor, the single-task models and the per-module
            breakdown graphs of those heads).
    """
    args = {**default_network_args(), **(network_args or {})}
    if compare == "tasks":
        rows = benchmark_tasks(sizes, batch_size, iterations, backbone, device, args, backend, rounds)
    elif compare == "runtimes":
        rows = benchmark_runtimes(sizes, batch_size, iterations, rounds, backbone, threads, args)
    elif compare == "heads":
        rows = benchmark_heads(sizes, batch_size, iterations, rounds, backbone, threads, args, backend)
    elif compare == "train":
        rows = benchmark_train(sizes, batch_size, iterations, backbone, args)
    else:
        raise SystemExit(f"--compare must be 'tasks', 'runtimes', 'heads' or 'train', got {compare!r}")
    if output:
        Path(output).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    fire.Fire(benchmark)
