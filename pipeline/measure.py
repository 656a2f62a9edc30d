"""What a person keeps from a segmentation: biometry in mm with a verdict beside each number, and exports.

    biometry(ellipse, pixel_size_mm)   HC, BPD, OFD (mm) and GA (weeks, Hadlock's HC formula)
    hc_verdict(hc, reference)          "HC error 0.5 mm (0.3 %) — within the ±5.1 mm working tolerance: ±3 % …"
    box_fit(box, mask)                 how loosely the box surrounds the mask (a loose box gives a poor mask)
    ellipse_record(...)                the ellipse in px and mm (JSON export)
    hc18_rows(...), write_hc18_csv()   the HC18 challenge submission CSV for a folder of images
    draw_measurements(rgb, ellipse, …) the overlay with the axes and the numbers drawn on it

No gradio here: the Playground tab, the `segment`/`export-hc18` CLI commands and the API use these.
"""
from __future__ import annotations

import csv
import io
import math
from pathlib import Path

import numpy as np

from .masks import Ellipse, hadlock_ga_weeks

# HC error a measurement may have and still be called "within tolerance": a working tolerance, not a
# clinical standard. It is relative because measurement error grows with the head: Sarris et al. (Ultrasound
# Obstet Gynecol 2012, 175 scans at 14-41 weeks, three experienced sonographers) give ±3.0 % as the 95 %
# limits of agreement of one sonographer measuring the same fetus's HC twice (intraobserver). Checked in the
# study's abstract (issue 11). The earlier wording, "about the mean HC difference of the HC18 challenge
# paper's method (van den Heuvel et al., PLoS ONE 2018)", could not be checked against that paper's text
# (its abstract reports gestational-age differences in days, not HC in mm) and was dropped.
HC_TOLERANCE_PCT = 3.0
HC_TOLERANCE_SOURCE = ("±3 % of the reference HC, the 95 % limits of agreement of one sonographer measuring the "
                       "same head twice (Sarris et al., Ultrasound Obstet Gynecol 2012)")
GA_FORMULA = "Hadlock 1984: GA = 8.96 + 0.540·HC + 0.0003·HC³ (HC in cm)"
# A box whose sides lie further than this share of the box size from the mask is "loose": SAM was trained
# with boxes enlarged by 0-20 px, and loose boxes gave masks of Dice ~0.8 in the Playground (issue 11).
LOOSE_MARGIN = 0.15
ELLIPSE_AGREEMENT = 0.95
HC18_COLUMNS = ("filename", "center_x_mm", "center_y_mm", "semi_axes_a_mm", "semi_axes_b_mm", "angle_rad")


def biometry(ellipse: Ellipse | None, pixel_size_mm: float | None) -> dict:
    """HC (ellipse perimeter), BPD (minor axis) and OFD (major axis) in mm, GA in weeks; None without
    an ellipse or a pixel size. BPD/OFD are taken outer-to-outer on the fitted skull ellipse (HC18's
    convention), so they read a few mm larger than a caliper's outer-to-inner BPD."""
    if ellipse is None or not pixel_size_mm or pixel_size_mm <= 0:
        return {"hc_mm": None, "bpd_mm": None, "ofd_mm": None, "ga_weeks": None}
    a, b = ellipse.semi_axes
    hc = ellipse.perimeter_px() * pixel_size_mm
    return {"hc_mm": hc, "bpd_mm": 2 * b * pixel_size_mm, "ofd_mm": 2 * a * pixel_size_mm,
            "ga_weeks": hadlock_ga_weeks(hc)}


def hc_verdict(hc_mm: float | None, reference_mm: float | None, tolerance_pct: float = HC_TOLERANCE_PCT) -> str:
    """One line a clinician reads: the error, inside or outside the tolerance (in mm for this head), and
    where the tolerance comes from."""
    if hc_mm is None:
        return "no HC: type the pixel size (mm per pixel)"
    if reference_mm is None or not reference_mm > 0:
        return "no reference HC for this image to compare with"
    err = abs(hc_mm - reference_mm)
    tol = tolerance_pct / 100 * reference_mm
    inside = err <= tol
    return (f"HC error {err:.1f} mm ({100 * err / reference_mm:.1f} %) — {'✅ within' if inside else '⚠️ outside'} "
            f"the ±{tol:.1f} mm working tolerance: {HC_TOLERANCE_SOURCE}")


