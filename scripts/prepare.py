"""Write MONAI datalists from the public chest X-ray datasets' official files, and validate datalists.

One subcommand per source; each writes a datalist JSON (training/validation/testing, split by patient) with
paths relative to its folder and prints a summary. See docs/data.md for each source. Examples:

    python scripts/prepare.py nih --data_entry Data_Entry_2017.csv --images_dir images --output nih.json
    python scripts/prepare.py siim --rle_csv train-rle.csv --images_dir dicom-images-train --output siim.json
    python scripts/prepare.py siim ... --split_like nih.json --nih_map siim_to_nih.csv --output siim.json
    python scripts/prepare.py validate siim.json --with_datalists nih.json
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

import fire

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bundle.data import gaze_sources, lung_sources, sources  # noqa: E402
from bundle.data.check import split_report, split_rows, unlabelled_report  # noqa: E402
from bundle.data.datalist import PATH_KEYS, DatalistError, read_datalist  # noqa: E402
from bundle.data.labels import NIH_FINDINGS  # noqa: E402
from bundle.data.unlabelled import UNLABELLED  # noqa: E402
from bundle.data.splits import (  # noqa: E402
    SPLITS, fixed_splits, leak_message, patient_keys, split_by_patient, split_leaks, split_with_test_list,
)


def _as_list(value: Any) -> list[str]:
    """A fire argument given as "A,B" or a list, as a list of strings."""
    if isinstance(value, str):
        return [v.strip() for v in value.split(",") if v.strip()]
    return [str(v) for v in value]


def summarise(splits: dict[str, list[dict[str, Any]]], box_classes: list[str], skipped: list[str]) -> str:
    """Counts per split: images, patients, positives per finding, boxes per class, masks."""
    lines = []
    for name, entries in splits.items():
        positives = Counter(NIH_FINDINGS[i] for e in entries for i, v in enumerate(e.get("cls", [])) if v == 1)
        boxes = Counter(box_classes[c] for e in entries for c in e.get("box_labels", []))
        masks = sum("mask" in e or "mask_rle" in e for e in entries)
        gaze = sum("saliency" in e for e in entries)
        lines.append(
            f"{name}: {len(entries)} images, {len({e['patient_id'] for e in entries})} patients, "
            f"{sum('cls' in e for e in entries)} with findings, {sum('boxes' in e for e in entries)} box-annotated "
            f"({dict(boxes) or 0} boxes), {masks} masks" + (f", {gaze} gaze maps" if gaze else "")
        )
        if positives:
            lines.append("  positives: " + ", ".join(f"{k} {v}" for k, v in sorted(positives.items())))
    if skipped:
        lines.append(f"skipped {len(skipped)}, e.g. {skipped[:3]}")
    return "\n".join(lines)


def _dropped(result: gaze_sources.GazeResult) -> str:
    """One line: the fixations and readings a gaze reader dropped, by reason."""
    counts = ", ".join(f"{count} {reason}" for reason, count in sorted(result.dropped.items()) if count)
    return f"dropped: {counts or 'nothing'}"


def _reference_splits(split_like: Any, to_nih: dict[str, str]) -> dict[Any, str]:
    """Patient key to split in the datalists ``split_like``; exits when they leak among themselves."""
    paths = _as_list(split_like)
    rows = list(split_rows(paths, to_nih))
    leaks = split_leaks(rows)
    if leaks:
        raise SystemExit(f"{', '.join(paths)}: {leak_message(leaks)}")
    return {key: split for split, _, keys in rows for key in keys}


def held_out_free(
    unlabelled: list[dict[str, Any]], content: dict[str, Any], source: str, where: str
) -> list[dict[str, Any]]:
    """``unlabelled`` without the images of patients in ``content``'s validation or testing split (printed)."""
    held = {key for name in ("validation", "testing") for e in content.get(name, []) for key in patient_keys(e, source)}
    kept = [e for e in unlabelled if not patient_keys(e, source) & held]
    if len(kept) < len(unlabelled):
        print(f"{where}: left out {len(unlabelled) - len(kept)} unlabelled image(s) of validation/testing patients")
    return kept


def relative_unlabelled(entries: list[dict[str, Any]], folder: Path) -> list[dict[str, Any]]:
    """Unlabelled entries with image paths relative to ``folder``."""
    return [{**e, "image": os.path.relpath(e["image"], folder)} for e in entries]


