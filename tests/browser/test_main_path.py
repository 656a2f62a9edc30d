"""The path the dashboard exists for, as a new user walks it (issue 33): train a LoRA, open Generation and press
Generate without touching the LoRA list — the trained LoRA is already chosen and Generate works; reload the
page mid-way and carry on where you were."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

GOOD_IMG = ("(sel) => [...document.querySelectorAll(sel + ' img')]"
            ".filter(i => i.complete && i.naturalWidth > 0).length")


def _train_tiny_lora(page, name, wait_text, set_input):
    page.get_by_role("tab", name="LoRA training").click()
    set_input(page, "#lora-name input, #lora-name textarea", name)
    page.get_by_text("Hyper-parameters").first.click()  # open the accordion
    page.locator("#lora-n input").wait_for(state="visible")
    set_input(page, "#lora-n input", 2)
    set_input(page, "#lora-steps input", 3)
    set_input(page, "#lora-preview-every input", 2)  # a preview: the LoRA is listed before it is finished
    page.locator("#lora-start").click()
    wait_text(page, "#lora-status", "saved", timeout_s=420)
    assert f"{name}-second" in page.locator("#lora-status").inner_text()


def test_train_then_generate_without_touching_the_lora_list(page, app_url, app_work_dir, wait_text, wait_js,
                                                            set_input):
    page.goto(app_url)
    _train_tiny_lora(page, "ux", wait_text, set_input)
    page.get_by_role("tab", name="Generation").click()
    # the LoRA just trained is the one chosen: the user sees its name in the list, not a blank field
    wait_js(page, "() => (document.querySelector('#gen-lora input')?.value ?? '') == 'ux-second'",
            "the Generation tab's LoRA list showing the LoRA just trained", show="#gen-lora")
    set_input(page, "#gen-n input", 2)
    page.locator("#gen-start").click()
    # wait_js fails at once on an error toast ("LoRA: Value: {'__type__': 'update'} is not in the list ...")
    wait_js(page, f"() => ({GOOD_IMG})('#gen-gallery') >= 2", "2 generated samples shown", timeout_s=300,
            show="#gen-summary")
    assert page.locator("#gen-lora input").input_value() == "ux-second"
    assert len(list((app_work_dir / "synthetic" / "synthetic-1" / "raw").glob("*.png"))) == 2