# Dice against a reference mask a box-prompted model reaches on real HC18 images: LiteMedSAM zero-shot
# 0.93-0.95 on 40 images (README, SAM section, `python -m pipeline evaluate`)
DICE_GOOD = 0.90
DICE_SOURCE = "LiteMedSAM zero-shot reaches 0.93–0.95 on HC18 (README, SAM)"


def dice_verdict(d: float) -> str:
    if d >= DICE_GOOD:
        return f"✅ good (≥ {DICE_GOOD:.2f}; {DICE_SOURCE})"
    return f"⚠️ below {DICE_GOOD:.2f} ({DICE_SOURCE}): check the box and the mask"


def box_fit(box, mask: np.ndarray, ellipse_mask: np.ndarray | None = None) -> dict:
    """Two signs of a box that does not fit the head, from the result alone (no reference needed):
    - margin: empty box around the mask, per side as a share of the box size (> LOOSE_MARGIN: loose);
    - shape: Dice between the mask and its fitted ellipse (< ELLIPSE_AGREEMENT: not head-shaped). SAM
      often follows a loose box, filling it with non-head tissue, so the margin alone misses it.
    Measured (LiteMedSAM, 3 phantoms + 3 HC18 images, boxes tight / 40 % wider on one side / 20 % wider
    all round): tight boxes gave agreement 0.960-0.993 (no warning), loose ones 0.913-0.979 (5 of 12
    below 0.95) — a hint, not a detector."""
    x0, y0, x1, y1 = (float(v) for v in box)
    m = np.asarray(mask).astype(bool)
    ys, xs = np.nonzero(m)
    if xs.size == 0:
        return {"loose": True, "worst_margin": 1.0, "side": "all", "ellipse_agreement": None}
    w, h = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
    margins = {"left": (xs.min() - x0) / w, "right": (x1 - 1 - xs.max()) / w,
               "top": (ys.min() - y0) / h, "bottom": (y1 - 1 - ys.max()) / h}
    side = max(margins, key=margins.get)
    agree = None
    if ellipse_mask is not None:
        e = np.asarray(ellipse_mask).astype(bool)
        agree = float(2 * (m & e).sum() / max(1, m.sum() + e.sum()))
    loose = margins[side] > LOOSE_MARGIN or (agree is not None and agree < ELLIPSE_AGREEMENT)
    return {"loose": bool(loose), "worst_margin": float(max(0.0, margins[side])), "side": side,
            "ellipse_agreement": agree}


def loose_box_warning(fit: dict) -> str | None:
    if not fit["loose"]:
        return None
    if fit["side"] == "all":
        return "⚠️ the mask is empty: draw the box tightly around the skull"
    if fit["worst_margin"] > LOOSE_MARGIN:
        return (f"⚠️ loose box: {100 * fit['worst_margin']:.0f} % of the box is empty on the {fit['side']} side. "
                "SAM expects a box that just encloses the skull; a loose box gives a poorer mask and HC — redraw "
                "it tighter")
    return (f"⚠️ the mask is not head-shaped (it agrees with its fitted ellipse at Dice "
            f"{fit['ellipse_agreement']:.3f}, below {ELLIPSE_AGREEMENT:.2f}): the box may be loose or off the "
            "skull — redraw it tightly around the skull")


def ellipse_record(ellipse: Ellipse | None, pixel_size_mm: float | None, **extra) -> dict:
    """The ellipse in px (OpenCV convention: centre, full axes, angle in degrees) and, with a pixel
    size, in mm like the HC18 CSV (centre, semi-axes a = width/2 and b = height/2, angle in radians)."""
    rec: dict = {**extra, "pixel_size_mm": pixel_size_mm}
    if ellipse is None:
        return {**rec, "ellipse_px": None, "ellipse_mm": None, **_rounded(biometry(None, None))}
    rec["ellipse_px"] = {"center_x": round(ellipse.cx, 2), "center_y": round(ellipse.cy, 2),
                         "axis_1": round(ellipse.width, 2), "axis_2": round(ellipse.height, 2),
                         "angle_deg": round(ellipse.angle, 2)}
    rec["ellipse_mm"] = dict(zip(HC18_COLUMNS[1:], hc18_values(ellipse, pixel_size_mm))) if pixel_size_mm else None
    return {**rec, **_rounded(biometry(ellipse, pixel_size_mm)), "ga_formula": GA_FORMULA}


