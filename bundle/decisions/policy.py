"""DecisionPolicy: every setting that turns head outputs into findings, stored as one versioned JSON file.

Per finding: an operating point and a calibration (thresholds apply to the calibrated probability). Per gate
(``det_gate``, ``seg_gate``): an operating point on the gate's raw probability, the value ``forward_gated``
compares to. A head whose task is ``anatomy`` (every image is expected positive, e.g. lung fields) is never
gated; a ``lesion`` head runs only where its gate opens. Boxes: the score operating point and
:class:`BoxPostprocessing`; masks: the probability operating point and :class:`MaskPostprocessing`.
"""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from .calibration import Calibration
from .operating_points import OperatingPoint, default_point
from .postprocess import BoxPostprocessing, MaskPostprocessing

POLICY_FORMAT = "multichexnet.decision_policy"
POLICY_VERSION = 1
GATES: tuple[str, ...] = ("det_gate", "seg_gate")
#: The gated head of each gate, and the tasks a head can have.
GATED_HEAD: dict[str, str] = {"det_gate": "det", "seg_gate": "seg"}
TASKS: tuple[str, ...] = ("lesion", "anatomy")
#: Rule names of the legacy ``thresholds.json`` criteria.
LEGACY_RULES: dict[str, str] = {
    "f1": "max_f1",
    "youden": "youden",
    "mean per-image Dice": "max_mean_dice",
    "RSNA challenge score": "max_rsna_score",
}


def _atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file in the same folder and ``os.replace``, with the
    permissions of a plain file under the umask (as :func:`bundle.fileio.atomic_write`, which this package,
    imported alone by the MONAI Deploy app, cannot import)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


