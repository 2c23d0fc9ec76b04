"""Folder-inference benchmark: throughput, where the time goes and whether resident memory stays flat.

A folder of ``num_files`` inputs is generated once (deterministically): 8- and 16-bit and RGB PNGs, JPEGs,
8- and 16-bit uncompressed DICOMs (with ``.dcm``, ``.IMA`` and no suffix, nested like PACS exports) of sizes
256 to 1024 px, copies of the real files in ``../shared/data`` when present, and a few broken files. A seeded
random-initialised ``model.pt`` (a plain state dict, as inference accepts) stands in for a trained model.

Each (output formats, ``num_workers``) pair then runs ``configs/inference.json`` through MONAI's
``ConfigWorkflow`` in a fresh child process, as ``python -m monai.bundle run inference`` would (its per-file log
goes to a file). The engine's events split the run's wall time into:

- ``wait``: the main loop waiting for the next batch (ignite's ``GET_BATCH_STARTED`` to ``GET_BATCH_COMPLETED``).
  With ``num_workers=0`` this is the reading itself (every file decoded, checked and resized in the main
  process); with workers it is the time reading failed to keep ahead of the model, so reading starves the
  model only when this share is large;
- ``network``: ``ITERATION_STARTED`` to ``MODEL_COMPLETED`` (forward pass, box decoding, heads to the CPU);
- ``writing``: ``MODEL_COMPLETED`` to the end of ``ITERATION_COMPLETED`` (decisions and every output file);
- ``other``: the rest (checkpoint loading, worker start-up, the summary).

``steady_share`` and ``steady_images_per_s`` leave out the first batch, whose one-time costs (lazy imports such
as ITK for the first NIfTI/NRRD geometry, warm-up) are reported as ``first_batch_s``.

Resident memory (psutil when installed, else ``/proc``) of the main process, and of the data-loader workers
together, is sampled every ``sample_every`` images; ``growth_mib_per_1000_images`` is the least-squares slope
of the main process over the second half of the run (flat memory: close to 0).

    python scripts/benchmark_inference.py --num_files 200 --workers "[0,1,2]" --formats "['default','png']"

``formats`` entries are ``default`` (the config's ``output_formats``) or ``+``-joined format names
(``png``: the prediction JSON and the mask PNG only).
"""

from __future__ import annotations

import io
import json
import multiprocessing as mp
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import fire
import numpy as np
import torch
from PIL import Image
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bundle.data.synthetic import generate_phantom  # noqa: E402
from bundle.networks import MultiCheXNet  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
CONFIG = ROOT / "configs" / "inference.json"
#: Bump when the generated folder changes, so that a kept folder is regenerated.
FOLDER_VERSION = 2
#: Image sizes (width, height) drawn for generated files.
SIZES: tuple[tuple[int, int], ...] = ((256, 256), (384, 320), (512, 512), (640, 512), (768, 768), (1024, 832),
                                      (1024, 1024))
#: Generated kinds, in turn.
KINDS: tuple[str, ...] = ("png8", "dicom8", "png16", "jpeg", "dicom16", "png_rgb", "dicom_no_suffix", "dicom_ima")
#: Broken files, in turn, one every ``broken_every`` files.
BROKEN: tuple[str, ...] = ("truncated_png", "text_named_dcm", "empty_png", "dicom_without_pixels", "not_an_image")
PHANTOM_POOL = 16
PHANTOM_SIZE = 256


# ------------------------------------------------------------------------------------------------ the folder


def _phantoms(seed: int, count: int) -> list[np.ndarray]:
    """The base images: ``count`` synthetic radiographs, (rows, columns) floats in [0, 1]."""
    return [generate_phantom(np.random.default_rng([seed, k]), PHANTOM_SIZE).image for k in range(count)]


