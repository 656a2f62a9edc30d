"""Biometry, verdicts, loose-box detection and the exports a person keeps (pipeline.measure)."""
from __future__ import annotations

import csv
import io
import math

import numpy as np
import pytest

from pipeline.masks import Ellipse, hadlock_ga_weeks
from pipeline.measure import (HC18_COLUMNS, HC_TOLERANCE_PCT, biometry, box_fit, draw_measurements,
                              ellipse_record, hc18_csv_text, hc18_values, hc_verdict, loose_box_warning)


def test_biometry_of_a_circle_and_an_ellipse():
    px = 0.2
    circle = Ellipse(100, 80, 100, 100, 0)  # diameter 100 px = 20 mm
    m = biometry(circle, px)
    assert m["hc_mm"] == pytest.approx(math.pi * 20, rel=1e-5)
    assert m["bpd_mm"] == pytest.approx(20) and m["ofd_mm"] == pytest.approx(20)
    e = Ellipse(100, 80, 60, 120, 30)  # minor 60 px, major 120 px whatever the axis order
    m = biometry(e, px)
    assert m["bpd_mm"] == pytest.approx(12) and m["ofd_mm"] == pytest.approx(24)
    assert m["ga_weeks"] == pytest.approx(hadlock_ga_weeks(m["hc_mm"]))
    assert biometry(e, None) == {"hc_mm": None, "bpd_mm": None, "ofd_mm": None, "ga_weeks": None}


def test_hc_verdict_names_tolerance_and_source():
    inside = hc_verdict(170.4, 170.0)
    assert HC_TOLERANCE_PCT == 3.0
    assert "HC error 0.4 mm (0.2 %)" in inside and "within" in inside and "±5.1 mm" in inside  # 3 % of 170
    assert "Sarris" in inside and "van den Heuvel" not in inside  # the source that was checked
    outside = hc_verdict(180.0, 170.0)
    assert "10.0 mm" in outside and "outside" in outside
    # relative: 4 mm is within for a third-trimester head (3 % of 300 = 9 mm), outside for a small one
    assert "within" in hc_verdict(304.0, 300.0) and "outside" in hc_verdict(104.0, 100.0)
    assert "pixel size" in hc_verdict(None, 170.0)
    assert "no reference" in hc_verdict(170.0, None)


def test_box_fit_tight_and_loose():
    mask = np.zeros((200, 200), bool)
    mask[50:150, 60:140] = True
    tight = box_fit((58, 48, 142, 152), mask)
    assert not tight["loose"] and loose_box_warning(tight) is None
    loose = box_fit((10, 48, 142, 152), mask)  # 50 px of empty box on the left of a 132 px box
    assert loose["loose"] and loose["side"] == "left" and loose["worst_margin"] == pytest.approx(50 / 132)
    assert "left" in loose_box_warning(loose)
    assert box_fit((0, 0, 10, 10), np.zeros((20, 20), bool))["loose"]
    # a mask that fills its box (SAM following a loose box) is not head-shaped: its ellipse disagrees
    ell = Ellipse(100, 100, 80, 100, 0).fill((200, 200))
    head = box_fit((58, 48, 142, 152), ell, ell)
    assert not head["loose"] and head["ellipse_agreement"] == pytest.approx(1.0)
    square = np.zeros((200, 200), bool)
    square[48:152, 58:142] = True
    filled = box_fit((58, 48, 142, 152), square, ell)
    assert filled["loose"] and filled["ellipse_agreement"] < 0.95 and "not head-shaped" in loose_box_warning(filled)


def test_hc18_csv_row_matches_the_challenge_convention():
    e = Ellipse(cx=400.0, cy=270.0, width=300.0, height=200.0, angle=90.0)
    px = 0.1
    row = hc18_values(e, px)
    assert row == pytest.approx((40.0, 27.0, 15.0, 10.0, math.pi / 2))
    text = hc18_csv_text([("000_HC.png", *row)])
    rows = list(csv.reader(io.StringIO(text)))
    assert tuple(rows[0]) == HC18_COLUMNS == ("filename", "center_x_mm", "center_y_mm", "semi_axes_a_mm",
                                              "semi_axes_b_mm", "angle_rad")
    assert rows[1][0] == "000_HC.png" and float(rows[1][3]) == pytest.approx(15.0)


def test_ellipse_record_px_and_mm():
    e = Ellipse(100.0, 50.0, 80.0, 40.0, 10.0)
    rec = ellipse_record(e, 0.5, image="a.png", model="base model")
    assert rec["image"] == "a.png" and rec["model"] == "base model"
    assert rec["ellipse_px"]["axis_1"] == 80.0 and rec["ellipse_mm"]["semi_axes_a_mm"] == pytest.approx(20.0)
    assert rec["bpd_mm"] == pytest.approx(20.0) and rec["ofd_mm"] == pytest.approx(40.0)
    assert "Hadlock" in rec["ga_formula"]
    none = ellipse_record(None, 0.5)
    assert none["ellipse_px"] is None and none["hc_mm"] is None
    assert ellipse_record(e, None)["ellipse_mm"] is None


def test_draw_measurements_writes_on_a_copy():
    rgb = np.zeros((300, 400, 3), np.uint8)
    out = draw_measurements(rgb, Ellipse(200, 150, 200, 120, 0), 0.2)
    assert out.shape == rgb.shape and rgb.max() == 0 and out.max() > 0
    # the long axis (red) is horizontal through the centre
    assert out[150, 120, 0] > 200 and out[150, 120, 1] < 120
    assert (draw_measurements(rgb, None, 0.2) == rgb).all()


