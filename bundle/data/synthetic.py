"""Deterministic synthetic chest X-ray phantoms: the bundle's embedded demo data set.

Each phantom is a crude PA chest film (body, lungs, mediastinum, heart, diaphragm, ribs, clavicles,
lung markings) with independently drawn findings and their targets:

* Pneumonia: 1-2 patchy opacities, each with a tight xyxy box (class 0, "opacity");
  large ones also set Consolidation, small ones Infiltration.
* Pneumothorax: a dark crescent without lung markings behind a pleural line; its air region is the mask.
* Cardiomegaly: cardio-thoracic width ratio > 0.55 (normal 0.40-0.48).
* Effusion: homogeneous fluid in a lung base with a concave-up meniscus.
* Nodule (1-3 small round spots) and Mass (one larger round lesion).

All shapes are drawn analytically in "canonical" coordinates (fractions of the image width) that are
mapped to pixels through a small random rotation, scale and shift, so targets follow the anatomy.
Images are NOT real chest X-rays; they only exercise the pipeline and show that learning happens.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import multiprocessing
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from scipy import ndimage

from .labels import NIH_FINDINGS

logger = logging.getLogger(__name__)

#: Findings the phantom draws directly (Consolidation / Infiltration are derived from Pneumonia opacities).
DEMO_CLASSES: tuple[str, ...] = ("Cardiomegaly", "Effusion", "Mass", "Nodule", "Pneumonia", "Pneumothorax")
DET_CLASSES: tuple[str, ...] = ("opacity",)
GENERATOR_VERSION = 1
#: Worker processes that render the demo set (patients are independent; more than 4 hardly pays for 1,280 images).
_MAX_WORKERS = 4
DATALIST_NAME = "datalist.json"

_NORMAL_RATE = 0.3  # fraction of images drawn without any finding
_FINDING_RATE = 0.2  # per-finding probability in an abnormal image (at least one is forced)
_FOLLOW_UP_RATE = 0.2  # fraction of patients with a second image
_CONSOLIDATION_SIDE = 0.25  # box side (fraction of width) above which an opacity is a consolidation
_INFILTRATION_SIDE = 0.2  # box side at or below which an opacity is an infiltrate
_MIN_MASK_PIXELS = 12  # a pneumothorax smaller than this is not labelled


@dataclass(frozen=True)
class Lung:
    """One lung field: an egg-shaped ellipse (wider at the base) cut by its diaphragm dome."""

    side: int  # -1: image left (patient's right lung), +1: image right
    cx: float
    cy: float
    rx: float
    ry: float
    tilt: float  # radians
    egg: float  # relative widening towards the base
    dome_y: float  # top of the diaphragm dome
    dome_h: float  # dome curvature


@dataclass(frozen=True)
class Anatomy:
    """Patient anatomy in canonical coordinates (fractions of the image width)."""

    mid: float
    body_hw: float
    lungs: tuple[Lung, Lung]
    heart_cy: float
    heart_hh: float
    heart_tilt: float
    rib_y0: float
    rib_step: float
    rib_arch: float
    clavicle_y: float
    clavicle_rise: float


@dataclass(frozen=True)
class Opacity:
    """Patchy pneumonic opacity: thresholded sum of Gaussians."""

    centres: tuple[tuple[float, float], ...]
    sigmas: tuple[float, ...]
    strength: float


@dataclass(frozen=True)
class Spot:
    """Well-defined round dense lesion (nodule or mass)."""

    x: float
    y: float
    radius: float
    strength: float


@dataclass(frozen=True)
class Pneumothorax:
    """Crescent of free air along one lung's edge, centred on polar angle ``angle`` of that lung."""

    lung: int  # index into Anatomy.lungs
    angle: float
    depth: float  # maximal collapse, in normalised lung radius
    spread: float  # angular half-width (radians)
    darkness: float
    line: float  # brightness of the visceral pleural line


@dataclass(frozen=True)
class Effusion:
    """Fluid in one lung base; ``level`` is the medial fluid height above the dome, ``climb`` its lateral rise."""

    lung: int  # index into Anatomy.lungs
    level: float
    climb: float


@dataclass(frozen=True)
class Findings:
    """Lesions of one image; ``ctr`` is the cardio-thoracic width ratio."""

    ctr: float
    opacities: tuple[Opacity, ...] = ()
    pneumothorax: Pneumothorax | None = None
    effusion: Effusion | None = None
    nodules: tuple[Spot, ...] = ()
    mass: Spot | None = None


