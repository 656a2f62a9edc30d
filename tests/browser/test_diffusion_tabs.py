"""LoRA training and Generation tabs in a real browser: train a few LoRA steps, generate, paint on the mask
canvas, accept — and the painted mask is the one written to the synthetic dataset."""
from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.browser


def test_train_generate_edit_accept(page, app_url, app_work_dir, wait_text, wait_js, set_input):
    page.goto(app_url)
    page.get_by_role("tab", name="LoRA training").click()
    page.get_by_text("Hyper-parameters (paper defaults)").click()  # open the accordion
    page.locator("#lora-n input").wait_for(state="visible")
    page.wait_for_timeout(500)  # let Gradio's re-render of the just-opened accordion land before typing
    set_input(page, "#lora-n input", 2)
    set_input(page, "#lora-steps input", 3)
    set_input(page, "#lora-preview-every input", 3)
    for elem_id, want in (("lora-n", "2"), ("lora-steps", "3"), ("lora-preview-every", "3")):
        assert page.locator(f"#{elem_id} input").input_value() == want, elem_id
    # the server sees the typed values: the selection shows 2 pairs (it would train on 20 otherwise)
    page.locator("#lora-show").click()
    wait_js(page, "() => document.querySelectorAll('#lora-selection img').length == 2", "2 pairs selected")
    page.locator("#lora-start").click()
    wait_text(page, "#lora-status", "/3", timeout_s=120)  # "step k/3": the run has the typed step count
    wait_text(page, "#lora-status", "saved", timeout_s=420)
    assert "lora-second" in page.locator("#lora-status").inner_text()
    # the live loss curve was drawn and the preview arrived
    assert page.locator("#lora-loss .main-svg").count() > 0
    page.wait_for_function("() => document.querySelectorAll('#lora-previews img').length >= 4")
    lora_dir = app_work_dir / "loras" / "lora-second"
    assert (lora_dir / "pytorch_lora_weights.safetensors").is_file()
    assert json.loads((lora_dir / "lora_config.json").read_text())["steps_done"] == 3

    page.get_by_role("tab", name="Generation").click()
    # the new LoRA is in the Generation tab's list (refresh, then pick it)
    page.locator("#gen-lora-refresh").click()
    page.wait_for_timeout(1000)
    page.locator("#gen-lora input").click()
    page.get_by_role("option", name="lora-second").click()
    page.wait_for_function("() => (document.querySelector('#gen-lora input')?.value ?? '') == 'lora-second'")
    set_input(page, "#gen-n input", 2)
    page.locator("#gen-start").click()
    wait_js(page, "() => [...document.querySelectorAll('#gen-gallery img')]"
                  ".filter(i => i.complete && i.naturalWidth > 0).length >= 2", "2 generated samples shown",
            timeout_s=300, show="#gen-summary")
    page.locator("#gen-gallery img").first.click()
    page.wait_for_function("() => (document.querySelector('#gen-info')?.innerText ?? '').includes('seed')")
    canvas = page.locator("#gen-editor canvas").first
    canvas.wait_for()
    page.wait_for_timeout(1000)  # the editor lays out the newly loaded image

    # paint strokes along a row from x=4 to x=40 (near the top edge, away from any head), in image pixels
    from pipeline.config import GenerationDefaults
    W = H = GenerationDefaults().out_size  # pairs are written at 256² by default (issue 32)
    bb = canvas.bounding_box()
    z = float(page.locator("#gen-editor").get_by_text("%").first.inner_text().strip().strip("%")) / 100

    def to_page(x, y):
        return bb["x"] + (bb["width"] - W * z) / 2 + x * z, bb["y"] + (bb["height"] - H * z) / 2 + y * z

    def stroke(row):
        page.mouse.move(*to_page(4, row))
        page.mouse.down()
        for x in range(6, 41, 2):
            page.mouse.move(*to_page(x, row))
        page.mouse.up()
        page.wait_for_timeout(500)
    # undo as a person does it: a stroke in the wrong place, the canvas toolbar's Undo, the right stroke;
    # then Revert to generated (drops the edit) and "Undo re-fit / revert" (brings it back)
    stroke(4)
    page.locator("#gen-editor").get_by_role("button", name="Undo", exact=True).click()
    page.wait_for_timeout(500)
    stroke(14)
    page.locator("#gen-revert").click()
    wait_text(page, "#gen-info", "reverted")
    page.locator("#gen-undo").click()
    wait_text(page, "#gen-info", "undone")
    page.wait_for_timeout(500)

    page.locator("#gen-accept").click()
    wait_text(page, "#gen-dataset-status", "1 accepted")
    ds = app_work_dir / "synthetic" / "synthetic-1"
    masks = sorted((ds / "masks").glob("*.png"))
    assert len(masks) == 1
    from pipeline.data import read_gray
    saved = read_gray(masks[0]) > 127
    assert saved[12:17, 10:35].mean() > 0.5, "the painted stroke is not in the saved mask"
    assert saved[0:4, 10:35].mean() < 0.1, "the stroke undone with the canvas toolbar is in the saved mask"
    meta = json.loads((ds / "meta" / f"{masks[0].stem}.json").read_text())
    assert meta["edited"] is True and meta["lora"].endswith("lora-second") and meta["seed"] == 0
    # sampled with the base's own ellipse guidance, which the (closed) settings field shows
    from pipeline.diffusion.base import base_ellipse_guidance
    eg = base_ellipse_guidance(None)
    assert meta["ellipse_guidance"] == (None if eg is None else list(eg.at))
    from pipeline.diffusion.base import base_guidance_until  # likewise the share of guided steps
    assert meta["guidance_until"] == base_guidance_until(None)
    assert (ds / "raw" / f"{masks[0].stem}.png").is_file()

    # the LoRA strength x seed grid of the same LoRA (still selected above): one labelled picture
    page.get_by_text("LoRA strength × seed grid").click()  # open the accordion
    page.locator("#grid-scales textarea, #grid-scales input").first.wait_for(state="visible")
    page.wait_for_timeout(500)
    set_input(page, "#grid-scales textarea, #grid-scales input", "0, 0.9")
    set_input(page, "#grid-seeds textarea, #grid-seeds input", "0")
    set_input(page, "#grid-steps input", 2)
    page.locator("#grid-start").click()
    wait_text(page, "#grid-info", "valid ellipses per strength", timeout_s=240)
    assert "1 seeds × 2 strengths, 2 sampler steps" in page.locator("#grid-info").inner_text()
    wait_js(page, "() => [...document.querySelectorAll('#grid-image img')]"
                  ".some(i => i.complete && i.naturalWidth == 70 + 2 * 128)", "the grid picture (2 columns)")