@dataclass(frozen=True)
class DecisionPolicy:
    """The decision settings of one model.

    Attributes:
        class_names: findings of the classifier, in output order; det_class_names: box classes.
        image_size: the model's input (W, H).
        findings: operating point per finding; calibration: per finding (identity when absent).
        gates: operating point per gate (``det_gate``, ``seg_gate``).
        tasks: ``{"det": ..., "seg": ...}``, each ``lesion`` (gated) or ``anatomy`` (never gated).
        box_score, boxes: box score operating point and box post-processing.
        mask_threshold, mask: mask probability operating point and mask post-processing.
        model_sha256: the checkpoint it was chosen for, when known.
        source: where it was read from (not stored).
    """

    class_names: tuple[str, ...]
    image_size: tuple[int, int]
    findings: Mapping[str, OperatingPoint]
    gates: Mapping[str, OperatingPoint]
    det_class_names: tuple[str, ...] = ("opacity",)
    calibration: Mapping[str, Calibration] = field(default_factory=dict)
    tasks: Mapping[str, str] = field(default_factory=lambda: {"det": "lesion", "seg": "lesion"})
    box_score: OperatingPoint = field(default_factory=default_point)
    boxes: BoxPostprocessing = field(default_factory=BoxPostprocessing)
    mask_threshold: OperatingPoint = field(default_factory=default_point)
    mask: MaskPostprocessing = field(default_factory=MaskPostprocessing)
    model_sha256: str | None = None
    source: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "class_names", tuple(self.class_names))
        object.__setattr__(self, "det_class_names", tuple(self.det_class_names))
        object.__setattr__(self, "image_size", tuple(int(s) for s in self.image_size))
        where = self.source or "decision policy"
        if len(set(self.class_names)) != len(self.class_names):
            raise ValueError(f"{where}: class_names repeat a name")
        if set(self.findings) != set(self.class_names):
            raise ValueError(
                f"{where}: operating points for {sorted(self.findings)} but class_names are {list(self.class_names)}"
            )
        extra = set(self.calibration) - set(self.class_names)
        if extra:
            raise ValueError(f"{where}: calibration for unknown findings {sorted(extra)}")
        object.__setattr__(self, "calibration", {n: self.calibration.get(n, Calibration()) for n in self.class_names})
        object.__setattr__(self, "findings", {n: self.findings[n] for n in self.class_names})
        if set(self.gates) != set(GATES):
            raise ValueError(f"{where}: gates must be exactly {list(GATES)}, got {sorted(self.gates)}")
        if set(self.tasks) != {"det", "seg"} or not set(self.tasks.values()) <= set(TASKS):
            raise ValueError(f"{where}: tasks must map 'det' and 'seg' to one of {TASKS}, got {dict(self.tasks)}")
        if len(self.image_size) != 2 or min(self.image_size) < 1:
            raise ValueError(f"{where}: image_size must be (W, H), got {self.image_size}")

    @classmethod
    def default(
        cls,
        class_names: Sequence[str],
        image_size: Sequence[int],
        det_class_names: Sequence[str] = ("opacity",),
        tasks: Mapping[str, str] | None = None,
        threshold: float = 0.5,
        **settings: Any,
    ) -> DecisionPolicy:
        """A policy with ``threshold`` everywhere (marked as defaults) and the given other ``settings``."""
        point = default_point(threshold)
        return cls(
            class_names=tuple(class_names), image_size=tuple(image_size), det_class_names=tuple(det_class_names),
            findings={n: point for n in class_names}, gates={g: point for g in GATES},
            tasks=dict(tasks or {"det": "lesion", "seg": "lesion"}), box_score=point, mask_threshold=point,
            **settings,
        )

    def gated(self, gate: str) -> bool:
        """Whether ``gate`` (``det_gate`` / ``seg_gate``) decides if its head's output is used."""
        return self.tasks[GATED_HEAD[gate]] == "lesion"

    def forward_gate_thresholds(self) -> dict[str, float]:
        """The thresholds to pass to ``MultiCheXNet.forward_gated`` (0 for a never-gated head)."""
        return {g: self.gates[g].threshold if self.gated(g) else 0.0 for g in GATES}

    def override(
        self,
        findings: Mapping[str, float] | None = None,
        gates: Mapping[str, float] | None = None,
        box_score: float | None = None,
        mask_threshold: float | None = None,
        reason: str = "set explicitly by the user",
    ) -> DecisionPolicy:
        """A copy with the given thresholds replaced, recorded as rule ``override``."""

        def point(threshold: float) -> OperatingPoint:
            return OperatingPoint(threshold=float(threshold), rule="override", reason=reason)

        for kind, given, known in (("finding", findings, self.class_names), ("gate", gates, GATES)):
            unknown = set(given or {}) - set(known)
            if unknown:
                raise ValueError(f"override: unknown {kind}s {sorted(unknown)}; expected some of {list(known)}")
        return replace(
            self,
            findings={**self.findings, **{n: point(t) for n, t in (findings or {}).items()}},
            gates={**self.gates, **{n: point(t) for n, t in (gates or {}).items()}},
            box_score=self.box_score if box_score is None else point(box_score),
            mask_threshold=self.mask_threshold if mask_threshold is None else point(mask_threshold),
        )

    # -- JSON -------------------------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": POLICY_FORMAT,
            "version": POLICY_VERSION,
            "class_names": list(self.class_names),
            "det_class_names": list(self.det_class_names),
            "image_size": list(self.image_size),
            "tasks": dict(self.tasks),
            "findings": {n: p.to_dict() for n, p in self.findings.items()},
            "calibration": {n: c.to_dict() for n, c in self.calibration.items()},
            "gates": {n: p.to_dict() for n, p in self.gates.items()},
            "box_score": self.box_score.to_dict(),
            "boxes": self.boxes.to_dict(),
            "mask_threshold": self.mask_threshold.to_dict(),
            "mask": self.mask.to_dict(),
            "model_sha256": self.model_sha256,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], source: str | None = None) -> DecisionPolicy:
        """Read :meth:`to_dict` output; a wrong format, version or field is an error naming ``source``."""
        where = source or "decision policy"
        if data.get("format") != POLICY_FORMAT:
            found = data.get("format")
            raise ValueError(f"{where}: not a decision policy (format {found!r}, expected {POLICY_FORMAT!r})")
        if data.get("version") != POLICY_VERSION:
            raise ValueError(
                f"{where}: decision policy version {data.get('version')!r}; this code reads version {POLICY_VERSION}"
            )
        required = ("class_names", "image_size", "findings", "gates")
        missing = [k for k in required if k not in data]
        if missing:
            raise ValueError(f"{where}: missing {missing}")
        known = {*required, "format", "version", "det_class_names", "tasks", "calibration", "box_score", "boxes",
                 "mask_threshold", "mask", "model_sha256"}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"{where}: unknown fields {sorted(unknown)}")

        def points(key: str) -> dict[str, OperatingPoint]:
            return {n: OperatingPoint.from_dict(p, f"{where}: {key}.{n}") for n, p in data[key].items()}

        optional: dict[str, Any] = {}
        if "det_class_names" in data:
            optional["det_class_names"] = tuple(data["det_class_names"])
        if "tasks" in data:
            optional["tasks"] = dict(data["tasks"])
        if "calibration" in data:
            optional["calibration"] = {
                n: Calibration.from_dict(c, f"{where}: calibration.{n}") for n, c in data["calibration"].items()
            }
        for key in ("box_score", "mask_threshold"):
            if key in data:
                optional[key] = OperatingPoint.from_dict(data[key], f"{where}: {key}")
        if "boxes" in data:
            optional["boxes"] = BoxPostprocessing.from_dict(data["boxes"], f"{where}: boxes")
        if "mask" in data:
            optional["mask"] = MaskPostprocessing.from_dict(data["mask"], f"{where}: mask")
        return cls(
            class_names=tuple(data["class_names"]), image_size=tuple(data["image_size"]),
            findings=points("findings"), gates=points("gates"), model_sha256=data.get("model_sha256"),
            source=source, **optional,
        )

    def save(self, path: str | Path) -> Path:
        """Write the policy as JSON, atomically (readers never see half a file)."""
        path = Path(path)
        _atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return path

    @classmethod
    def load(cls, path: str | Path) -> DecisionPolicy:
        """Read a policy written by :meth:`save`."""
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no decision policy there; choose one on validation first") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"{path}: not valid JSON ({err}); rewrite it with DecisionPolicy.save") from None
        return cls.from_dict(data, source=str(path))

    @classmethod
    def from_thresholds_json(
        cls,
        path: str | Path,
        image_size: Sequence[int],
        det_class_names: Sequence[str] = ("opacity",),
        tasks: Mapping[str, str] | None = None,
    ) -> DecisionPolicy:
        """A policy from a legacy ``thresholds.json`` (written by ``MetricsReport`` with ``choose_thresholds``).

        Its segmentation ``min_area`` (pixels at the model's input size ``image_size``) becomes
        ``min_area_fraction``, so the same components are removed at any size. The file holds no validation
        counts, so nothing says whether a rule had enough positives: each point's ``reason`` says so.
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            cls_part, seg = data["classification"], data["segmentation"]
            names, thresholds = list(cls_part["names"]), [float(t) for t in cls_part["thresholds"]]
        except FileNotFoundError:
            raise FileNotFoundError(f"{path}: no thresholds.json there") from None
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ValueError(f"{path}: not a thresholds.json ({type(err).__name__}: {err})") from None
        if len(names) != len(thresholds):
            raise ValueError(f"{path}: {len(names)} class names but {len(thresholds)} thresholds")
        chosen = data.get("chosen_on") or {}
        dataset = f"{chosen.get('datalist')}#{chosen.get('split')}" if chosen else None
        note = f"read from {path.name}, which records no validation counts"

        def point(threshold: float, criterion: str | None) -> OperatingPoint:
            rule = LEGACY_RULES.get(criterion or "", criterion or "unknown")
            return OperatingPoint(threshold=float(threshold), rule=rule, dataset=dataset, reason=note)

        gates = data.get("gates", {})
        detection = data.get("detection", {})
        width, height = (int(s) for s in image_size)
        min_area = int(seg.get("min_area", 0))
        return cls(
            class_names=tuple(names), image_size=(width, height), det_class_names=tuple(det_class_names),
            findings={n: point(t, cls_part.get("criterion")) for n, t in zip(names, thresholds)},
            gates={g: point(gates[g], gates.get("criterion")) if g in gates else default_point() for g in GATES},
            tasks=dict(tasks or {"det": "lesion", "seg": "lesion"}),
            box_score=point(detection["box_score"], detection.get("criterion")) if "box_score" in detection
            else default_point(),
            mask_threshold=point(seg["threshold"], seg.get("criterion")),
            mask=MaskPostprocessing(min_area_fraction=min_area / (width * height)),
            model_sha256=data.get("checkpoint_sha256"),
            source=str(path),
        )
