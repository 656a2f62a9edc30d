"""In-channel mask injection, the Ellipse Extractor, and head measurements from an ellipse.

Paper vocabulary:
- in-channel mask injection: a 3-channel image with R = G = grayscale ultrasound, B = filled head mask,
  so a diffusion model learns image and mask jointly and every generated sample carries its own label.
- Ellipse Extractor: B channel -> threshold (127) -> contours -> largest -> cv2.fitEllipse -> filled mask.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import cv2
import numpy as np

TRIMESTERS = ("first", "second", "third")


# ----------------------------------------------------------------------------- in-channel injection
def inject_mask(image: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Compose the in-channel image: R = G = grayscale image, B = filled mask (0/255). Any size."""
    image = np.asarray(image)
    mask = np.asarray(mask)
    if image.ndim != 2:
        raise ValueError(f"inject_mask expects a grayscale (H, W) image, got shape {image.shape}")
    if mask.shape != image.shape:
        raise ValueError(f"mask size {mask.shape[::-1]} does not match image size {image.shape[::-1]}")
    gray = image if image.dtype == np.uint8 else np.clip(image, 0, 255).astype(np.uint8)
    blue = np.where(mask.astype(bool), 255, 0).astype(np.uint8)
    return np.stack([gray, gray, blue], axis=-1)