@dataclass(frozen=True)
class Acquisition:
    """Positioning and exposure of one film; ``seed`` drives its textures and noise."""

    angle: float
    scale: float
    shift_x: float
    shift_y: float
    blur: float
    low: float
    high: float
    gamma: float
    quantum_noise: float
    read_noise: float
    seed: int


@dataclass(frozen=True)
class PhantomParams:
    """Everything needed to render one phantom deterministically."""

    anatomy: Anatomy
    findings: Findings
    acquisition: Acquisition


@dataclass
class PhantomSample:
    """A rendered phantom and its targets (boxes are xyxy pixels, x = column, exclusive x2/y2)."""

    image: np.ndarray  # (H, W) float32 in [0, 1], multiples of 1/255
    cls: np.ndarray  # (14,) int64 0/1 in NIH_FINDINGS order
    boxes: np.ndarray  # (N, 4) float32
    box_labels: np.ndarray  # (N,) int64, all 0 ("opacity")
    mask: np.ndarray  # (H, W) uint8 0/1, pneumothorax air


# ----------------------------------------------------------------------------------------------- sampling


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """Draw a random normal thorax."""
    mid = 0.5 + rng.normal(0.0, 0.012)
    cy, ry, dome_y = rng.uniform(0.40, 0.45), rng.uniform(0.25, 0.30), rng.uniform(0.62, 0.68)
    lungs = tuple(
        Lung(
            side=side,
            cx=mid + side * rng.uniform(0.17, 0.20),
            cy=cy + rng.normal(0.0, 0.01),
            rx=rng.uniform(0.14, 0.17),
            ry=ry * rng.uniform(0.96, 1.04),
            tilt=-side * rng.uniform(0.0, 0.12),
            egg=rng.uniform(0.15, 0.3),
            dome_y=dome_y + (0.02 if side > 0 else 0.0) + rng.normal(0.0, 0.01),
            dome_h=rng.uniform(0.05, 0.09),
        )
        for side in (-1, 1)
    )
    return Anatomy(
        mid=mid,
        body_hw=rng.uniform(0.41, 0.47),
        lungs=lungs,
        heart_cy=dome_y - rng.uniform(0.08, 0.11),
        heart_hh=rng.uniform(0.12, 0.15),
        heart_tilt=rng.uniform(0.1, 0.35),
        rib_y0=rng.uniform(0.10, 0.14),
        rib_step=rng.uniform(0.062, 0.072),
        rib_arch=rng.uniform(0.05, 0.09),
        clavicle_y=rng.uniform(0.14, 0.18),
        clavicle_rise=rng.uniform(0.05, 0.12),
    )


def jitter_anatomy(anatomy: Anatomy, rng: np.random.Generator, scale: float = 0.02) -> Anatomy:
    """Follow-up anatomy: every float parameter slightly perturbed (relative noise ``scale``)."""
    return _jitter(anatomy, rng, scale)


def _jitter(obj, rng: np.random.Generator, scale: float):
    """Recursively perturb the float fields of a dataclass (tuples of dataclasses included)."""
    if isinstance(obj, tuple):
        return tuple(_jitter(item, rng, scale) for item in obj)
    if isinstance(obj, float):
        return obj * (1.0 + rng.normal(0.0, scale))
    if dataclasses.is_dataclass(obj):
        return dataclasses.replace(obj, **{f.name: _jitter(getattr(obj, f.name), rng, scale) for f in dataclasses.fields(obj)})
    return obj


def lung_point(lung: Lung, u: float, v: float) -> tuple[float, float]:
    """Canonical (x, y) of normalised lung coordinates (u lateral-signed, v downwards, both in [-1, 1])."""
    du = u * lung.rx * (1.0 + lung.egg * v)
    dv = v * lung.ry
    c, s = np.cos(lung.tilt), np.sin(lung.tilt)
    return float(lung.cx + du * c - dv * s), float(lung.cy + du * s + dv * c)


def _sample_opacity(rng: np.random.Generator, anatomy: Anatomy) -> Opacity:
    """A 2-4 lobe patch in the lateral half of a lung; small and large sizes are favoured."""
    lung = anatomy.lungs[rng.integers(2)]
    size = rng.uniform(0.12, 0.18) if rng.random() < 0.5 else rng.uniform(0.26, 0.33)
    x, y = lung_point(lung, lung.side * rng.uniform(0.2, 0.55), rng.uniform(-0.5, 0.35))
    lobes = int(rng.integers(2, 5))
    offsets = rng.normal(0.0, 0.22 * size, size=(lobes, 2)) * np.array([0.6, 1.0])
    return Opacity(
        centres=tuple((x + float(dx), y + float(dy)) for dx, dy in offsets),
        sigmas=tuple(float(s) for s in size * rng.uniform(0.2, 0.3, size=lobes)),
        strength=rng.uniform(0.09, 0.22),
    )


