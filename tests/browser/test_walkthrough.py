"""Tabs walked the way a person does (issue 11): open every accordion before Start, read the result.

Experiments: opening "SYN arm and grid overrides" must not turn the empty repeats/epochs into 0 (Start
failed with "Value 0 is less than minimum value 1."); Open puts the opened sweep's settings in the form.
Fine-tune SAM: a short run shows elapsed time and an estimate, then a verdict that claims "better" only
beyond noise. Guide: the quick start and the glossary are there."""
from __future__ import annotations

import pytest

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
    assert "elapsed" in page.locator("#sw-status").inner_text() or (app_work_dir / "sweeps" / "walk-a").is_dir()
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