def write_datalist(
    result: sources.SourceResult,
    output: str,
    source: str,
    fractions: Any = (0.8, 0.1, 0.1),
    seed: int = 0,
    merge_box_classes: str | None = None,
    test_list: str | None = None,
    split_like: Any = None,
    nih_map: str | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Split ``result`` by patient, write it to ``output`` with relative paths, print the summary.

    Patients that the datalists ``split_like`` already hold (matched as :func:`check_splits` matches them, with
    ``nih_map`` for ids that name NIH images) keep their split there. The written splits are checked to share
    no patient; a leak exits without writing.
    """
    entries = result.entries
    if not entries:
        raise SystemExit(f"{source}: no entries to write (check the paths and filters)")
    box_classes = sources.index_box_classes(entries, merge_box_classes)
    fractions = [float(f) for f in _as_list(fractions)]
    to_nih = sources.read_nih_map(nih_map) if nih_map else {}
    if test_list:
        if split_like:
            raise SystemExit("--test_list and --split_like both fix the test split: give one of them")
        names = Path(test_list).read_text().split()
        val_fraction = fractions[1] / (fractions[0] + fractions[1])
        splits = split_with_test_list(entries, names, val_fraction=val_fraction, seed=seed)
    else:
        fixed = fixed_splits(entries, _reference_splits(split_like, to_nih), source, to_nih) if split_like else None
        splits = split_by_patient(entries, fractions, seed, fixed)
    leaks = split_leaks((name, f"{name}[{i}]", patient_keys(e, source, to_nih))
                        for name, items in splits.items() for i, e in enumerate(items))
    if leaks:
        raise SystemExit(f"{source}: not written, {leak_message(leaks)}")
    out = Path(output).resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    for entry in entries:
        for key in PATH_KEYS:
            if key in entry:
                entry[key] = os.path.relpath(entry[key], out.parent)
    content = {"source": source, "seed": seed, "box_classes": box_classes, "skipped": result.skipped, **splits}
    if result.unlabelled:
        absolute = {k: [{**e, "image": str(out.parent / e["image"])} for e in v] for k, v in splits.items()}
        kept = held_out_free(result.unlabelled, absolute, source, source)
        content[UNLABELLED] = relative_unlabelled(kept, out.parent)
    out.write_text(json.dumps(content, indent=1))
    print(f"wrote {out}\n{summarise(splits, box_classes, result.skipped)}")
    if result.unlabelled:
        print(f"{UNLABELLED}: {len(content[UNLABELLED])} images")
    return splits


class Prepare:
    """Datalist preparation; every subcommand takes --output, --fractions train,val,test and --seed, and (except
    nih with --test_list) --split_like DATALISTS: patients those datalists hold keep their split, so that
    datasets mixed in training share no patient across splits."""

    def nih(
        self, data_entry: str, images_dir: str, output: str, bbox_list: str | None = None,
        rsna_labels: str | None = None, rsna_map: str | None = None, train_val_list: str | None = None,
        test_list: str | None = None, views: Any = "PA,AP", fractions: Any = "0.8,0.1,0.1", seed: int = 0,
        merge_box_classes: str | None = None, on_missing: str = "error", split_like: Any = None,
        unlabelled: bool = False,
    ) -> None:
        """NIH ChestX-ray14 (+ NIH boxes, + RSNA boxes through a patientId-to-Image-Index map).

        With ``test_list`` (official test_list.txt) those images are the test split and the rest is split by
        patient into training/validation; ``train_val_list`` then restricts the rest to the images it names.
        ``unlabelled``: images under ``images_dir`` without a kept label row go to the ``unlabelled`` list.
        """
        result = sources.nih(data_entry, images_dir, bbox_list, rsna_labels, rsna_map, _as_list(views),
                             on_missing=on_missing, unlabelled=unlabelled)
        if train_val_list:
            allowed = set(Path(train_val_list).read_text().split())
            if test_list:
                allowed |= set(Path(test_list).read_text().split())
            result.entries = [e for e in result.entries if Path(e["image"]).name in allowed]
        write_datalist(result, output, "nih", fractions, seed, merge_box_classes, test_list, split_like)

    def rsna(
        self, labels_csv: str, images_dir: str, output: str, image_map: str | None = None, box_space: float = 1024.0,
        fractions: Any = "0.8,0.1,0.1", seed: int = 0, on_missing: str = "error", nih_map: str | None = None,
        split_like: Any = None,
    ) -> None:
        """RSNA Pneumonia Detection: stage_2_train_labels.csv with DICOMs named by patientId.

        ``nih_map`` (patientId to NIH Image Index, e.g. patient_to_nih.csv) splits by NIH patient: RSNA gives each
        image its own patientId, but several are images of one NIH patient. An ``image_map`` naming NIH images
        does the same.
        """
        result = sources.rsna(labels_csv, images_dir, image_map, box_space, on_missing, nih_map)
        write_datalist(result, output, "rsna", fractions, seed, split_like=split_like, nih_map=nih_map)

    def siim(
        self, rle_csv: str, images_dir: str, output: str, fractions: Any = "0.8,0.1,0.1", seed: int = 0,
        on_missing: str = "error", nih_map: str | None = None, split_like: Any = None,
    ) -> None:
        """SIIM-ACR Pneumothorax: train-rle.csv with the DICOMs (any folder depth); masks stay RLE.

        ``nih_map`` (ImageId to NIH Image Index) splits the images it maps by NIH patient.
        """
        result = sources.siim(rle_csv, images_dir, on_missing, nih_map)
        write_datalist(result, output, "siim", fractions, seed, split_like=split_like, nih_map=nih_map)

    def covid(
        self, metadata_csv: str, output: str, images_dir: str | None = None, masks_dir: str | None = None,
        views: Any = "PA,AP", fractions: Any = "0.8,0.1,0.1", seed: int = 0, on_missing: str = "error",
        split_like: Any = None, unlabelled: bool = False,
    ) -> None:
        """COVID-19 image data collection (metadata.csv), X-rays of the given views, optional lung masks.

        Training entries without a mask are unlabelled for segmentation; ``unlabelled`` also lists the images
        under ``images_dir`` that no kept metadata row describes in the ``unlabelled`` list."""
        result = sources.covid(metadata_csv, images_dir, masks_dir, _as_list(views), on_missing, unlabelled)
        write_datalist(result, output, "covid", fractions, seed, split_like=split_like)

    def jsrt(
        self, images_dir: str, masks_dir: str, output: str, converted_dir: str | None = None,
        fractions: Any = "0.8,0.1,0.1", seed: int = 0, split_like: Any = None,
    ) -> None:
        """JSRT (All247images/*.IMG) with the SCR lung masks (any folder holding 'left lung' / 'right lung' GIFs);
        PNGs written to ``converted_dir`` (default: ``<output stem>_files`` next to ``output``)."""
        converted = converted_dir or Path(output).with_suffix("").as_posix() + "_files"
        result = lung_sources.jsrt(images_dir, masks_dir, converted)
        write_datalist(result, output, "jsrt", fractions, seed, split_like=split_like)

    def montgomery(
        self, root: str, output: str, converted_dir: str | None = None, fractions: Any = "0.8,0.1,0.1",
        seed: int = 0, split_like: Any = None,
    ) -> None:
        """Montgomery County (MontgomerySet: CXR_png, ManualMask/leftMask, ManualMask/rightMask); the lungs'
        union written to ``converted_dir`` (default: ``<output stem>_files`` next to ``output``)."""
        converted = converted_dir or Path(output).with_suffix("").as_posix() + "_files"
        result = lung_sources.montgomery(root, converted)
        write_datalist(result, output, "montgomery", fractions, seed, split_like=split_like)

    def shenzhen(
        self, images_dir: str, masks_dir: str, output: str, fractions: Any = "0.8,0.1,0.1", seed: int = 0,
        split_like: Any = None,
    ) -> None:
        """Shenzhen (CXR_png) with its lung masks named ``<image stem>_mask.png``; images without one are kept
        unlabelled (the lung recipe trains on the masked ones)."""
        result = lung_sources.shenzhen(images_dir, masks_dir)
        write_datalist(result, output, "shenzhen", fractions, seed, split_like=split_like)

    def egd(
        self, master_sheet: str, fixations_csv: str, images_dir: str, output: str, converted_dir: str | None = None,
        sigma_degrees: float = gaze_sources.SIGMA_DEGREES,
        screen_pixels_per_degree: float = gaze_sources.EGD_SCREEN_PIXELS_PER_DEGREE,
        map_size: int | None = gaze_sources.MAP_SIZE, map_format: str = "png", fractions: Any = "0.8,0.1,0.1",
        seed: int = 0, on_missing: str = "error", split_like: Any = None,
    ) -> None:
        """EGD-CXR (PhysioNet egd-cxr): master_sheet.csv and fixations.csv (or eye_gaze.csv) with the MIMIC-CXR
        DICOMs found by dicom_id under ``images_dir``; gaze maps and fixations written to ``converted_dir``
        (default: ``<output stem>_files`` next to ``output``). EGD gives no angular resolution:
        ``screen_pixels_per_degree`` is an assumption (docs/data.md)."""
        converted = converted_dir or Path(output).with_suffix("").as_posix() + "_files"
        result = gaze_sources.egd(master_sheet, fixations_csv, images_dir, converted, sigma_degrees,
                                  screen_pixels_per_degree, map_size, map_format, on_missing)
        write_datalist(result, output, "egd", fractions, seed, split_like=split_like)
        print(_dropped(result))

    def reflacx(
        self, main_data: str, images_dir: str, output: str, converted_dir: str | None = None,
        sigma_degrees: float = gaze_sources.SIGMA_DEGREES, map_size: int | None = gaze_sources.MAP_SIZE,
        map_format: str = "png", fractions: Any = "0.8,0.1,0.1", seed: int = 0, on_missing: str = "error",
        split_like: Any = None,
    ) -> None:
        """REFLACX (PhysioNet reflacx-xray-localization): its ``main_data`` folder (metadata_phase_<n>.csv and one
        folder of fixations.csv per reading) with the MIMIC-CXR DICOMs found by dicom_id under ``images_dir``; one
        gaze map per image (its readings pooled) written to ``converted_dir`` (default: ``<output stem>_files``)."""
        converted = converted_dir or Path(output).with_suffix("").as_posix() + "_files"
        result = gaze_sources.reflacx(main_data, images_dir, converted, sigma_degrees, map_size, map_format,
                                      on_missing)
        write_datalist(result, output, "reflacx", fractions, seed, split_like=split_like)
        print(_dropped(result))

    def folder(
        self, images_dir: str, output: str, masks_dir: str | None = None, patient_pattern: str | None = None,
        fractions: Any = "0.8,0.1,0.1", seed: int = 0, split_like: Any = None,
    ) -> None:
        """Any folder of images, masks matched by file stem, patient id from a regex on the stem."""
        result = sources.folder(images_dir, masks_dir, patient_pattern)
        write_datalist(result, output, "folder", fractions, seed, split_like=split_like)

    def unlabelled(
        self, source: str, output: str, column: str = "image", patient_pattern: str | None = None, check: bool = True,
    ) -> None:
        """Unlabelled images from a folder (recursive) or a CSV's ``column`` (paths relative to the CSV), written
        as the ``unlabelled`` list of ``output``: added to that datalist when it exists (replacing its list;
        images of its validation/testing patients are left out), else a new datalist holding only that list.

        ``check`` decodes every image with the readers of labelled data (DICOM, PNG, JPEG, ...); unreadable ones
        are printed, one line each with the file and the problem, and left out.
        """
        try:
            entries = sources.unlabelled(source, column, patient_pattern).unlabelled
        except sources.SourceError as err:
            raise SystemExit(str(err)) from None
        if check:
            entries, report = unlabelled_report(entries)
            if report:
                print(f"left out {len(report)} unreadable image(s):\n" + "\n".join(report))
            if not entries:
                raise SystemExit(f"{source}: no readable image")
        out = Path(output).resolve()
        content: dict[str, Any] = {"source": "unlabelled"}
        if out.is_file():
            try:
                content = read_datalist(out)
            except DatalistError as err:
                raise SystemExit(str(err)) from None
            absolute = {k: [{**e, "image": str(out.parent / e["image"])} for e in content.get(k, [])] for k in SPLITS}
            entries = held_out_free(entries, absolute, str(content.get("source", "")), str(out))
        content[UNLABELLED] = relative_unlabelled(entries, out.parent)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(content, indent=1))
        print(f"wrote {out}: {len(entries)} unlabelled images")

    def validate(
        self, datalist: str, num_classes: int = len(NIH_FINDINGS), with_datalists: Any = (), mappings: Any = (),
    ) -> None:
        """Check a datalist; print every problem, one line each; exit 1 if there is any.

        Every entry of every split is decoded and its labels checked (``split[index] file: problem``); duplicate
        entries and an empty training list are problems; no patient may be in two splits, of this datalist and
        of ``with_datalists`` (others trained with it) together, matched through ``mappings`` (CSVs of RSNA
        patientId / SIIM ImageId to NIH Image Index) too.
        """
        start, total, report = time.perf_counter(), 0, []
        try:
            content = read_datalist(datalist)
            for key in (k for k in SPLITS if k in content):
                _, problems, count = split_report(datalist, key, num_classes, allow_empty=key != "training")
                total += count
                report.extend(problems)
            if "training" not in content:
                report.append(f"{datalist}: no 'training' list")
            to_nih = {k: v for m in _as_list(mappings) for k, v in sources.read_nih_map(m).items()}
            leaks = split_leaks(split_rows([datalist, *_as_list(with_datalists)], to_nih))
            if leaks:
                report.append(f"splits: {leak_message(leaks)}")
        except (DatalistError, sources.SourceError) as err:
            report.append(str(err))
        print(f"checked {total} entries in {time.perf_counter() - start:.1f} s: {len(report)} problem(s)")
        if report:
            print("\n".join(report))
            raise SystemExit(1)


if __name__ == "__main__":
    fire.Fire(Prepare)
