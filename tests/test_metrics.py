import math

import numpy as np
import pytest

from pipeline.masks import Ellipse
from pipeline.metrics import dice, hc_abs_error_mm, hd95, iou, segmentation_scores


def test_dice_iou_known_values():
    a = np.zeros((10, 10), bool)
    b = np.zeros((10, 10), bool)
    a[0:4, 0:5] = True  # 20 px
    b[2:6, 0:5] = True  # 20 px, overlap 10
    assert dice(a, b) == pytest.approx(0.5)
    assert iou(a, b) == pytest.approx(10 / 30)
    assert dice(a, a) == pytest.approx(1.0)


def test_empty_conventions():
    e = np.zeros((5, 5), bool)
    f = np.ones((5, 5), bool)
    assert dice(e, e) == 1.0 and iou(e, e) == 1.0 and hd95(e, e) == 0.0
    assert dice(e, f) == 0.0 and math.isinf(hd95(e, f))


def test_hd95_of_shifted_disc_and_mm():
    e = Ellipse(50, 50, 40, 40, 0)
    a = e.fill((100, 100))
    b = Ellipse(53, 50, 40, 40, 0).fill((100, 100))
    d = hd95(a, b)
    assert 2.0 <= d <= 3.5
    assert hd95(a, b, pixel_size_mm=0.5) == pytest.approx(d * 0.5)
    s = segmentation_scores(a, b)
    assert set(s) == {"dice", "iou", "hd95"}


def test_size_mismatch_is_clear():
    with pytest.raises(ValueError, match="does not match"):
        dice(np.zeros((4, 4), bool), np.zeros((4, 5), bool))


def test_hc_error():
    e = Ellipse(100, 100, 120, 80, 0)
    m = e.fill((200, 200))
    err = hc_abs_error_mm(m, e.head_circumference_mm(0.2), 0.2)
    assert err < 0.2
    assert hc_abs_error_mm(m, None, 0.2) is None
