"""Phantom generator: fetal-head-like ultrasound images with exact masks, made by our own code.

It is the offline demo data on a fresh machine and the pre-training data of the tiny diffusion base.
It is synthetic and is never presented as real data.

How an image is made (one readable pass, seeded):
1. a scene of echogenicity in image space: soft tissue, a dark amniotic-fluid pocket around the head,
   the skull as a bright elliptical ring (brightest where the beam hits it head-on), brain parenchyma,
   a midline echo, choroid-plexus-like blobs, a cavum-like dark box;
2. the scene is resampled onto the probe's polar grid (beam angle x depth) where ultrasound physics is
   simple: attenuation accumulates along each beam so the skull casts an acoustic shadow, a
   time-gain compensation curve flattens depth, and speckle is multiplicative Rayleigh noise
   elongated laterally;
3. back to image space, cropped to the fan-shaped sector, log-compressed to uint8.
The head's size follows the trimester: gestational age -> HC by Hadlock -> pixels by a pixel size
drawn like HC18's (sonographers zoom less on bigger heads). With `framing="hc18"` the head's share of the
frame is drawn from HC18's own per trimester instead (HC18_HEAD_AREA): sonographers zoom in on the head, so
a real first-trimester head fills about 14 % of the frame, not the 9 % the demo framing draws.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from .masks import Ellipse, hc_from_ga_weeks, trimester_from_ga

# GA ranges (weeks) per trimester and a mix close to HC18's 15 / 70 / 15 %
GA_RANGES = {"first": (11.5, 13.9), "second": (14.0, 27.9), "third": (28.0, 40.0)}
MIX = ("first",) * 3 + ("second",) * 14 + ("third",) * 3
# the filled head's share of the frame in HC18, per trimester: (median, standard deviation of its log), from
# the 88 / 392 / 81 annotated images of the default split's train pool (2026-11-27, `python
# scripts/head_area.py`). The demo framing draws 0.089 / 0.125 / 0.193 (medians of 300 phantoms).
HC18_HEAD_AREA = {"first": (0.143, 0.50), "second": (0.327, 0.40), "third": (0.335, 0.31)}
FRAMINGS = ("demo", "hc18")


@dataclass(frozen=True)
class PhantomSpec:
    size: tuple[int, int] = (384, 256)  # (W, H), HC18's aspect ratio (800x540) at a demo size
    fan_half_angle_deg: float = 38.0
    speckle: float = 1.0  # 0 = no speckle
    # "demo": the head spans 35-70 % of the image height by gestational age; "hc18": its share of the frame is
    # drawn from HC18's per trimester (HC18_HEAD_AREA), so a trimester's heads are as large as in real scans
    framing: str = "demo"

    def __post_init__(self):
        if self.framing not in FRAMINGS:
            raise ValueError(f"phantom framing must be one of {', '.join(FRAMINGS)}, not {self.framing!r}")


@dataclass
class Phantom:
    image: np.ndarray  # uint8 (H, W)
    mask: np.ndarray  # bool (H, W), the filled skull ellipse (outer edge, as HC18 annotates)
    ellipse: Ellipse
    pixel_size_mm: float
    hc_mm: float
    ga_weeks: float


def phantom_plan(n: int, seed: int = 0) -> list[tuple[float, float]]:
    """(GA weeks, HC mm) for phantoms 0..n-1: a seeded trimester mix close to HC18's."""
    rng = np.random.default_rng(seed + 7919)
    out = []
    for i in range(n):
        tri = MIX[int(rng.integers(len(MIX)))] if i >= 3 else ("second", "first", "third")[i]
        ga = float(rng.uniform(*GA_RANGES[tri]))
        out.append((ga, hc_from_ga_weeks(ga)))
    return out


