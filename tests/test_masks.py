"""In-channel injection and the Ellipse Extractor on drawn ellipses (rotated, noisy, clipped) and garbage."""
import math

import cv2
import numpy as np
import pytest

from pipeline.masks import (Ellipse, extract_ellipse, fill_outline, hadlock_ga_weeks, hc_from_ga_weeks,
                            inject_mask, looks_like_outline, mask_bbox, refit, split_channels,
                            trimester_from_hc)


def _angle_diff(a, b):
    d = (a - b) % 180
    return min(d, 180 - d)


def _same_ellipse(found: Ellipse, true: Ellipse, tol_px=1.5, tol_deg=2.0):
    assert abs(found.cx - true.cx) < tol_px and abs(found.cy - true.cy) < tol_px
    fa, fb = found.semi_axes
    ta, tb = true.semi_axes
    assert abs(fa - ta) < tol_px and abs(fb - tb) < tol_px
    if ta / tb > 1.1:  # the angle is only defined for a real ellipse
        # OpenCV may swap width/height and add 90 degrees: compare the major axis direction
        fang = found.angle if found.width >= found.height else found.angle + 90
        tang = true.angle if true.width >= true.height else true.angle + 90
        assert _angle_diff(fang, tang) < tol_deg


@pytest.mark.parametrize("size", [(64, 48), (540, 800), (128, 128)])
def test_injection_round_trip_any_size(size):
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, size, dtype=np.uint8)
    mask = rng.random(size) > 0.5
    rgb = inject_mask(img, mask)
    assert rgb.shape == (*size, 3) and rgb.dtype == np.uint8
    assert (rgb[..., 0] == img).all() and (rgb[..., 1] == img).all()
    gray, blue = split_channels(rgb)
    assert (gray == img).all()
    assert ((blue > 127) == mask).all()


def test_injection_refuses_mismatched_sizes():
    with pytest.raises(ValueError, match="does not match"):
        inject_mask(np.zeros((10, 12), np.uint8), np.zeros((10, 10), bool))


@pytest.mark.parametrize("angle", [0.0, 17.0, 63.0, 121.0])
def test_extractor_recovers_rotated_ellipse(angle):
    true = Ellipse(201.3, 148.7, 230.0, 160.0, angle)
    blue = true.fill((300, 400)).astype(np.uint8) * 255
    ex = extract_ellipse(blue)
    assert ex.valid, ex.reason
    _same_ellipse(ex.ellipse, true)
    assert ex.fit_iou > 0.97


def test_extractor_recovers_noisy_ellipse():
    rng = np.random.default_rng(3)
    true = Ellipse(160, 120, 180, 130, 30)
    blue = true.fill((240, 320)).astype(np.float32) * 200 + rng.normal(0, 25, (240, 320))
    blue = np.clip(blue + 20, 0, 255).astype(np.uint8)  # soft, noisy B channel like a generated one
    ex = extract_ellipse(blue)
    assert ex.valid, ex.reason
    _same_ellipse(ex.ellipse, true, tol_px=3.0, tol_deg=4.0)


@pytest.mark.parametrize("true, shape", [
    (Ellipse(60, 120, 200, 150, 10), (240, 320)),      # left part outside the image
    (Ellipse(64, 100, 100, 80, 25), (128, 128)),       # a late-pregnancy head cut by the bottom edge, 128²
    (Ellipse(100, 64, 90, 110, 70), (128, 128)),       # cut by the right edge
])
def test_extractor_accepts_a_head_cut_by_the_frame_with_its_true_ellipse(true, shape):
    blue = true.fill(shape).astype(np.uint8) * 255
    ex = extract_ellipse(blue)
    assert ex.valid, ex.reason
    _same_ellipse(ex.ellipse, true, tol_px=2.5, tol_deg=3.0)
    # the mask is the fitted ellipse clipped to the frame: equal to the drawn (clipped) one
    inter = np.logical_and(ex.mask, blue > 0).sum() / np.logical_or(ex.mask, blue > 0).sum()
    assert inter > 0.97
    strict = extract_ellipse(blue, allow_border=False)
    assert not strict.valid and "border" in strict.reason


def test_extractor_refuses_a_head_mostly_outside_the_frame():
    blue = Ellipse(10, 64, 120, 100, 0).fill((128, 128)).astype(np.uint8) * 255  # a cap at the left edge
    ex = extract_ellipse(blue)
    assert not ex.valid and ex.reason.startswith("cut off"), ex.reason