def split_channels(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Split an in-channel image back into (gray uint8 = mean of R and G, B channel uint8)."""
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] < 3:
        raise ValueError(f"split_channels expects an (H, W, 3) image, got shape {rgb.shape}")
    gray = ((rgb[..., 0].astype(np.uint16) + rgb[..., 1].astype(np.uint16) + 1) // 2).astype(np.uint8)
    return gray, rgb[..., 2].astype(np.uint8)


# ----------------------------------------------------------------------------- ellipse + measurements
@dataclass(frozen=True)
class Ellipse:
    """An ellipse in OpenCV's convention: centre (px), full axis lengths (px), rotation in degrees."""
    cx: float
    cy: float
    width: float  # full length of the first axis
    height: float  # full length of the second axis
    angle: float

    @classmethod
    def from_cv(cls, box) -> "Ellipse":
        (cx, cy), (w, h), ang = box
        return cls(float(cx), float(cy), float(w), float(h), float(ang))

    @property
    def semi_axes(self) -> tuple[float, float]:
        """(semi-major, semi-minor) in pixels."""
        a, b = self.width / 2.0, self.height / 2.0
        return (max(a, b), min(a, b))

    def perimeter_px(self) -> float:
        """Ramanujan's second approximation of the ellipse perimeter (error < 1e-5 relative here)."""
        a, b = self.semi_axes
        if a + b == 0:
            return 0.0
        h = ((a - b) / (a + b)) ** 2
        return math.pi * (a + b) * (1 + 3 * h / (10 + math.sqrt(4 - 3 * h)))

    def head_circumference_mm(self, pixel_size_mm: float | None) -> float | None:
        if pixel_size_mm is None or not pixel_size_mm > 0:
            return None
        return self.perimeter_px() * float(pixel_size_mm)

    def fill(self, shape: tuple[int, int]) -> np.ndarray:
        """Filled ellipse as a bool mask of `shape` (H, W); drawn with sub-pixel precision."""
        return draw_ellipse(shape, self, thickness=-1) > 0

    def bbox(self) -> tuple[float, float, float, float]:
        """Axis-aligned bounding box (x0, y0, x1, y1) of the ellipse, in pixels, unclipped."""
        t = math.radians(self.angle)
        a, b = self.width / 2.0, self.height / 2.0
        dx = math.sqrt((a * math.cos(t)) ** 2 + (b * math.sin(t)) ** 2)
        dy = math.sqrt((a * math.sin(t)) ** 2 + (b * math.cos(t)) ** 2)
        return (self.cx - dx, self.cy - dy, self.cx + dx, self.cy + dy)

    def as_dict(self) -> dict:
        return {k: round(v, 3) for k, v in asdict(self).items()}


_EDGE_PX = 0.1
_SHIFT = 4  # cv2 drawing with 4 fractional bits: sub-pixel centres and axes


def draw_ellipse(shape: tuple[int, int], e: Ellipse, thickness: int = -1, value: int = 255,
                 out: np.ndarray | None = None) -> np.ndarray:
    canvas = np.zeros(shape[:2], np.uint8) if out is None else out
    s = 1 << _SHIFT
    cv2.ellipse(canvas, (int(round(e.cx * s)), int(round(e.cy * s))),
                (max(int(round(e.width / 2 * s)), 0), max(int(round(e.height / 2 * s)), 0)),
                e.angle, 0, 360, value, thickness, lineType=cv2.LINE_8, shift=_SHIFT)
    return canvas


def hadlock_ga_weeks(hc_mm: float | None) -> float | None:
    """Gestational age (weeks) from head circumference by Hadlock: GA = 8.96 + 0.540 HC + 0.0003 HC^3, HC in cm."""
    if hc_mm is None or not np.isfinite(hc_mm) or hc_mm <= 0:
        return None
    hc = hc_mm / 10.0
    return 8.96 + 0.540 * hc + 0.0003 * hc ** 3


def hc_from_ga_weeks(ga_weeks: float) -> float:
    """Inverse of Hadlock's formula (mm), by bisection: the phantom generator draws GA, then HC."""
    lo, hi = 0.0, 600.0
    for _ in range(60):
        mid = (lo + hi) / 2
        if hadlock_ga_weeks(mid) < ga_weeks:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def trimester_from_ga(ga_weeks: float | None) -> str | None:
    """first < 14 weeks <= second < 28 weeks <= third."""
    if ga_weeks is None:
        return None
    return "first" if ga_weeks < 14 else ("second" if ga_weeks < 28 else "third")


def trimester_from_hc(hc_mm: float | None) -> str | None:
    return trimester_from_ga(hadlock_ga_weeks(hc_mm))


# ----------------------------------------------------------------------------- the Ellipse Extractor
@dataclass
class Extraction:
    """What the Ellipse Extractor returns: the filled ellipse mask, the ellipse, and a verdict."""
    mask: np.ndarray  # bool (H, W); all False when no ellipse could be fitted
    ellipse: Ellipse | None
    valid: bool
    reason: str  # "ok" or why the sample is refused
    fit_iou: float | None  # IoU between the filled ellipse and the blob it was fitted to

    def summary(self) -> dict:
        return {"valid": self.valid, "reason": self.reason,
                "fit_iou": None if self.fit_iou is None else round(self.fit_iou, 4),
                "ellipse": None if self.ellipse is None else self.ellipse.as_dict()}


def fit_points(contour: np.ndarray, shape: tuple[int, int], border_margin: int = 1) -> np.ndarray:
    """A contour's points the ellipse is fitted to: those on the image border (within `border_margin`) are
    left out, so a head cut by the frame is fitted to its visible arc (all points when fewer than 5 remain)."""
    h, w = shape
    pts = np.asarray(contour).reshape(-1, 2)
    on_border = ((pts[:, 0] <= border_margin - 1) | (pts[:, 1] <= border_margin - 1)
                 | (pts[:, 0] >= w - border_margin) | (pts[:, 1] >= h - border_margin))
    return pts[~on_border] if (~on_border).sum() >= 5 else pts


def fit_contour_ellipse(pts: np.ndarray) -> Ellipse | None:
    """cv2.fitEllipse on contour points (at least 5), edge-corrected; None when degenerate."""
    # OpenCV contour points run along the centres of the boundary pixels, a little inside the true
    # edge; widening both axes by _EDGE_PX removes that bias (measured: HC18 masks' HC error median
    # -0.075 -> about 0.03 mm; drawn ellipses' perimeter error about 0.1 px).
    e = Ellipse.from_cv(cv2.fitEllipse(np.asarray(pts).astype(np.float32)))
    e = Ellipse(e.cx, e.cy, e.width + _EDGE_PX, e.height + _EDGE_PX, e.angle)
    if not (np.isfinite([e.cx, e.cy, e.width, e.height]).all() and e.width > 1 and e.height > 1):
        return None
    return e


def extract_ellipse(channel: np.ndarray, threshold: int = 127, min_area_frac: float = 0.005,
                    min_fit_iou: float = 0.85, border_margin: int = 1,
                    allow_border: bool = True, min_inside: float = 0.6, max_second_blob: float = 0.2,
                    min_coverage: float = 0.5, max_jag: float = 0.08) -> Extraction:
    """The Ellipse Extractor: threshold -> contours -> largest -> cv2.fitEllipse -> filled mask.

    Heads cut by the frame are common (late pregnancy, other hospitals' framing; HC18's own annotations are
    ellipses clipped by the image edge): contour points lying on the image border are left out of the fit,
    so a head whose VISIBLE boundary is an ellipse arc gets its true ellipse, and its mask is that ellipse
    filled and clipped to the frame. A sample is refused (valid=False) with its reason when:
    - there is no blob, or it is too small (`min_area_frac` of the image);
    - there are two heads: a second blob larger than `max_second_blob` of the largest;
    - the shape is open: the blob covers less than `min_coverage` of its fitted ellipse inside the frame
      (an arc, a crescent or an outline instead of a filled head), or holes cover part of it;
    - too little of the head is inside the frame: under `min_inside` of the ellipse's perimeter (a short
      arc does not determine an ellipse); with allow_border=False any crossing of the border is refused;
    - the boundary is jagged: the visible contour strays from the ellipse by more than `max_jag` of its
      semi-minor axis (RMS), even when the areas agree;
    - the fit is poor: filled (clipped) ellipse vs blob IoU under `min_fit_iou` (a blob, not an ellipse).
    """
    ch = np.asarray(channel)
    if ch.ndim == 3:
        ch = ch[..., 2] if ch.shape[2] >= 3 else ch[..., 0]
    if ch.ndim != 2 or ch.size == 0:
        raise ValueError(f"extract_ellipse expects a 2-D channel, got shape {np.asarray(channel).shape}")
    if ch.dtype == bool:
        binary = ch.astype(np.uint8)
    else:
        binary = (ch.astype(np.float32) > threshold).astype(np.uint8)
    h, w = binary.shape
    empty = np.zeros((h, w), bool)

    contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    if not contours:
        return Extraction(empty, None, False, f"no contour above threshold {threshold}", None)
    contours = sorted(contours, key=cv2.contourArea, reverse=True)
    largest = contours[0]
    area = cv2.contourArea(largest)
    if area < min_area_frac * h * w:
        return Extraction(empty, None, False,
                          f"too small: largest blob is {area / (h * w):.2%} of the image "
                          f"(minimum {min_area_frac:.2%})", None)
    if len(contours) > 1 and cv2.contourArea(contours[1]) > max_second_blob * area:
        return Extraction(empty, None, False,
                          f"two heads: a second blob {cv2.contourArea(contours[1]) / area:.0%} the size of the "
                          f"first (at most {max_second_blob:.0%})", None)
    fit_pts = fit_points(largest, (h, w), border_margin)
    if len(fit_pts) < 5:
        return Extraction(empty, None, False, "too small: fewer than 5 contour points", None)
    e = fit_contour_ellipse(fit_pts)
    if e is None:
        return Extraction(empty, None, False, "poor fit: degenerate ellipse", None)

    filled = e.fill((h, w))  # drawn inside the frame only: the ellipse clipped to the frame
    region = np.zeros((h, w), np.uint8)
    cv2.drawContours(region, [largest], -1, 1, thickness=-1)
    region = region.astype(bool)
    blob = region & binary.astype(bool)  # the pixels really set: an outline's inside is not
    union = np.logical_or(filled, blob).sum()
    iou = float(np.logical_and(filled, blob).sum() / union) if union else 0.0

    coverage = float(np.logical_and(filled, blob).sum() / max(1, filled.sum()))
    if blob.sum() < 0.9 * region.sum() or coverage < min_coverage:
        return Extraction(filled, e, False,
                          f"open shape: the blob fills {coverage:.0%} of its fitted ellipse (an arc, crescent "
                          f"or outline, not a filled head)", iou)
    inside = _perimeter_inside(e, w, h)
    if inside < 0.999 and not allow_border:
        return Extraction(filled, e, False, "touches the border: the head is cut off by the image edge", iou)
    if inside < min_inside:
        return Extraction(filled, e, False,
                          f"cut off: only {inside:.0%} of the head's outline is inside the frame "
                          f"(at least {min_inside:.0%})", iou)
    jag = _boundary_rms(e, fit_pts) / max(1.0, e.semi_axes[1])
    if jag > max_jag:
        return Extraction(filled, e, False,
                          f"jagged outline: the boundary strays {jag:.0%} of the minor semi-axis (RMS) from the "
                          f"ellipse (at most {max_jag:.0%})", iou)
    if iou < min_fit_iou:
        return Extraction(filled, e, False, f"poor fit: ellipse vs blob IoU {iou:.2f} < {min_fit_iou:.2f}", iou)
    return Extraction(filled, e, True, "ok", iou)


def _ellipse_points(e: Ellipse, n: int = 720) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    a, b, th = e.width / 2.0, e.height / 2.0, math.radians(e.angle)
    x, y = a * np.cos(t), b * np.sin(t)
    return np.stack([e.cx + x * math.cos(th) - y * math.sin(th), e.cy + x * math.sin(th) + y * math.cos(th)], 1)


def _perimeter_inside(e: Ellipse, w: int, h: int) -> float:
    """Share of the ellipse's outline inside the frame (by arc length)."""
    p = _ellipse_points(e)
    seg = np.linalg.norm(np.roll(p, -1, axis=0) - p, axis=1)
    mid = (p + np.roll(p, -1, axis=0)) / 2
    ok = (mid[:, 0] >= -0.5) & (mid[:, 0] <= w - 0.5) & (mid[:, 1] >= -0.5) & (mid[:, 1] <= h - 0.5)
    return float(seg[ok].sum() / max(seg.sum(), 1e-9))


def _boundary_rms(e: Ellipse, pts: np.ndarray) -> float:
    """RMS distance (px) from contour points to the ellipse, nearest of 720 outline points."""
    p = _ellipse_points(e)
    q = pts.astype(np.float32)
    d2 = ((q[:, None, :] - p[None, :, :]) ** 2).sum(-1).min(axis=1)
    return float(np.sqrt(d2.mean()))


def refit(mask: np.ndarray, **kwargs) -> Extraction:
    """Re-fit the ellipse to a mask a person has painted (bool or 0/255)."""
    m = np.asarray(mask)
    if m.ndim == 3:
        m = m[..., -1] if m.shape[2] == 4 else m.max(axis=2)
    return extract_ellipse(m.astype(bool), **kwargs)


def fill_outline(outline: np.ndarray) -> tuple[np.ndarray, Ellipse]:
    """Fill a thin ellipse outline (HC18 annotations) by fitting the ellipse to its pixels."""
    o = np.asarray(outline)
    if o.ndim == 3:
        o = o.max(axis=2)
    ys, xs = np.nonzero(o if o.dtype == bool else o > 127)
    if len(xs) < 5:
        raise ValueError("annotation outline is empty (fewer than 5 drawn pixels)")
    e = Ellipse.from_cv(cv2.fitEllipse(np.stack([xs, ys], 1).astype(np.float32)))
    return e.fill(o.shape[:2]), e


def looks_like_outline(mask: np.ndarray) -> bool:
    """True for a thin outline rather than a filled region: either filling its holes adds much area (a
    closed outline), or it is a thin curve that a 3x3 erosion nearly erases (an outline that runs off the
    image edge is open, so it has no hole to fill, yet it is a line, not a head)."""
    m = (np.asarray(mask) > 0).astype(np.uint8)
    n = int(m.sum())
    if n == 0:
        return False
    contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    filled = np.zeros_like(m)
    cv2.drawContours(filled, contours, -1, 1, thickness=-1)
    if filled.sum() > 3 * n:
        return True
    # a filled head of radius >= 5 px keeps >= 64 % of its area under a 3x3 erosion, a 1-3 px line <= 1/3
    return n >= 20 and int(cv2.erode(m, np.ones((3, 3), np.uint8)).sum()) < 0.4 * n


def mask_bbox(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    """Tight box (x0, y0, x1, y1) of a mask, inclusive-exclusive pixel edges; None when empty."""
    ys, xs = np.nonzero(np.asarray(mask))
    if len(xs) == 0:
        return None
    return int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1


def overlay(image: np.ndarray, mask: np.ndarray | None, alpha: float = 0.4,
            color=(0, 200, 255), ellipse: Ellipse | None = None) -> np.ndarray:
    """RGB picture of an image with its mask tinted at `alpha` and, optionally, the ellipse drawn."""
    img = np.asarray(image)
    rgb = np.repeat(img[..., None], 3, axis=2) if img.ndim == 2 else img[..., :3].copy()
    rgb = rgb.astype(np.float32)
    if mask is not None and alpha > 0:
        m = np.asarray(mask).astype(bool)
        rgb[m] = (1 - alpha) * rgb[m] + alpha * np.asarray(color, np.float32)
    out = np.clip(rgb, 0, 255).astype(np.uint8)
    if ellipse is not None:
        s = 1 << _SHIFT
        cv2.ellipse(out, (int(round(ellipse.cx * s)), int(round(ellipse.cy * s))),
                    (int(round(ellipse.width / 2 * s)), int(round(ellipse.height / 2 * s))),
                    ellipse.angle, 0, 360, (255, 220, 0), max(1, round(min(out.shape[:2]) / 200)),
                    lineType=cv2.LINE_AA, shift=_SHIFT)
    return out
