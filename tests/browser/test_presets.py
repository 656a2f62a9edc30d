"""Presets where settings are many (issue 33): the LoRA tab and the Generation tab's sampler open on a preset
that says what it costs on this machine; choosing one sets the (folded) expert fields."""
from __future__ import annotations

import re

import pytest

pytestmark = pytest.mark.browser


def _radio(group, starts):
    """The radio input of `group` whose label starts with `starts` (what the user reads)."""
    return group.locator("label").filter(has_text=re.compile(r"^\s*" + re.escape(starts))).locator("input")


def test_lora_and_sampler_presets_set_the_expert_fields(page, app_url, wait_js):
    page.goto(app_url)
    page.get_by_role("tab", name="LoRA training").click()
    preset = page.locator("#lora-preset")
    preset.wait_for()
    text = preset.inner_text()
    assert "Quick (CPU)" in text and "Paper" in text, text
    assert re.search(r"Quick \(CPU\): \d+ steps.*about .+ RAM", text, re.S), text  # its measured cost
    assert _radio(preset, "Paper").is_checked()
    _radio(preset, "Quick").check()
    page.get_by_text("Hyper-parameters").first.click()  # the expert fields stay, folded until opened
    page.locator("#lora-steps input").wait_for(state="visible")
    wait_js(page, "() => document.querySelector('#lora-steps input').value == '100'", "Quick's 100 steps")
    _radio(preset, "Paper").check()
    wait_js(page, "() => document.querySelector('#lora-steps input').value == '300'", "Paper's 300 steps")

    page.get_by_role("tab", name="Generation").click()
    sampler = page.locator("#gen-preset")
    sampler.wait_for()
    assert "8 images in about" in sampler.inner_text() and "Paper" in sampler.inner_text()
    assert _radio(sampler, "This base's own").is_checked()
    _radio(sampler, "Paper").check()
    page.get_by_text("Sampler and extractor settings").click()
    page.locator("#gen-ellipse-guidance textarea, #gen-ellipse-guidance input").first.wait_for(state="visible")
    wait_js(page, "() => (document.querySelector('#gen-ellipse-guidance textarea, #gen-ellipse-guidance input')"
                  "?.value ?? '') == 'off'", "Paper: no ellipse guidance")
    wait_js(page, "() => document.querySelector('#gen-guidance-until input')?.value == '1'",
            "Paper: every step guided")