def test_extractor_refuses_two_heads_open_arcs_and_jagged_outlines():
    two = np.zeros((128, 128), np.uint8)
    cv2.ellipse(two, (40, 64), (25, 20), 0, 0, 360, 255, -1)
    cv2.ellipse(two, (95, 64), (22, 18), 0, 0, 360, 255, -1)
    r = extract_ellipse(two)
    assert not r.valid and r.reason.startswith("two heads"), r.reason
    arc = np.zeros((128, 128), np.uint8)  # a thick open arc (a skull echo drawn in B, not a filled head)
    cv2.ellipse(arc, (64, 64), (45, 35), 0, 200, 520, 255, 6)
    r = extract_ellipse(arc)
    assert not r.valid and r.reason.startswith("open shape"), r.reason
    ring = np.zeros((128, 128), np.uint8)  # a closed outline: its inside is not set
    cv2.ellipse(ring, (64, 64), (45, 35), 0, 0, 360, 255, 3)
    r = extract_ellipse(ring)
    assert not r.valid and r.reason.startswith("open shape"), r.reason
    # a star-ish outline: the right area, a ragged boundary
    t = np.linspace(0, 2 * np.pi, 200, endpoint=False)
    rad = 38 * (1 + 0.18 * np.sign(np.sin(9 * t)))
    pts = np.stack([64 + rad * np.cos(t), 64 + 0.8 * rad * np.sin(t)], 1).round().astype(np.int32)
    jag = np.zeros((128, 128), np.uint8)
    cv2.fillPoly(jag, [pts], 255)
    r = extract_ellipse(jag)
    assert not r.valid and (r.reason.startswith("jagged") or r.reason.startswith("poor fit")), r.reason


def test_extractor_accepts_every_real_hc18_mask_at_the_model_size():
    from pathlib import Path
    root = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "hc18"
    if not root.is_dir():
        pytest.skip(f"HC18 not found at {root}")
    from pipeline.data import open_source
    from pipeline.diffusion.base import to_model_size
    src = open_source(f"hc18:{root}")
    refused = []
    for i in range(0, len(src), 8):  # 100 of the 799, heads cut by the frame among them
        s = src[i]
        ex = extract_ellipse(to_model_size(s.image, s.mask, 128)[..., 2])
        if not ex.valid:
            refused.append((src.names()[i], ex.reason))
    assert not refused, refused


def test_extractor_refuses_garbage_with_a_reason():
    assert extract_ellipse(np.zeros((100, 100), np.uint8)).reason.startswith("no contour")
    tiny = np.zeros((200, 200), np.uint8)
    tiny[100:103, 100:103] = 255
    r = extract_ellipse(tiny)
    assert not r.valid and r.reason.startswith("too small")
    # an L-shaped blob is not an ellipse
    lshape = np.zeros((200, 200), np.uint8)
    lshape[20:180, 20:60] = 255
    lshape[140:180, 20:180] = 255
    r = extract_ellipse(lshape)
    assert not r.valid and r.reason.startswith(("poor fit", "open shape")), r.reason
    # salt-and-pepper noise: largest blob is tiny
    noise = (np.random.default_rng(0).random((200, 200)) > 0.5).astype(np.uint8) * 255
    r = extract_ellipse(noise)
    assert not r.valid
    with pytest.raises(ValueError):
        extract_ellipse(np.zeros((0,), np.uint8))


def test_threshold_is_respected():
    true = Ellipse(100, 100, 120, 90, 0)
    blue = true.fill((200, 200)).astype(np.uint8) * 120  # below the default 127
    assert not extract_ellipse(blue).valid
    assert extract_ellipse(blue, threshold=100).valid


def test_refit_of_painted_mask():
    true = Ellipse(150, 110, 170, 120, 45)
    painted = true.fill((220, 300)).copy()
    painted[100:104, 60:70] = False  # a few erased pixels, a stray stroke
    painted[5:9, 5:40] = True
    ex = refit(painted)
    assert ex.valid
    _same_ellipse(ex.ellipse, true, tol_px=2.0, tol_deg=3.0)
    rgba = np.zeros((220, 300, 4), np.uint8)
    rgba[..., 3] = true.fill((220, 300)) * 255
    assert refit(rgba).valid


def test_outline_fill_and_detection():
    true = Ellipse(200, 150, 260, 180, 25)
    outline = np.zeros((300, 400), np.uint8)
    cv2.ellipse(outline, (200, 150), (130, 90), 25, 0, 360, 255, 1)
    assert looks_like_outline(outline > 0)
    assert not looks_like_outline(true.fill((300, 400)))
    filled, e = fill_outline(outline)
    assert filled.sum() > 0.95 * math.pi * 130 * 90
    _same_ellipse(e, true, tol_px=1.5)


def test_perimeter_hc_ga_and_trimester():
    circle = Ellipse(0, 0, 100, 100, 0)
    assert circle.perimeter_px() == pytest.approx(math.pi * 100, rel=1e-9)
    e = Ellipse(0, 0, 200, 100, 0)  # a=100, b=50: exact perimeter 484.4224...
    assert e.perimeter_px() == pytest.approx(484.42241, rel=1e-6)
    assert e.head_circumference_mm(0.1) == pytest.approx(48.442241, rel=1e-6)
    assert e.head_circumference_mm(None) is None
    assert hadlock_ga_weeks(100.0) == pytest.approx(8.96 + 5.4 + 0.3, rel=1e-9)
    for ga in (12.0, 20.0, 35.0):
        assert hadlock_ga_weeks(hc_from_ga_weeks(ga)) == pytest.approx(ga, abs=1e-6)
    assert trimester_from_hc(hc_from_ga_weeks(13.9)) == "first"
    assert trimester_from_hc(hc_from_ga_weeks(14.1)) == "second"
    assert trimester_from_hc(hc_from_ga_weeks(28.1)) == "third"
    assert trimester_from_hc(None) is None


def test_mask_bbox():
    m = np.zeros((10, 20), bool)
    assert mask_bbox(m) is None
    m[2:5, 3:9] = True
    assert mask_bbox(m) == (3, 2, 9, 5)
