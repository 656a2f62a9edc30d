"""Tabs walked the way a person does (issue 11): open every accordion before Start, read the result.

Experiments: opening "SYN arm and grid overrides" must not turn the empty repeats/epochs into 0 (Start
failed with "Value 0 is less than minimum value 1."); Open puts the opened sweep's settings in the form.
Fine-tune SAM: a short run shows elapsed time and an estimate, then a verdict that claims "better" only
beyond noise. Guide: the quick start and the glossary are there."""
from __future__ import annotations

import pytest
from conftest import close_toasts, wait_for_toast

pytestmark = pytest.mark.browser


def test_guide_has_quick_start_and_glossary(page, app_url):
    page.goto(app_url)
    page.get_by_text("Quick start").first.wait_for(timeout=60_000)
    text = page.locator("body").inner_text()
    for word in ("rank", "alpha", "UniPC", "N_real", "heldout", "SYN", "in-channel"):
        assert word in text, word
    assert "yellow" in text and "blue" in text


def test_experiments_accordion_then_start_then_open(page, app_url, app_work_dir, wait_text, set_input):
    page.goto(app_url)
    page.get_by_role("tab", name="Experiments").click()
    page.locator("#sw-start").wait_for()
    page.get_by_text("SYN arm and grid overrides").click()  # a person opens it to look, and leaves it empty
    page.locator("#sw-epochs textarea, #sw-epochs input").first.wait_for(state="visible")
    page.wait_for_timeout(500)
    assert page.locator("#sw-repeats textarea, #sw-repeats input").first.input_value() == ""
    set_input(page, "#sw-name textarea, #sw-name input", "walk-a")
    page.locator("#sw-preset input").click()
    page.get_by_role("option", name="smoke").click()
    set_input(page, "#sw-train textarea, #sw-train input", "phantom:24")
    page.locator("#sw-start").click()
    wait_text(page, "#sw-status", "sweep finished", timeout_s=420)
    assert (app_work_dir / "sweeps" / "walk-a").is_dir()
    assert "no results yet" not in page.locator("#sw-table").inner_text()  # the finished cells' table is shown
    # a bad value names its field
    set_input(page, "#sw-epochs textarea, #sw-epochs input", "0")
    page.locator("#sw-start").click()
    page.wait_for_function("() => [...document.querySelectorAll('.toast-body')].some(t => t.innerText.includes('epochs'))",
                           timeout=60_000)
    # type another name and source, then Open the finished sweep: the form shows that sweep's settings
    set_input(page, "#sw-name textarea, #sw-name input", "something-else")
    set_input(page, "#sw-train textarea, #sw-train input", "phantom:5")
    # the finished sweep is already chosen in "Past sweeps" (Start put it there)
    assert page.locator("#sw-past input").input_value() == "walk-a"
    for close in page.locator(".toast-close").all():  # the error toast may cover the buttons
        close.click()
    page.locator("#sw-open").click()
    page.wait_for_function("() => (document.querySelector('#sw-name textarea, #sw-name input')?.value ?? '') == 'walk-a'",
                           timeout=60_000)
    assert page.locator("#sw-train textarea, #sw-train input").first.input_value() == "phantom:24"
    assert page.locator("#sw-epochs textarea, #sw-epochs input").first.input_value() == "1"


def test_finetune_walkthrough_shows_eta_and_an_honest_verdict(page, app_url, wait_text, set_input):
    page.goto(app_url)
    page.get_by_role("tab", name="Fine-tune SAM").click()
    page.locator("#ft-start").wait_for()
    page.get_by_text("Hyper-parameters (paper defaults)").click()
    page.locator("#ft-epochs input").wait_for(state="visible")
    page.wait_for_timeout(500)
    set_input(page, "#ft-nreal input", 3)
    set_input(page, "#ft-epochs input", 1)
    set_input(page, "#ft-nval input", 4)
    set_input(page, "#ft-name textarea, #ft-name input", "walk-ft")
    page.locator("#ft-start").click()
    page.wait_for_function("() => /elapsed/.test((document.querySelector('#ft-status')?.innerText ?? ''))"
                           " || /elapsed/.test(document.body.innerText)", timeout=300_000)
    wait_text(page, "#ft-summary", "zero-shot", timeout_s=420)
    summary = page.locator("#ft-summary").inner_text()
    assert ("beyond noise" in summary or "within noise" in summary or "no epoch beat" in summary), summary
    assert "optimistic" in summary


