"""The Playground's exports through gradio_client: the ellipse in px and mm beside the mask, and the HC18
challenge CSV for a whole data source (named endpoints `segment` and `export_hc18`)."""
import csv

import cv2
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

from pipeline.data import open_source
from pipeline.masks import Ellipse, mask_bbox
from pipeline.phantom import make_phantom


@pytest.fixture
def client(app_url):
    return Client(app_url, verbose=False)


def test_segment_json_has_the_ellipse_in_px_and_mm(client, tmp_path):
    ph = make_phantom(11)
    path = tmp_path / "head.png"
    cv2.imwrite(str(path), ph.image)
    x0, y0, x1, y1 = mask_bbox(ph.mask)
    _, info = client.predict(handle_file(str(path)), x0 - 4, y0 - 4, x1 + 4, y1 + 4, ph.pixel_size_mm, "base model",
                             False, api_name="/segment")
    px, mm = info["ellipse_px"], info["ellipse_mm"]
    assert mm["semi_axes_a_mm"] == pytest.approx(px["axis_1"] / 2 * ph.pixel_size_mm, rel=1e-3)
    assert mm["center_x_mm"] == pytest.approx(px["center_x"] * ph.pixel_size_mm, rel=1e-3)
    assert 0 < info["bpd_mm"] <= info["ofd_mm"] and "Hadlock" in info["ga_formula"]
    assert info["model"] == "base model"


def test_export_hc18_csv_for_a_source(client):
    csv_path, message = client.predict("phantom:3:5", "base model", None, api_name="/export_hc18")
    rows = list(csv.DictReader(open(csv_path)))
    src = open_source("phantom:3:5")
    assert [r["filename"] for r in rows] == src.names and "3" in message
    for r, i in zip(rows, range(3)):
        a, b = float(r["semi_axes_a_mm"]), float(r["semi_axes_b_mm"])
        hc = Ellipse(0, 0, 2 * a, 2 * b, 0).perimeter_px()  # mm: the axes are in mm already
        assert hc == pytest.approx(src[i].meta.hc_mm, rel=0.15), (r, src[i].meta.hc_mm)
    with pytest.raises(AppError, match="pixel size"):
        client.predict("phantom:3:5", "base model", -1, api_name="/export_hc18")
