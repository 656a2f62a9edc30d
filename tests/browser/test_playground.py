"""Playground in a real browser: load an image, draw a box on it, see the mask and its Dice."""
from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.browser


def _draw_box(page, box, image_wh):
    """Drag a box (image pixels) on the annotator canvas, then confirm the label dialog."""
    W, H = image_wh
    canvas = page.locator("#pg-ann canvas")
    canvas.scroll_into_view_if_needed()
    bb = canvas.bounding_box()
    s = min(bb["width"] / W, bb["height"] / H)
    ox = bb["x"] + (bb["width"] - W * s) / 2
    oy = bb["y"] + (bb["height"] - H * s) / 2
    x0, y0, x1, y1 = box
    page.mouse.move(ox + x0 * s, oy + y0 * s)
    page.mouse.down()
    page.mouse.move(ox + x1 * s, oy + y1 * s, steps=10)
    page.mouse.up()
    page.get_by_role("button", name="OK", exact=True).click()
    page.locator("#model-box-edit").wait_for(state="detached")


def test_draw_box_shows_mask(page, app_url):
    from pipeline.data import open_source
    from pipeline.masks import mask_bbox
    sample = open_source("phantom:24")[0]  # the dashboard's default source, first image
    H, W = sample.image.shape
    x0, y0, x1, y1 = mask_bbox(sample.mask)
    box = (max(0, x0 - 8), max(0, y0 - 8), min(W - 1, x1 + 8), min(H - 1, y1 + 8))

    page.goto(app_url)
    page.get_by_role("tab", name="Playground").click()
    page.locator("#pg-load").click()
    page.locator("#pg-info").get_by_text(sample.name).wait_for(timeout=60_000)
    page.locator("#pg-ann canvas").wait_for()
    page.wait_for_timeout(500)  # let the canvas lay out the image before measuring it
    _draw_box(page, box, (W, H))

    metrics = page.locator("#pg-metrics")
    metrics.get_by_text("Dice vs ground truth").wait_for(timeout=120_000)
    text = metrics.inner_text()
    dice = float(re.search(r"Dice vs ground truth: ([0-9.]+)", text).group(1))
    assert dice > 0.8, text  # a real mask of the head, not an empty or random one
    assert page.locator("#pg-result img").count() == 1
    # redraw: a new box on the same image is answered without encoding the image again
    page.locator('#pg-ann button[aria-label="Create box"]').click()  # after a box exists: drag mode
    _draw_box(page, (box[0] + 4, box[1] + 4, box[2] - 2, box[3] - 2), (W, H))
    page.wait_for_function(
        "() => document.querySelector('#pg-metrics').innerText.includes('(1 image encodings')", timeout=60_000)