def _sample_spot(
    rng: np.random.Generator, anatomy: Anatomy, diameter: tuple[float, float], reach: float, strength: tuple[float, float]
) -> Spot:
    """A round lesion within normalised radius ``reach`` of a lung centre, away from the mediastinum."""
    lung = anatomy.lungs[rng.integers(2)]
    while True:
        u, v = rng.uniform(-reach, reach, size=2)
        if u * u + v * v <= reach * reach and u > -0.3:
            break
    x, y = lung_point(lung, lung.side * u, v)
    return Spot(x=x, y=y, radius=rng.uniform(*diameter) / 2.0, strength=rng.uniform(*strength))


def _crescent_fraction(depth: float, spread: float) -> float:
    """Fraction of a unit disc lost to a crescent of Gaussian angular profile (for sizing pneumothoraces)."""
    theta = np.linspace(-np.pi, np.pi, 721)
    d = depth * np.exp(-0.5 * (theta / spread) ** 2)
    return float(np.mean(2.0 * d - d * d))


def _sample_pneumothorax(rng: np.random.Generator) -> Pneumothorax:
    """Apical to lateral pneumothorax covering ~8-25% of a lung."""
    lung = int(rng.integers(2))
    while True:
        depth, spread = rng.uniform(0.25, 0.6), rng.uniform(0.45, 1.0)
        if 0.1 <= _crescent_fraction(depth, spread) <= 0.24:
            break
    up = -np.pi / 2.0
    lateral = np.pi if lung == 0 else 0.0
    angle = up + rng.uniform(0.0, 1.0) * np.angle(np.exp(1j * (lateral - up)))
    return Pneumothorax(
        lung=lung, angle=float(angle), depth=depth, spread=spread,
        darkness=rng.uniform(0.06, 0.12), line=rng.uniform(0.07, 0.14),
    )


def _draw_presence(rng: np.random.Generator) -> dict[str, bool]:
    """Which demo findings an image has: none with probability 30%, otherwise at least one."""
    present = np.zeros(len(DEMO_CLASSES), dtype=bool)
    if rng.random() >= _NORMAL_RATE:
        while not present.any():
            present = rng.random(len(DEMO_CLASSES)) < _FINDING_RATE
    return dict(zip(DEMO_CLASSES, present.tolist()))


def sample_findings(rng: np.random.Generator, anatomy: Anatomy) -> Findings:
    """Draw which findings are present and their parameters."""
    has = _draw_presence(rng)
    return Findings(
        ctr=rng.uniform(0.56, 0.66) if has["Cardiomegaly"] else rng.uniform(0.39, 0.48),
        opacities=tuple(_sample_opacity(rng, anatomy) for _ in range(rng.integers(1, 3))) if has["Pneumonia"] else (),
        pneumothorax=_sample_pneumothorax(rng) if has["Pneumothorax"] else None,
        effusion=Effusion(int(rng.integers(2)), rng.uniform(0.04, 0.11), rng.uniform(0.04, 0.1))
        if has["Effusion"]
        else None,
        nodules=tuple(_sample_spot(rng, anatomy, (0.04, 0.06), 0.8, (0.2, 0.34)) for _ in range(rng.integers(1, 4)))
        if has["Nodule"]
        else (),
        mass=_sample_spot(rng, anatomy, (0.08, 0.15), 0.55, (0.13, 0.26)) if has["Mass"] else None,
    )


def sample_acquisition(rng: np.random.Generator) -> Acquisition:
    """Draw positioning, exposure and noise settings."""
    return Acquisition(
        angle=rng.normal(0.0, 0.04),
        scale=rng.uniform(0.93, 1.05),
        shift_x=rng.normal(0.0, 0.015),
        shift_y=rng.normal(0.0, 0.015),
        blur=rng.uniform(0.4, 1.0),
        low=rng.uniform(-0.04, 0.04),
        high=rng.uniform(0.58, 0.75),
        gamma=rng.uniform(0.75, 1.3),
        quantum_noise=rng.uniform(0.005, 0.02),
        read_noise=rng.uniform(0.003, 0.012),
        seed=int(rng.integers(2**31)),
    )