def make_phantom(seed: int, hc_mm: float | None = None, spec: PhantomSpec = PhantomSpec()) -> Phantom:
    rng = np.random.default_rng(seed)
    W, H = spec.size
    if hc_mm is None:
        ga = float(rng.uniform(11.5, 40.0))
        hc_mm = hc_from_ga_weeks(ga)
    from .masks import hadlock_ga_weeks
    ga = hadlock_ga_weeks(hc_mm)

    # --- head geometry: demo framing: the head spans 35-70 % of the image height, more for later trimesters
    if spec.framing == "hc18":  # its share of the frame as in HC18's scans of that trimester
        med, log_sd = HC18_HEAD_AREA[trimester_from_ga(ga)]
        ratio = float(rng.uniform(1.15, 1.4))
        area = float(np.clip(med * np.exp(rng.normal(0, log_sd)), 0.03, 0.6))
        # pi * a * b = area * W * H with a = ratio * b; the whole head stays within the frame's height
        b_px = min(math.sqrt(area * W * H / (math.pi * ratio)), 0.49 * H, 0.49 * W / ratio)
    else:
        frac = float(np.clip(0.36 + 0.22 * (ga - 12) / 28 + rng.normal(0, 0.04), 0.3, 0.72))
        b_px = frac * H / 2  # semi-minor axis in pixels
        ratio = float(rng.uniform(1.15, 1.4))  # HC18 heads: major/minor ~ 1.2-1.4
    a_px = b_px * ratio
    angle = float(rng.uniform(-35, 35))
    apex = (W / 2, -0.18 * H)
    # centre: the whole head inside the image and the fan-shaped sector (retry a few seeded draws)
    apex_r_min = -apex[1] + 0.02 * H
    half = math.radians(spec.fan_half_angle_deg)
    e0 = Ellipse(0, 0, 2 * a_px, 2 * b_px, angle)
    x0, y0, x1, y1 = e0.bbox()
    ellipse = Ellipse(W / 2, H / 2 + 0.05 * H, 2 * a_px, 2 * b_px, angle)
    for _ in range(40):
        lo_x, hi_x = -x0 + 4, W - x1 - 4
        lo_y, hi_y = -y0 + 0.1 * H, H - y1 - 4
        if hi_x <= lo_x or hi_y <= lo_y:
            break
        cand = Ellipse(float(rng.uniform(lo_x, hi_x)), float(rng.uniform(lo_y, hi_y)), 2 * a_px, 2 * b_px, angle)
        if _inside_sector(cand, apex, half, apex_r_min, pad=0.06 * a_px):
            ellipse = cand
            break
    cx, cy = ellipse.cx, ellipse.cy
    pixel_size = hc_mm / ellipse.perimeter_px()

    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    # elliptical coordinate rho: 1.0 on the ellipse
    t = math.radians(angle)
    dx, dy = xx - cx, yy - cy
    u = (dx * math.cos(t) + dy * math.sin(t)) / a_px
    v = (-dx * math.sin(t) + dy * math.cos(t)) / b_px
    rho = np.sqrt(u * u + v * v)

    # --- 1. echogenicity scene
    def smooth_noise(scale: float, amp: float) -> np.ndarray:
        small = rng.normal(0, 1, (max(2, int(H / scale)), max(2, int(W / scale)))).astype(np.float32)
        return amp * cv2.resize(small, (W, H), interpolation=cv2.INTER_CUBIC)

    tissue = 0.55 + smooth_noise(24, 0.12) + smooth_noise(8, 0.05)
    # layered maternal tissue near the probe
    tissue += 0.12 * np.cos(yy / H * 18 + smooth_noise(40, 2.0)) * (yy < 0.3 * H)
    fluid_r = float(rng.uniform(1.18, 1.45))
    fluid = np.clip((fluid_r + smooth_noise(30, 0.12) - rho) / 0.08, 0, 1)
    scene = tissue * (1 - 0.9 * fluid)
    ring_w = float(rng.uniform(0.045, 0.075))
    skull = np.exp(-((rho - (1 - ring_w)) / ring_w) ** 2)
    # specular skull: brightest where the beam meets the surface head-on
    bx, by = xx - apex[0], yy - apex[1]
    bnorm = np.sqrt(bx * bx + by * by) + 1e-6
    gx = u * math.cos(t) / a_px - v * math.sin(t) / b_px
    gy = u * math.sin(t) / a_px + v * math.cos(t) / b_px
    gnorm = np.sqrt(gx * gx + gy * gy) + 1e-6
    incidence = np.abs((bx * gx + by * gy) / (bnorm * gnorm))
    skull *= 0.35 + 0.65 * incidence ** 1.5
    skull *= 1 + smooth_noise(10, 0.25)
    inside = rho < 1 - ring_w
    brain = 0.28 + smooth_noise(12, 0.06)
    scene = np.where(inside, brain, scene)
    # midline echo along the major axis, broken in places
    midline = np.exp(-(v * b_px / 1.6) ** 2) * (np.abs(u) < 0.85) * (smooth_noise(6, 1.0) > -0.6)
    scene += 0.5 * midline * inside
    # choroid-plexus-like blobs and a cavum-like dark box
    for s in (-1, 1):
        bu, bv = float(rng.uniform(0.25, 0.45)) * s, float(rng.uniform(0.25, 0.45)) * float(rng.choice([-1, 1]))
        blob = np.exp(-(((u - bu) / 0.16) ** 2 + ((v - bv) / 0.1) ** 2))
        scene += 0.35 * blob * inside
    cav = (np.abs(u + float(rng.uniform(-0.35, -0.2))) < 0.08) & (np.abs(v) < 0.12)
    scene = np.where(cav & inside, 0.08, scene)
    scene = np.maximum(scene, 0) + 2.6 * skull

    # --- 2. polar grid: beams x depth
    n_beams, n_depth = 256, 320
    half = math.radians(spec.fan_half_angle_deg)
    r_min = -apex[1] + 0.02 * H
    r_max = math.hypot(W / 2, H - apex[1]) * 1.02
    th = np.linspace(-half, half, n_beams, dtype=np.float32)
    rr = np.linspace(r_min, r_max, n_depth, dtype=np.float32)
    R, TH = np.meshgrid(rr, th, indexing="xy")  # (n_beams, n_depth)
    map_x = (apex[0] + R * np.sin(TH)).astype(np.float32)
    map_y = (apex[1] + R * np.cos(TH)).astype(np.float32)
    polar = cv2.remap(scene.astype(np.float32), map_x, map_y, cv2.INTER_LINEAR,
                      borderMode=cv2.BORDER_CONSTANT, borderValue=0.3)
    dr = (r_max - r_min) / n_depth
    atten = np.cumsum(0.0018 * dr + 0.16 * np.clip(polar - 0.9, 0, None) * dr / 3, axis=1)
    tgc = np.exp(0.0014 * (R - r_min))  # time-gain compensation: flattens plain tissue loss
    polar = polar * np.exp(-atten) * tgc
    if spec.speckle > 0:
        sp = rng.rayleigh(1.0, polar.shape).astype(np.float32)
        sp = cv2.GaussianBlur(sp, (0, 0), sigmaX=1.0, sigmaY=2.2)  # x = depth, y = beam: lateral blur
        sp /= sp.mean()
        polar = polar * (1 - spec.speckle + spec.speckle * sp ** 1.6)

    # --- 3. back to image space, sector crop, log compression
    px_r = np.sqrt((xx - apex[0]) ** 2 + (yy - apex[1]) ** 2)
    px_t = np.arctan2(xx - apex[0], yy - apex[1])
    inv_x = ((px_r - r_min) / (r_max - r_min) * (n_depth - 1)).astype(np.float32)
    inv_y = ((px_t + half) / (2 * half) * (n_beams - 1)).astype(np.float32)
    img = cv2.remap(polar.astype(np.float32), inv_x, inv_y, cv2.INTER_LINEAR,
                    borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    sector = (np.abs(px_t) <= half) & (px_r >= r_min) & (px_r <= r_max)
    img = np.log1p(6 * np.clip(img, 0, None)) / math.log1p(6 * 3.2)
    img = np.clip(img * 235 + rng.normal(0, 2.0, img.shape), 0, 255)
    img = cv2.GaussianBlur(img.astype(np.float32), (0, 0), 0.6)
    img = np.where(sector, img, 0).astype(np.uint8)
    mask = ellipse.fill((H, W))
    return Phantom(img, mask, ellipse, pixel_size, hc_mm, ga)


def _inside_sector(e: Ellipse, apex, half: float, r_min: float, pad: float) -> bool:
    """True when every point of the ellipse (grown by pad px) lies inside the fan-shaped sector."""
    t = np.linspace(0, 2 * np.pi, 90)
    a, b = e.width / 2 + pad, e.height / 2 + pad
    ang = math.radians(e.angle)
    x = e.cx + a * np.cos(t) * math.cos(ang) - b * np.sin(t) * math.sin(ang)
    y = e.cy + a * np.cos(t) * math.sin(ang) + b * np.sin(t) * math.cos(ang)
    r = np.hypot(x - apex[0], y - apex[1])
    th = np.arctan2(x - apex[0], y - apex[1])
    return bool((np.abs(th) < half).all() and (r > r_min).all())