def _pixels(base: np.ndarray, size: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """``base`` resized to ``size`` (width, height) with fresh noise: (rows, columns) floats in [0, 1]."""
    resized = np.asarray(Image.fromarray(base).resize(size, Image.BILINEAR), dtype=np.float32)
    return np.clip(resized + rng.normal(0.0, 0.01, resized.shape).astype(np.float32), 0.0, 1.0)


def write_dicom(path: Path, pixels: np.ndarray, bits: int, pixel_data: bool = True) -> None:
    """An uncompressed ``bits``-bit (8, or 16 allocated with 12 stored) MONOCHROME2 CR of ``pixels`` in [0, 1]."""
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=[path.name, "instance"])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), Dataset(), file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[path.parent.name, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[path.parent.name, "series"])
    ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = "Benchmark^Inference", path.stem, "", "O"
    ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "20240101", "", "1", "", ""
    ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "CR", 1, 1
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PixelSpacing = 1, "MONOCHROME2", [0.139, 0.139]
    stored = 8 if bits == 8 else 12
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = bits, stored, stored - 1, 0
    if pixel_data:
        values = np.round(pixels * (2**stored - 1))
        ds.PixelData = values.astype(np.uint8 if bits == 8 else np.uint16).tobytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    ds.save_as(str(path), enforce_file_format=True)


def _write_generated(folder: Path, index: int, kind: str, pixels: np.ndarray) -> Path:
    group = f"{index // 100:03d}"
    if kind.startswith("dicom"):
        path = {
            "dicom8": folder / "dicom" / f"{index:05d}.dcm",
            "dicom16": folder / "dicom" / f"study_{group}" / "series_1" / f"{index:05d}.dcm",
            "dicom_no_suffix": folder / "pacs" / f"study_{group}" / "series_2" / f"IM{index:05d}",
            "dicom_ima": folder / "pacs" / f"study_{group}" / "series_3" / f"{index:05d}.IMA",
        }[kind]
        write_dicom(path, pixels, 16 if kind in ("dicom16", "dicom_ima") else 8)
        return path
    suffix = ".jpg" if kind == "jpeg" else ".png"
    path = folder / kind / group / f"{index:05d}{suffix}"
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "png16":
        Image.fromarray(np.round(pixels * 65535).astype(np.uint16)).save(path)
    else:
        grey = Image.fromarray(np.round(pixels * 255).astype(np.uint8))
        (grey.convert("RGB") if kind == "png_rgb" else grey).save(path, **({"quality": 90} if kind == "jpeg" else {}))
    return path