def sample_params(rng: np.random.Generator, anatomy: Anatomy | None = None) -> PhantomParams:
    """Draw findings and acquisition (and the anatomy unless given)."""
    anatomy = sample_anatomy(rng) if anatomy is None else anatomy
    return PhantomParams(anatomy, sample_findings(rng, anatomy), sample_acquisition(rng))


# ---------------------------------------------------------------------------------------------- rendering


def _smoothstep(edge0: float | np.ndarray, edge1: float | np.ndarray, x: np.ndarray) -> np.ndarray:
    """Hermite step from 0 at ``edge0`` to 1 at ``edge1`` (edges may be in either order)."""
    t = np.clip((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _wrap(angle: np.ndarray) -> np.ndarray:
    """Angle wrapped to [-pi, pi)."""
    return (angle + np.pi) % (2.0 * np.pi) - np.pi


def _canonical_grid(size: int, acq: Acquisition) -> tuple[np.ndarray, np.ndarray]:
    """Canonical (X, Y) of every pixel centre, undoing the film's rotation, scale and shift."""
    t = (np.arange(size) + 0.5) / size - 0.5
    px, py = t[None, :] - acq.shift_x, t[:, None] - acq.shift_y
    c, s = np.cos(acq.angle), np.sin(acq.angle)
    return 0.5 + (c * px + s * py) / acq.scale, 0.5 + (c * py - s * px) / acq.scale


def _lung_polar(lung: Lung, X: np.ndarray, Y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Normalised radius (1 on the lung outline) and polar angle (0 = image right, -pi/2 = apex)."""
    dx, dy = X - lung.cx, Y - lung.cy
    c, s = np.cos(lung.tilt), np.sin(lung.tilt)
    v = (dy * c - dx * s) / lung.ry
    u = (dx * c + dy * s) / (lung.rx * np.maximum(1.0 + lung.egg * v, 0.2))
    return np.hypot(u, v), np.arctan2(v, u)


def _dome(lung: Lung, X: np.ndarray) -> np.ndarray:
    """Height (canonical y) of the diaphragm dome under ``lung``."""
    return lung.dome_y + lung.dome_h * ((X - lung.cx) / lung.rx) ** 2


def _thoracic_width(anatomy: Anatomy) -> float:
    """Widest lateral span of the two lung outlines above their domes."""
    theta = np.linspace(-np.pi, np.pi, 361)
    extremes = []
    for lung in anatomy.lungs:
        xs, ys = np.array([lung_point(lung, np.cos(t), np.sin(t)) for t in theta]).T
        xs = xs[ys <= _dome(lung, xs)]
        extremes.append(xs.min() if lung.side < 0 else xs.max())
    return float(extremes[1] - extremes[0])


def _body(anatomy: Anatomy, X: np.ndarray, Y: np.ndarray, px: float) -> np.ndarray:
    """Soft-tissue silhouette: a squarish superellipse open at the bottom of the film."""
    r = (np.abs((X - anatomy.mid) / anatomy.body_hw) ** 4 + np.abs((Y - 0.6) / 0.64) ** 4) ** 0.25
    return _smoothstep(1.0 + 2.0 * px, 1.0 - 2.0 * px, r)


def _mediastinum(anatomy: Anatomy, X: np.ndarray, Y: np.ndarray, px: float) -> np.ndarray:
    """Central soft-tissue column, widening towards the heart."""
    half = 0.04 + 0.035 * _smoothstep(0.15, 0.5, Y)
    return _smoothstep(half + px, half - px, np.abs(X - anatomy.mid))


def _heart(anatomy: Anatomy, ctr: float, X: np.ndarray, Y: np.ndarray, px: float) -> np.ndarray:
    """Tilted ellipse, 35% left / 65% right of the midline, whose horizontal extent is ``ctr`` x thorax."""
    width = ctr * _thoracic_width(anatomy)
    b = anatomy.heart_hh * (1.0 + 0.5 * (ctr - 0.45))
    c, s = np.cos(anatomy.heart_tilt), np.sin(anatomy.heart_tilt)
    a = np.sqrt(max((width / 2.0) ** 2 - (b * s) ** 2, 1e-6)) / c
    dx, dy = X - (anatomy.mid + 0.15 * width), Y - anatomy.heart_cy
    r = np.hypot((dx * c + dy * s) / a, (dy * c - dx * s) / b)
    return _smoothstep(1.0 + px / b, 1.0 - px / b, r)


def _band(Y: np.ndarray, centre: np.ndarray, half: float, px: float) -> np.ndarray:
    """Bone-like band around the curve ``centre`` with a brighter cortex at its edges."""
    d = np.abs(Y - centre)
    inside = _smoothstep(half + px, half - px, d)
    return inside * (0.7 + 0.3 * (d / half) ** 2)


def _bones(anatomy: Anatomy, X: np.ndarray, Y: np.ndarray, px: float) -> np.ndarray:
    """Posterior ribs (arched bands), clavicles and spine."""
    t = np.abs(X - anatomy.mid) / anatomy.body_hw
    lateral = _smoothstep(0.05, 0.12, t) * _smoothstep(1.0, 0.9, t)
    rib_y = anatomy.rib_y0 + anatomy.rib_step * np.arange(10)[:, None, None]
    ribs = _band(Y, rib_y - anatomy.rib_arch * 4.0 * t * (1.0 - t) + 0.1 * t**2, 0.3 * anatomy.rib_step, px)
    ribs = 0.07 * ribs.max(axis=0) * lateral
    tc = np.clip((t - 0.08) / 0.62, 0.0, 1.0)
    clavicle_y = anatomy.clavicle_y - anatomy.clavicle_rise * tc + 0.02 * np.sin(np.pi * tc)
    clavicles = 0.12 * _band(Y, clavicle_y, 0.014, px) * _smoothstep(0.06, 0.1, t) * _smoothstep(0.72, 0.66, t)
    spine = 0.03 * _smoothstep(0.035, 0.03, np.abs(X - anatomy.mid)) * (0.6 + 0.4 * np.cos(2 * np.pi * Y / 0.07) ** 2)
    return np.maximum(np.maximum(ribs, clavicles), spine)


def _smooth_noise(rng: np.random.Generator, size: int, sigma_px: float) -> np.ndarray:
    """Unit-variance Gaussian noise low-passed with ``sigma_px`` (scaled to a 128 px film)."""
    field = ndimage.gaussian_filter(rng.standard_normal((size, size)), sigma_px * size / 128.0, mode="wrap")
    return field / field.std()


def _markings(anatomy: Anatomy, noise: np.ndarray, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Vessel-like network (zero crossings of smooth noise), denser near the hila."""
    hila = sum(
        np.exp(-((X - (lung.cx - lung.side * 0.6 * lung.rx)) ** 2 + (Y - lung.cy - 0.05) ** 2) / (2 * 0.12**2))
        for lung in anatomy.lungs
    )
    return 0.07 * np.exp(-((noise / 0.35) ** 2)) * (0.35 + hila)


def _opacity(opacity: Opacity, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Soft 0..1 footprint of a patchy opacity."""
    field = sum(
        np.exp(-((X - cx) ** 2 + (Y - cy) ** 2) / (2.0 * s**2)) for (cx, cy), s in zip(opacity.centres, opacity.sigmas)
    )
    return _smoothstep(0.3, 0.7, field)


def _spot(spot: Spot, X: np.ndarray, Y: np.ndarray, px: float) -> np.ndarray:
    """Dense round lesion with a sharp edge and slightly brighter core."""
    d = np.hypot(X - spot.x, Y - spot.y)
    return spot.strength * _smoothstep(spot.radius + px, spot.radius - px, d) * (1.0 - 0.3 * (d / spot.radius) ** 2)


def _pneumothorax(
    ptx: Pneumothorax, lung: Lung, X: np.ndarray, Y: np.ndarray, px: float
) -> tuple[np.ndarray, np.ndarray]:
    """Soft air crescent (between lung outline and collapsed lung) and the visceral pleural line."""
    r, theta = _lung_polar(lung, X, Y)
    depth = ptx.depth * np.exp(-0.5 * (_wrap(theta - ptx.angle) / ptx.spread) ** 2)
    edge = 1.0 - depth
    e = px / lung.rx
    air = _smoothstep(edge - e, edge + e, r) * _smoothstep(0.02, 0.04, depth)
    line = np.exp(-(((r - edge) / (0.9 * e)) ** 2)) * _smoothstep(0.03, 0.08, depth) * (r < 1.0)
    return air, ptx.line * line


def _effusion(effusion: Effusion, lung: Lung, X: np.ndarray, Y: np.ndarray) -> np.ndarray:
    """Soft fluid region in a lung base under a meniscus that climbs laterally."""
    lateral = np.clip((X - lung.cx) * lung.side / lung.rx * 0.5 + 0.5, 0.0, 1.0)
    meniscus = lung.dome_y + 0.5 * lung.dome_h - effusion.level - effusion.climb * lateral**2
    r, _ = _lung_polar(lung, X, Y)
    return _smoothstep(meniscus - 0.015, meniscus + 0.01, Y) * _smoothstep(1.08, 0.98, r)


def _box(mask: np.ndarray) -> np.ndarray | None:
    """Tight xyxy box (x = column, exclusive x2/y2) of a boolean mask, or None if empty."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if rows.size == 0:
        return None
    return np.array([cols[0], rows[0], cols[-1] + 1, rows[-1] + 1], dtype=np.float32)


def _expose(image: np.ndarray, acq: Acquisition, rng: np.random.Generator) -> np.ndarray:
    """Detector response: blur, window, gamma, quantum + read noise, 8-bit quantisation."""
    size = image.shape[0]
    image = ndimage.gaussian_filter(image, acq.blur * size / 128.0)
    image = np.clip((image - acq.low) / (acq.high - acq.low), 0.0, 1.0) ** acq.gamma
    noise = acq.quantum_noise * np.sqrt(image) * rng.standard_normal(image.shape)
    image = np.clip(image + noise + acq.read_noise * rng.standard_normal(image.shape), 0.0, 1.0)
    return (np.round(image * 255.0) / 255.0).astype(np.float32)


def _labels(findings: Findings, boxes: np.ndarray, mask: np.ndarray, size: int) -> np.ndarray:
    """NIH label vector implied by what was actually drawn."""
    sides = (boxes[:, 2:] - boxes[:, :2]).max(axis=1) / size if len(boxes) else np.zeros(0)
    present = {
        "Cardiomegaly": findings.ctr > 0.5,
        "Effusion": findings.effusion is not None,
        "Mass": findings.mass is not None,
        "Nodule": bool(findings.nodules),
        "Pneumonia": len(boxes) > 0,
        "Pneumothorax": bool(mask.any()),
        "Consolidation": bool((sides > _CONSOLIDATION_SIDE).any()),
        "Infiltration": bool((sides <= _INFILTRATION_SIDE).any()),
    }
    return np.array([int(present.get(name, False)) for name in NIH_FINDINGS], dtype=np.int64)


def render_phantom(params: PhantomParams, size: int = 128) -> PhantomSample:
    """Render a phantom and derive its targets from the drawn content."""
    anatomy, findings, acq = params.anatomy, params.findings, params.acquisition
    rng = np.random.default_rng(acq.seed)
    marking_noise, texture = _smooth_noise(rng, size, 1.6), _smooth_noise(rng, size, 2.5)
    X, Y = _canonical_grid(size, acq)
    px = 1.0 / (size * acq.scale)

    body, medi = _body(anatomy, X, Y, px), _mediastinum(anatomy, X, Y, px)
    heart = _heart(anatomy, findings.ctr, X, Y, px)
    diaphragm = np.where(X < anatomy.mid, _dome(anatomy.lungs[0], X), _dome(anatomy.lungs[1], X))
    abdomen = _smoothstep(diaphragm - px, diaphragm + px, Y) * body
    fields = []
    for lung in anatomy.lungs:
        r, _ = _lung_polar(lung, X, Y)
        fields.append(_smoothstep(1.0 + px / lung.rx, 1.0 - px / lung.rx, r) * _smoothstep(px, -px, Y - _dome(lung, X)))
    fields = [field * (1.0 - heart) * (1.0 - medi) for field in fields]
    air = fields[0] + fields[1]

    ptx_air, pleura, darkness = np.zeros_like(X), np.zeros_like(X), 0.0
    if findings.pneumothorax is not None:
        darkness = findings.pneumothorax.darkness
        side = findings.pneumothorax.lung
        ptx_air, pleura = _pneumothorax(findings.pneumothorax, anatomy.lungs[side], X, Y, px)
        ptx_air, pleura = ptx_air * fields[side], pleura * fields[side]
    fluid = np.zeros_like(X)
    if findings.effusion is not None:
        fluid = _effusion(findings.effusion, anatomy.lungs[findings.effusion.lung], X, Y) * body

    image = 0.02 + 0.36 * body + np.maximum.reduce([0.14 * medi, 0.11 * heart, 0.1 * abdomen])
    image -= 0.08 * _smoothstep(0.016, 0.012, np.abs(X - anatomy.mid)) * _smoothstep(0.32, 0.22, Y) * body  # trachea
    image += _bones(anatomy, X, Y, px) * body * _smoothstep(0.05, -0.02, Y - diaphragm) * (1.0 - 0.5 * heart)
    image -= 0.3 * air * (1.0 - fluid) + darkness * ptx_air
    image += _markings(anatomy, marking_noise, X, Y) * air * (1.0 - ptx_air) * (1.0 - fluid) + pleura

    boxes = []
    for opacity in findings.opacities:
        footprint = _opacity(opacity, X, Y) * air
        image += opacity.strength * footprint * (0.55 + 0.45 * _smoothstep(-1.5, 1.5, texture))
        box = _box(footprint > 0.5)
        if box is not None:
            boxes.append(box)
    for spot in (*findings.nodules, *((findings.mass,) if findings.mass else ())):
        image += _spot(spot, X, Y, px)

    mask = (ptx_air > 0.5).astype(np.uint8)
    if mask.sum() < _MIN_MASK_PIXELS:
        mask[:] = 0
    boxes_arr = np.array(boxes, dtype=np.float32).reshape(-1, 4)
    return PhantomSample(
        image=_expose(image, acq, rng),
        cls=_labels(findings, boxes_arr, mask, size),
        boxes=boxes_arr,
        box_labels=np.zeros(len(boxes_arr), dtype=np.int64),
        mask=mask,
    )


def generate_phantom(rng: np.random.Generator, size: int = 128) -> PhantomSample:
    """Draw and render one random phantom."""
    return render_phantom(sample_params(rng), size)


# ------------------------------------------------------------------------------------------------ dataset


def _plan_patients(num_images: int, rng: np.random.Generator) -> list[int]:
    """Images per patient (1 or 2, about 1 patient in 5 has a follow-up), summing to ``num_images``."""
    visits: list[int] = []
    while sum(visits) < num_images:
        two = rng.random() < _FOLLOW_UP_RATE and sum(visits) + 2 <= num_images
        visits.append(2 if two else 1)
    return visits


def _split_patients(visits: list[int], targets: tuple[int, ...], rng: np.random.Generator) -> list[int]:
    """Split index of every patient: shuffled patients fill the splits in order up to their image counts."""
    counts = [0] * len(targets)
    split = [0] * len(visits)
    for patient in rng.permutation(len(visits)):
        split[patient] = next((i for i, t in enumerate(targets) if counts[i] < t), len(targets) - 1)
        counts[split[patient]] += visits[patient]
    return split


def _render_patient(patient: int, visits: int, seed: int, size: int) -> list[PhantomSample]:
    """All images of one patient; follow-ups reuse a slightly perturbed anatomy."""
    anatomy = sample_anatomy(np.random.default_rng([seed, 1, patient]))
    samples = []
    for visit in range(visits):
        rng = np.random.default_rng([seed, 2, patient, visit])
        samples.append(render_phantom(sample_params(rng, jitter_anatomy(anatomy, rng) if visit else anatomy), size))
    return samples


def _write_png(array: np.ndarray, path: Path) -> None:
    """Save an 8-bit grey PNG."""
    Image.fromarray(array.astype(np.uint8)).save(path)


def _entry(sample: PhantomSample, index: int, patient: int) -> dict:
    """Datalist entry (paths relative to the data set root)."""
    return {
        "image": f"images/demo_{index:05d}.png",
        "patient_id": f"P{patient:05d}",
        "cls": sample.cls.tolist(),
        "boxes": sample.boxes.tolist(),
        "box_labels": sample.box_labels.tolist(),
        "mask": f"masks/demo_{index:05d}.png",
    }


def _write_patient(job: tuple[Path, int, int, int, int, int]) -> list[dict]:
    """Render one patient's images, write them and their masks, and return their datalist entries."""
    folder, patient, visits, first_index, seed, size = job
    entries = []
    for index, sample in enumerate(_render_patient(patient, visits, seed, size), start=first_index):
        entry = _entry(sample, index, patient)
        _write_png(np.round(sample.image * 255.0), folder / entry["image"])
        _write_png(sample.mask * 255, folder / entry["mask"])
        entries.append(entry)
    return entries


def _map_patients(jobs: list[tuple[Path, int, int, int, int, int]]) -> list[list[dict]]:
    """:func:`_write_patient` of every job, in order; on forked worker processes (one per core, at most
    ``_MAX_WORKERS``) where the platform forks. Every patient has its own seed, so the files do not depend on it."""
    workers = min(os.cpu_count() or 1, _MAX_WORKERS)
    if workers < 2 or "fork" not in multiprocessing.get_all_start_methods():
        return [_write_patient(job) for job in jobs]
    with multiprocessing.get_context("fork").Pool(workers) as pool:
        return pool.map(_write_patient, jobs, chunksize=16)


def _generate(folder: Path, generator: dict) -> dict:
    """Write images, masks and return the datalist content for ``generator`` parameters."""
    seed, size = generator["seed"], generator["size"]
    targets = (generator["num_train"], generator["num_val"], generator["num_test"])
    rng = np.random.default_rng([seed, 0])
    visits = _plan_patients(sum(targets), rng)
    splits = _split_patients(visits, targets, rng)
    (folder / "images").mkdir()
    (folder / "masks").mkdir()
    first = np.cumsum([1, *visits[:-1]])
    jobs = [(folder, patient, count, int(start), seed, size)
            for patient, (count, start) in enumerate(zip(visits, first), start=1)]
    lists: list[list[dict]] = [[] for _ in targets]
    for entries, split in zip(_map_patients(jobs), splits):
        lists[split].extend(entries)
    return {
        "synthetic": True,
        "classes": list(NIH_FINDINGS),
        "det_classes": list(DET_CLASSES),
        "generator": generator,
        "training": lists[0],
        "validation": lists[1],
        "testing": lists[2],
    }


def _existing_generator(datalist: Path) -> dict | None:
    """The ``generator`` block of an existing datalist, or None if absent or unreadable."""
    try:
        return json.loads(datalist.read_text()).get("generator")
    except (OSError, ValueError, AttributeError):
        return None


def _publish(staging: Path, root: Path, content: dict) -> None:
    """Move staged images/masks into ``root`` and write the datalist last (atomically)."""
    root.mkdir(parents=True, exist_ok=True)
    (root / DATALIST_NAME).unlink(missing_ok=True)  # a stale datalist must never vouch for new files
    for name in ("images", "masks"):
        if (root / name).exists():
            shutil.rmtree(root / name)
        os.replace(staging / name, root / name)
    partial = staging / DATALIST_NAME
    partial.write_text(json.dumps(content, indent=1) + "\n")
    os.replace(partial, root / DATALIST_NAME)


def make_demo_dataset(
    root: str | Path,
    num_train: int = 960,
    num_val: int = 160,
    num_test: int = 160,
    size: int = 128,
    seed: int = 0,
) -> Path:
    """Create (or reuse) the synthetic demo data set under ``root`` and return its ``datalist.json`` path.

    Splits are by patient, so split sizes are image counts within about +-2. An existing data set is
    reused only if its datalist records the same generator parameters; otherwise ``root/images``,
    ``root/masks`` and ``root/datalist.json`` are replaced, the datalist being written last.
    """
    root = Path(root)
    datalist = root / DATALIST_NAME
    generator = {
        "seed": seed, "size": size, "num_train": num_train, "num_val": num_val, "num_test": num_test,
        "version": GENERATOR_VERSION,
    }
    if _existing_generator(datalist) == generator:
        return datalist
    root.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{root.name}.", dir=root.parent))
    try:
        content = _generate(staging, generator)
        _publish(staging, root, content)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    count = sum(len(content[key]) for key in ("training", "validation", "testing"))
    logger.warning("SYNTHETIC demo data (not real chest X-rays): %d images generated in %s", count, root)
    return datalist


def demo_inputs(root: str | Path, count: int = 8, **demo_args: int) -> Path:
    """A folder ``root/inference_inputs`` holding the first ``count`` test images of the demo data set (made with
    :func:`make_demo_dataset` and ``demo_args`` if needed): the default input folder of ``configs/inference.json``."""
    datalist = make_demo_dataset(root, **demo_args)
    folder = Path(root) / "inference_inputs"
    folder.mkdir(exist_ok=True)
    testing = json.loads(datalist.read_text())["testing"][:count]
    wanted = {Path(entry["image"]).name for entry in testing}
    for stale in set(os.listdir(folder)) - wanted:
        os.remove(folder / stale)
    for entry in testing:  # copied every time: a regenerated data set reuses file names
        shutil.copyfile(Path(root) / entry["image"], folder / Path(entry["image"]).name)
    return folder


if __name__ == "__main__":
    import fire

    fire.Fire(make_demo_dataset)