def test_eta_text():
    from pipeline.eta import eta_text, fmt_duration, remaining_s
    assert fmt_duration(5) == "5 s" and fmt_duration(200) == "3 min 20 s" and fmt_duration(3900) == "1 h 05 min"
    assert remaining_s(10.0, 0, 100) is None
    assert remaining_s(10.0, 10, 100) == pytest.approx(90.0)
    assert eta_text(0.0, 0, 100, now=4.0) == "elapsed 4 s · estimating…"
    assert eta_text(0.0, 25, 100, now=60.0) == "elapsed 1 min 00 s · about 3 min 00 s left"
    assert eta_text(0.0, 100, 100, now=60.0).endswith("done")


class _MaskPredictor:
    """Answers every box with the reference mask of the image it was given (looked up by pixels)."""

    def __init__(self, samples):
        self.masks = {s.image.tobytes(): s.mask for s in samples}
        self.boxes = []

    def predict_image(self, image, box):
        self.boxes.append(box)
        return self.masks[np.asarray(image).tobytes()]


def test_export_folder_hc18_writes_the_challenge_csv(tmp_path):
    from pipeline.data import open_source
    from pipeline.measure import export_folder_hc18
    src = open_source("phantom:3")
    pred = _MaskPredictor([src[i] for i in range(len(src))])
    res = export_folder_hc18(pred, "phantom:3", tmp_path / "hc18.csv")
    assert res["rows"] == 3 and not res["skipped"] and len(pred.boxes) == 3
    rows = list(csv.DictReader(open(tmp_path / "hc18.csv")))
    assert [r["filename"] for r in rows] == src.names
    for r, i in zip(rows, range(3)):
        s = src[i]
        a, b = float(r["semi_axes_a_mm"]), float(r["semi_axes_b_mm"])
        hc = Ellipse(0, 0, 2 * a, 2 * b, 0).perimeter_px()  # perimeter in mm (pixel size 1)
        assert hc == pytest.approx(s.meta.hc_mm, rel=0.03), (s.name, hc, s.meta.hc_mm)


def test_readable_texts(tmp_path):
    import json

    from pipeline.masks import Ellipse
    from pipeline.readable import (ellipse_markdown, generation_markdown, hc_check_markdown, lora_label,
                                   lora_state, lora_warning, short_path, short_spec)
    assert short_path(tmp_path / "synthetic" / "s1", tmp_path) == "synthetic/s1"
    assert short_path("/srv/data/hc18/training_set") == "…/hc18/training_set"
    assert short_spec("hc18:/srv/shared/data/hc18") == "hc18:…/data/hc18" and short_spec("phantom:24") == "phantom:24"
    text = ellipse_markdown(Ellipse(74.342123456789, 61.0, 88.2, 70.1, 12.3456))
    assert "74.3" in text and "74.342" not in text
    md = generation_markdown({"n": 8, "valid": 6, "valid_frac": 0.75, "mean_perimeter_px": 180.123456,
                              "mean_qc": 0.8634567}, seeds=list(range(8)), dataset=tmp_path / "synthetic" / "x",
                             work_dir=tmp_path)
    assert "6 valid" in md and "75 %" in md and "QC 0.86" in md and "seeds 0–7" in md
    assert str(tmp_path) not in md and "synthetic/x" in md
    chk = hc_check_markdown({"n": 10, "hc_mm": {"median_abs_error": 0.0361234, "max_abs_error": 0.2371234},
                             "problems": []})
    assert "0.04 mm" in chk and "0.24 mm" in chk and "agree" in chk
    lora = tmp_path / "l"
    lora.mkdir()
    (lora / "lora_config.json").write_text(json.dumps({"steps": 300, "steps_done": 2, "status": "stopped"}))
    st = lora_state(lora)
    assert not st["finished"] and "unfinished: 2/300" in lora_label("l", st) and "2 of 300" in lora_warning("l", st)
    (lora / "lora_config.json").write_text(json.dumps({"steps": 300, "steps_done": 300, "status": "done"}))
    st = lora_state(lora)
    assert st["finished"] and lora_warning("l", st) is None and lora_label("l", st) == "l"
    # a detail LoRA (trained at its own size) says so in the list
    (lora / "lora_config.json").write_text(json.dumps({"steps": 300, "steps_done": 300, "resolution": 256}))
    assert lora_label("l", lora_state(lora)) == "l (256²)"


def test_gain_verdict_needs_a_gain_beyond_noise():
    from pipeline.readable import gain_verdict, paired_gain
    rng = np.random.default_rng(0)
    before = list(0.93 + 0.03 * rng.standard_normal(40))
    # +0.0024 on average, per-image differences of ±0.02 (the "better than the base model" case)
    noisy = [b + 0.0024 + 0.02 * (1 if i % 2 else -1) for i, b in enumerate(before)]
    g = paired_gain(before, noisy)
    assert g["n"] == 40 and "no clear difference" in gain_verdict(g)
    clear = [b + 0.02 + 0.005 * e for b, e in zip(before, rng.standard_normal(40))]
    assert gain_verdict(paired_gain(before, clear)).startswith("better than the base model beyond noise")
    assert paired_gain(before, clear[:10]) is None and "unavailable" in gain_verdict(None)