def _write_broken(folder: Path, index: int, kind: str, base: np.ndarray) -> None:
    path = folder / "broken" / {"truncated_png": f"{index:05d}.png", "text_named_dcm": f"{index:05d}.dcm",
                                "empty_png": f"{index:05d}.png", "dicom_without_pixels": f"{index:05d}_nopixels.dcm",
                                "not_an_image": f"{index:05d}_notes.txt"}[kind]
    path.parent.mkdir(parents=True, exist_ok=True)
    if kind == "truncated_png":
        buffer = io.BytesIO()
        Image.fromarray(np.round(base * 255).astype(np.uint8)).save(buffer, format="PNG")
        path.write_bytes(buffer.getvalue()[: len(buffer.getvalue()) // 2])
    elif kind == "text_named_dcm":
        path.write_text("exported by a viewer that wrote a text file\n")
    elif kind == "empty_png":
        path.write_bytes(b"")
    elif kind == "dicom_without_pixels":
        write_dicom(path, base, 8, pixel_data=False)
    else:
        path.write_text("not an image\n")


def real_files(data: Path = DATA) -> list[Path]:
    """The real radiographs copied into the folder: full-resolution NIH PNGs, SIIM DICOMs, COVID JPEGs and some
    NIH thumbnails (an empty list when ``data`` is absent)."""
    groups = [
        sorted((data / "nih_fullres").glob("*.png")), sorted((data / "siim" / "dicom").glob("*.dcm")),
        sorted((data / "covid" / "images").glob("*.jpg")), sorted((data / "nih1000" / "images").glob("*.png"))[:20],
    ]
    return [path for group in groups for path in group]


def make_folder(folder: Path, num_files: int, seed: int = 0, real_every: int = 10, broken_every: int = 400,
                data: Path = DATA) -> dict[str, int]:
    """Write the benchmark folder (kept when its manifest, ``<folder>.json`` beside it, matches) and return the
    count of each kind.

    File ``i`` is broken when ``i % broken_every == broken_every // 2``, a copy of a real file when
    ``i % real_every == real_every // 2`` (and ``data`` holds any), else the next of :data:`KINDS`.
    """
    real = real_files(data)
    settings = {"version": FOLDER_VERSION, "num_files": num_files, "seed": seed, "real_every": real_every,
                "broken_every": broken_every, "real_files": len(real)}
    manifest = folder.with_name(f"{folder.name}.json")
    if manifest.is_file() and json.loads(manifest.read_text())["settings"] == settings:
        return json.loads(manifest.read_text())["counts"]
    shutil.rmtree(folder, ignore_errors=True)
    manifest.unlink(missing_ok=True)
    folder.mkdir(parents=True)
    bases = _phantoms(seed, min(PHANTOM_POOL, num_files))
    counts: dict[str, int] = {}
    generated = 0
    for index in range(num_files):
        rng = np.random.default_rng([seed, index])
        base = bases[index % len(bases)]
        if broken_every and index % broken_every == broken_every // 2:
            kind = BROKEN[(index // broken_every) % len(BROKEN)]
            _write_broken(folder, index, kind, base)
        elif real and real_every and index % real_every == real_every // 2:
            kind = "real"
            source = real[(index // real_every) % len(real)]
            target = folder / "real" / f"{index // 100:03d}" / f"{index:05d}_{source.name}"
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        else:
            kind = KINDS[generated % len(KINDS)]
            generated += 1
            _write_generated(folder, index, kind, _pixels(base, SIZES[int(rng.integers(len(SIZES)))], rng))
        counts[kind] = counts.get(kind, 0) + 1
    manifest.write_text(json.dumps({"settings": settings, "counts": counts}, indent=2))
    return counts


def write_checkpoint(folder: Path, seed: int = 0) -> Path:
    """A seeded random-initialised MultiCheXNet state dict as ``folder/model.pt``."""
    folder.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    path = folder / "model.pt"
    torch.save(MultiCheXNet(num_anchors=4).state_dict(), path)
    return path


# ------------------------------------------------------------------------------------------------ measuring


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _children(pid: int) -> list[int]:
    """Direct child processes of ``pid`` (the data-loader workers), from ``/proc``."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    stat = f.read()
            except OSError:
                continue
            if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                found.append(int(entry))
    return found


def resident_mib() -> tuple[float, float]:
    """Resident memory of this process and of its child processes together, in MiB (pages a forked worker
    shares with this process count in both)."""
    try:
        import psutil
    except ImportError:
        pid = os.getpid()
        workers = 0.0
        for child in _children(pid):
            try:
                workers += _rss_mib(child)
            except OSError:  # a worker that just exited
                continue
        return _rss_mib(pid), workers
    me = psutil.Process()
    workers = 0.0
    for child in me.children():
        try:
            workers += child.memory_info().rss / 2**20
        except psutil.Error:  # a worker that just exited
            continue
    return me.memory_info().rss / 2**20, workers


class Probe:
    """Times an inference engine's phases (see the module docstring) and samples resident memory."""

    def __init__(self, sample_every: int) -> None:
        self.sample_every = sample_every
        self.seconds = {"wait": 0.0, "network": 0.0, "writing": 0.0}
        self.images = self.batches = 0
        self.samples: list[tuple[int, float, float]] = []  # (images so far, main MiB, workers MiB)
        self.first_batch: dict[str, float] = {}  # the phases' seconds up to the end of the first batch
        self.started = self.first_batch_end = self.ended = 0.0
        self._mark = 0.0

    def attach(self, engine: Any) -> None:
        """Register on ``engine`` after its own handlers, so that the writer's time is inside ``writing``."""
        from ignite.engine import Events
        from monai.engines.utils import IterationEvents

        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.COMPLETED, self._ended)
        engine.add_event_handler(Events.GET_BATCH_STARTED, self._start)
        engine.add_event_handler(Events.GET_BATCH_COMPLETED, self._stop, "wait")
        engine.add_event_handler(Events.ITERATION_STARTED, self._start)
        engine.add_event_handler(IterationEvents.MODEL_COMPLETED, self._switch)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._completed)

    def _started(self, _engine: Any) -> None:
        self.started = time.perf_counter()

    def _ended(self, _engine: Any) -> None:
        self.ended = time.perf_counter()

    def _start(self, _engine: Any) -> None:
        self._mark = time.perf_counter()

    def _stop(self, _engine: Any, phase: str) -> None:
        self.seconds[phase] += time.perf_counter() - self._mark

    def _switch(self, engine: Any) -> None:
        self._stop(engine, "network")
        self._start(engine)

    def _completed(self, engine: Any) -> None:
        self._stop(engine, "writing")
        before = self.images
        self.images += len(engine.state.output["items"]) + len(engine.state.output["failed"])
        self.batches += 1
        if self.batches == 1:
            self.first_batch, self.first_batch_end = dict(self.seconds), time.perf_counter()
        if self.batches == 1 or self.images // self.sample_every > before // self.sample_every:
            self.samples.append((self.images, *resident_mib()))


def growth_per_1000(samples: list[tuple[int, float, float]]) -> float:
    """Least-squares slope of the main process's resident memory over the second half of ``samples``, in MiB
    per 1000 images (0 with fewer than 3 samples there)."""
    half = samples[len(samples) // 2 :]
    if len(half) < 3:
        return 0.0
    x = np.array([s[0] for s in half], dtype=float)
    y = np.array([s[1] for s in half], dtype=float)
    return float(np.polyfit(x, y, 1)[0] * 1000)


def measure(input_dir: str, ckpt_dir: str, output_dir: str, num_workers: int, formats: list[str] | None,
            sample_every: int, log_file: str, threads: int | None) -> dict[str, Any]:
    """One folder-inference run through ``ConfigWorkflow`` (its log in ``log_file``); its figures."""
    from monai.bundle import ConfigWorkflow

    if threads:
        torch.set_num_threads(threads)
    override: dict[str, Any] = {"bundle_root": str(ROOT), "input_dir": input_dir, "ckpt_dir": ckpt_dir,
                                "output_dir": output_dir, "dataloader#num_workers": num_workers}
    if formats is not None:
        override["output_formats"] = formats
    with open(log_file, "w") as log:
        sys.stdout = log  # the per-file log lines of configs/logging.conf are written, as in a real run
        workflow = ConfigWorkflow(config_file=str(CONFIG), workflow_type="infer", run_id="inference", **override)
        start = time.perf_counter()
        workflow.initialize()
        evaluator = workflow.parser.get_parsed_content("evaluator")  # finds the inputs, builds the network
        setup_s = time.perf_counter() - start
        probe = Probe(sample_every)
        probe.attach(evaluator)
        before = resident_mib()
        start = time.perf_counter()
        workflow.run()
        wall_s = time.perf_counter() - start
        sys.stdout = sys.__stdout__
    writer = workflow.parser.get_parsed_content("prediction_writer")
    samples = probe.samples
    shares = {phase: s / wall_s for phase, s in probe.seconds.items()}
    shares["other"] = max(0.0, 1.0 - sum(shares.values()))
    steady_s = probe.ended - probe.first_batch_end  # after the first batch (one-time costs: imports, warm-up)
    steady_images = probe.images - samples[0][0]
    steady: dict[str, float] = {}
    if steady_s:
        steady = {phase: (s - probe.first_batch[phase]) / steady_s for phase, s in probe.seconds.items()}
        steady["other"] = max(0.0, 1.0 - sum(steady.values()))
    return {
        "num_workers": num_workers,
        "formats": list(writer.formats),
        "threads": torch.get_num_threads(),
        "files": writer.total,
        "done": writer.done,
        "failed": len(writer.error_report.files),
        "setup_s": round(setup_s, 2),
        "wall_s": round(wall_s, 2),
        "images_per_s": round(writer.done / wall_s, 2),
        "share": {phase: round(v, 3) for phase, v in shares.items()},
        "first_batch_s": round(probe.first_batch_end - probe.started, 2),
        "steady_images_per_s": round(steady_images / steady_s, 2) if steady_s else None,
        "steady_share": {phase: round(v, 3) for phase, v in steady.items()},
        "seconds_per_image": {phase: round(s / max(1, probe.images), 4) for phase, s in probe.seconds.items()},
        "rss_mib": {
            "before_run": round(before[0], 1),
            "start": round(samples[0][1], 1),
            "middle": round(samples[len(samples) // 2][1], 1),
            "end": round(samples[-1][1], 1),
            "max_sampled": round(max(s[1] for s in samples), 1),
            "peak": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        },
        "workers_rss_mib_max": round(max(s[2] for s in samples), 1),
        "growth_mib_per_1000_images": round(growth_per_1000(samples), 1),
        "rss_samples": [[n, round(main, 1), round(workers, 1)] for n, main, workers in samples],
    }


def _child(queue: Any, start_method: str, *args: Any) -> None:
    mp.set_start_method(start_method, force=True)  # a spawned process would spawn its data-loader workers too
    queue.put({"worker_start_method": start_method, **measure(*args)})


def _run_isolated(*args: Any) -> dict[str, Any]:
    """:func:`measure` in a fresh process, so that each run's memory is its own; its data-loader workers start
    as in ``python -m monai.bundle run`` (this platform's default start method, ``fork`` on Linux)."""
    context = mp.get_context("spawn")
    queue = context.Queue()
    proc = context.Process(target=_child, args=(queue, mp.get_start_method(), *args))
    proc.start()
    result = queue.get()
    proc.join()
    return result


# ------------------------------------------------------------------------------------------------ report


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """The rows as a Markdown table: speed, steady-state shares of wall time (after the first batch) and
    resident memory."""
    lines = [
        ("| formats | num_workers | images/s | steady images/s | first batch (s) | wait (reading) | network | writing "
         "| other | RSS start / middle / end / max (MiB) | growth MiB/1000 images | workers RSS max (MiB) "
         "| done / failed |"),
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        s, m = r["steady_share"] or r["share"], r["rss_mib"]
        lines.append(
            f"| {'+'.join(['json', *r['formats']])} | {r['num_workers']} | {r['images_per_s']:.2f} "
            f"| {r['steady_images_per_s'] or 0:.2f} | {r['first_batch_s']:.1f} "
            f"| {s['wait']:.0%} | {s['network']:.0%} | {s['writing']:.0%} | {s['other']:.0%} "
            f"| {m['start']:.0f} / {m['middle']:.0f} / {m['end']:.0f} / {m['max_sampled']:.0f} "
            f"| {r['growth_mib_per_1000_images']:+.1f} | {r['workers_rss_mib_max']:.0f} | {r['done']} / {r['failed']} |"
        )
    return "\n".join(lines)


def _format_set(name: str) -> list[str] | None:
    return None if name == "default" else name.split("+")


def benchmark(
    num_files: int = 2000,
    workers: tuple[int, ...] = (0, 1, 2),
    formats: tuple[str, ...] = ("default", "png"),
    sample_every: int = 50,
    work_dir: str | None = None,
    seed: int = 0,
    broken_every: int = 400,
    threads: int | None = None,
    output: str | None = None,
) -> None:
    """Generate the folder and run every (formats, num_workers) pair; print one row each (JSON, then a table).

    Args:
        work_dir: keep the generated folder, checkpoint and logs here (reused by the next run); default a
            temporary folder. Outputs are deleted after each run.
        broken_every: one broken file (of :data:`BROKEN`, in turn) every this many files.
        threads: torch intra-op threads of the main process (default PyTorch's).
        output: also write the rows as JSON here.
    """
    work_dir_path = Path(work_dir) if work_dir else Path(tempfile.mkdtemp(prefix="benchmark_inference_"))
    try:
        start = time.perf_counter()
        counts = make_folder(work_dir_path / "inputs", num_files, seed, broken_every=broken_every)
        print(f"{num_files} files in {work_dir_path / 'inputs'} ({time.perf_counter() - start:.0f} s): "
              f"{json.dumps(counts)}", flush=True)
        ckpt_dir = write_checkpoint(work_dir_path / "models", seed).parent
        (work_dir_path / "logs").mkdir(exist_ok=True)
        rows = []
        for format_set in formats:
            for num_workers in workers:
                label = f"{format_set}_nw{num_workers}"
                out = work_dir_path / "outputs" / label
                shutil.rmtree(out, ignore_errors=True)
                row = _run_isolated(str(work_dir_path / "inputs"), str(ckpt_dir), str(out), num_workers,
                                    _format_set(format_set), sample_every, str(work_dir_path / "logs" / f"{label}.log"),
                                    threads)
                shutil.rmtree(out, ignore_errors=True)
                row = {"format_set": format_set, "num_files": num_files, "cpus": os.cpu_count(),
                       "load_average": [round(x, 2) for x in os.getloadavg()], **row}
                print(json.dumps({k: v for k, v in row.items() if k != "rss_samples"}), flush=True)
                rows.append(row)
    finally:
        if not work_dir:
            shutil.rmtree(work_dir_path, ignore_errors=True)
    print(markdown_table(rows))
    for format_set in formats:
        fastest = max((r for r in rows if r["format_set"] == format_set), key=lambda r: r["images_per_s"])
        print(f"fastest with formats {format_set}: num_workers={fastest['num_workers']} "
              f"({fastest['images_per_s']:.2f} images/s)")
    if output:
        Path(output).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    fire.Fire(benchmark)