def hc18_values(ellipse: Ellipse, pixel_size_mm: float) -> tuple[float, ...]:
    px = float(pixel_size_mm)
    return (round(ellipse.cx * px, 6), round(ellipse.cy * px, 6), round(ellipse.width / 2 * px, 6),
            round(ellipse.height / 2 * px, 6), round(math.radians(ellipse.angle), 6))


def hc18_csv_text(rows: list[tuple]) -> str:
    """rows: (filename, center_x_mm, center_y_mm, semi_axes_a_mm, semi_axes_b_mm, angle_rad)."""
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(HC18_COLUMNS)
    w.writerows(rows)
    return buf.getvalue()


def _rounded(d: dict) -> dict:
    return {k: (None if v is None else round(float(v), 2)) for k, v in d.items()}


def fmt_mm(v: float | None) -> str:
    return "—" if v is None else f"{v:.1f} mm"


def draw_measurements(rgb: np.ndarray, ellipse: Ellipse | None, pixel_size_mm: float | None) -> np.ndarray:
    """The overlay with the ellipse's two axes drawn (OFD long, BPD short) and HC / BPD / OFD / GA written
    in the top-left corner, so a screenshot of the overlay carries its numbers."""
    import cv2
    out = np.ascontiguousarray(rgb.copy())
    if ellipse is None:
        return out
    h, w = out.shape[:2]
    thick = max(1, round(min(h, w) / 300))
    t = math.radians(ellipse.angle)
    axes = [(ellipse.width / 2, t), (ellipse.height / 2, t + math.pi / 2)]
    for (r, ang), colour in zip(axes, [(255, 80, 80), (80, 255, 80)] if ellipse.width >= ellipse.height
                                else [(80, 255, 80), (255, 80, 80)]):
        dx, dy = r * math.cos(ang), r * math.sin(ang)
        p0 = (round(ellipse.cx - dx), round(ellipse.cy - dy))
        p1 = (round(ellipse.cx + dx), round(ellipse.cy + dy))
        cv2.line(out, p0, p1, colour, thick, cv2.LINE_AA)
    m = biometry(ellipse, pixel_size_mm)
    if m["hc_mm"] is None:
        lines = ["HC: pixel size needed"]
    else:
        lines = [f"HC {m['hc_mm']:.1f} mm", f"BPD {m['bpd_mm']:.1f} mm (green)", f"OFD {m['ofd_mm']:.1f} mm (red)",
                 f"GA {m['ga_weeks']:.1f} wk (Hadlock)"]
    scale = max(0.4, min(h, w) / 700)
    y = round(22 * scale) + 4
    for line in lines:
        (tw, th), _ = cv2.getTextSize(line, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        cv2.rectangle(out, (4, y - th - 4), (10 + tw, y + 4), (0, 0, 0), -1)
        cv2.putText(out, line, (7, y), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick, cv2.LINE_AA)
        y += th + 10
    return out


def export_folder_hc18(predictor, spec: str, out_csv: str | Path, pixel_size_mm: float | None = None,
                       allowed_roots=None, progress=None) -> dict:
    """Segment every image of a data source with the box of its reference mask (no reference: the whole
    image) and write the HC18 challenge CSV (filename,center_x_mm,…,angle_rad). The pixel size comes from
    each sample's metadata (HC18's CSV) or `pixel_size_mm`; images without one are listed as skipped."""
    from .data import open_source
    from .fileio import atomic_write_text
    from .masks import refit
    from .validate import validate_box
    src = open_source(spec, allowed_roots)
    rows, skipped = [], []
    for i in range(len(src)):
        s = src[i]
        px = s.meta.pixel_size_mm or pixel_size_mm
        if progress is not None:
            progress(i, len(src))
        if not px:
            skipped.append(f"{s.name}: no pixel size")
            continue
        if s.mask is not None and s.mask.any():
            ys, xs = np.nonzero(s.mask)
            box = (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
        else:
            box = (0, 0, s.image.shape[1], s.image.shape[0])
        mask = predictor.predict_image(s.image, validate_box(box, s.image.shape[:2]))
        ex = refit(mask, allow_border=True, min_fit_iou=0.0) if mask.any() else None
        if ex is None or ex.ellipse is None:
            skipped.append(f"{s.name}: empty mask")
            continue
        rows.append((Path(s.name).name, *hc18_values(ex.ellipse, px)))
    atomic_write_text(out_csv, hc18_csv_text(rows))
    return {"csv": str(out_csv), "rows": len(rows), "skipped": skipped}