def test_data_lora_generate_finetune_playground_experiments(page, app_url, app_work_dir, wait_text, wait_js,
                                                            set_input):
    """The whole path (issue 33), each step's visible result asserted: Data → LoRA → Generate (accept) →
    Fine-tune on the accepted pairs → Playground on the fine-tuned run → Experiments smoke."""
    from pipeline.data import open_source
    from pipeline.masks import mask_bbox
    page.goto(app_url)
    # Data: load a source; the page says what was loaded
    page.get_by_role("tab", name="Data").click()
    set_input(page, "#data-source input", "phantom:40", commit="Enter")
    page.locator("#data-load").click()
    wait_text(page, "#data-status", "phantom:40")
    assert "phantom:40" in page.locator("#data-status").inner_text()
    wait_js(page, "() => document.querySelectorAll('#data-gallery img').length > 0", "thumbnails of the source")

    # LoRA: the source followed; a 3-step LoRA is saved
    page.get_by_role("tab", name="LoRA training").click()
    wait_js(page, "() => (document.querySelector('#lora-source input, #lora-source textarea')?.value ?? '')"
                  " == 'phantom:40'", "the LoRA tab following the Data tab", show="#lora-source")
    set_input(page, "#lora-name input, #lora-name textarea", "walk")
    page.get_by_text("Hyper-parameters").first.click()
    page.locator("#lora-n input").wait_for(state="visible")
    set_input(page, "#lora-n input", 2)
    set_input(page, "#lora-steps input", 3)
    set_input(page, "#lora-preview-every input", 3)
    page.locator("#lora-start").click()
    wait_text(page, "#lora-status", "saved", timeout_s=420)
    assert "walk-second" in page.locator("#lora-status").inner_text()
    wait_js(page, "() => document.querySelectorAll('#lora-previews img').length >= 1", "the LoRA's preview")

    # Generate with it (already chosen), accept one pair
    page.get_by_role("tab", name="Generation").click()
    wait_js(page, "() => (document.querySelector('#gen-lora input')?.value ?? '') == 'walk-second'",
            "the trained LoRA chosen", show="#gen-lora")
    set_input(page, "#gen-n input", 3)
    set_input(page, "#gen-dataset input, #gen-dataset textarea", "walk-syn")
    page.locator("#gen-start").click()
    wait_js(page, "() => [...document.querySelectorAll('#gen-gallery img')]"
                  ".filter(i => i.complete && i.naturalWidth > 0).length >= 3", "3 generated samples", timeout_s=300,
            show="#gen-summary")
    page.locator("#gen-gallery img").first.click()
    wait_text(page, "#gen-info", "seed")
    page.locator("#gen-editor canvas").first.wait_for()
    page.locator("#gen-accept").click()
    wait_text(page, "#gen-dataset-status", "1 accepted")
    syn = app_work_dir / "synthetic" / "walk-syn"
    assert len(list((syn / "masks").glob("*.png"))) == 1

    # Fine-tune on the accepted pairs; a second Start says it is already running
    page.get_by_role("tab", name="Fine-tune SAM").click()
    page.locator("#ft-synthetic input").click()
    page.get_by_role("option", name=f"folder:{syn}").click()
    wait_js(page, "(v) => (document.querySelector('#ft-synthetic input')?.value ?? '') == v",
            "the accepted pairs chosen", arg=f"folder:{syn}")
    page.locator("span:text-is('Hyper-parameters (paper defaults)'):visible").click()  # (the LoRA tab has one too)
    page.locator("#ft-epochs input").wait_for(state="visible")
    set_input(page, "#ft-nreal input", 4)
    set_input(page, "#ft-epochs input", 2)
    set_input(page, "#ft-nval input", 4)
    set_input(page, "#ft-name textarea, #ft-name input", "walk-path-ft")
    page.locator("#ft-start").click()
    wait_js(page, "() => /preparing|embeddings|epoch/.test(document.querySelector('#ft-status')?.innerText ?? '')",
            "the fine-tuning under way", timeout_s=120, show="#ft-status")
    page.locator("#ft-start").click()
    wait_for_toast(page, "already running")
    close_toasts(page)
    wait_text(page, "#ft-summary", "zero-shot", timeout_s=420)
    summary = page.locator("#ft-summary").inner_text()
    assert "walk-path-ft" in summary and ("beyond noise" in summary or "within noise" in summary
                                     or "no epoch beat" in summary), summary
    assert (app_work_dir / "runs" / "walk-path-ft").is_dir()

    # Playground on the fine-tuned run
    page.get_by_role("tab", name="Playground").click()
    page.locator("#pg-model input").click()
    page.get_by_role("option", name="walk-path-ft").click()
    wait_js(page, "() => (document.querySelector('#pg-model input')?.value ?? '') == 'walk-path-ft'", "the run chosen")
    sample = open_source("phantom:40")[0]
    wait_js(page, "(n) => (document.querySelector('#pg-sample input')?.value ?? '') == n",
            "the Playground listing the Data tab's source", arg=sample.name)
    page.locator("#pg-load").click()
    page.locator("#pg-info").get_by_text(sample.name).wait_for(timeout=60_000)
    page.locator("#pg-ann canvas").wait_for()
    page.wait_for_timeout(500)  # the annotator lays out the image before it is measured
    from tests.browser.test_playground import _draw_box
    H, W = sample.image.shape
    x0, y0, x1, y1 = mask_bbox(sample.mask)
    _draw_box(page, (max(0, x0 - 8), max(0, y0 - 8), min(W - 1, x1 + 8), min(H - 1, y1 + 8)), (W, H))
    page.locator("#pg-metrics").get_by_text("Dice vs ground truth").wait_for(timeout=120_000)
    assert "fine-tuned run walk-path-ft" in page.locator("#pg-metrics").inner_text().replace("`", "")
    assert page.locator("#pg-result img").count() == 1

    # Experiments smoke: a finished sweep with its table and chart
    page.get_by_role("tab", name="Experiments").click()
    set_input(page, "#sw-name input, #sw-name textarea", "walk-sw")
    page.locator("#sw-preset input").click()
    page.get_by_role("option", name="smoke").click()
    wait_js(page, "() => (document.querySelector('#sw-train input, #sw-train textarea')?.value ?? '') == 'phantom:40'",
            "the Experiments tab following the Data tab", show="#sw-train")
    page.locator("#sw-start").click()
    wait_text(page, "#sw-status", "sweep finished", timeout_s=420)
    assert "no results yet" not in page.locator("#sw-table").inner_text()
    assert page.locator("#sw-chart .main-svg").count() > 0
