"""The path the dashboard exists for, as a new user walks it (issue 33): train a LoRA, open Generation and press
Generate without touching the LoRA list — the trained LoRA is already chosen and Generate works; reload the
page mid-way and carry on where you were."""
from __future__ import annotations

import pytest
from conftest import close_toasts, wait_for_toast

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
    set_input(page, "#gen-dataset input, #gen-dataset textarea", "ux-syn")  # (other tests use synthetic-1)
    page.locator("#gen-start").click()
    # wait_js fails at once on an error toast ("LoRA: Value: {'__type__': 'update'} is not in the list ...")
    wait_js(page, f"() => ({GOOD_IMG})('#gen-gallery') >= 2", "2 generated samples shown", timeout_s=300,
            show="#gen-summary")
    assert page.locator("#gen-lora input").input_value() == "ux-second"
    assert len(list((app_work_dir / "synthetic" / "ux-syn" / "raw").glob("*.png"))) == 2
    # a reload keeps the chosen LoRA
    page.reload()
    page.get_by_role("tab", name="Generation").click()
    wait_js(page, "() => (document.querySelector('#gen-lora input')?.value ?? '') == 'ux-second'",
            "the chosen LoRA after a reload", show="#gen-lora")


def test_reload_mid_way_and_carry_on(page, app_url, wait_text, wait_js, set_input):
    page.goto(app_url)
    page.get_by_role("tab", name="Data").click()
    set_input(page, "#data-source input", "phantom:30", commit="Enter")
    page.locator("#data-load").click()
    wait_text(page, "#data-status", "phantom:30")
    page.get_by_role("tab", name="LoRA training").click()
    wait_js(page, "() => (document.querySelector('#lora-source input, #lora-source textarea')?.value ?? '')"
                  " == 'phantom:30'", "the LoRA tab following the Data tab's source")
    set_input(page, "#lora-name input, #lora-name textarea", "reload")
    page.get_by_text("Hyper-parameters").first.click()
    page.locator("#lora-n input").wait_for(state="visible")
    set_input(page, "#lora-n input", 2)
    set_input(page, "#lora-steps input", 400)
    set_input(page, "#lora-preview-every input", 0)
    page.locator("#lora-start").click()
    wait_text(page, "#lora-status", "/400", timeout_s=180)  # training: "step k/400"

    page.reload()
    # the data source is the one loaded before the reload, here and in the LoRA tab
    page.get_by_role("tab", name="Data").click()
    wait_text(page, "#data-status", "restored")
    assert "phantom:30" in page.locator("#data-status").inner_text()
    page.get_by_role("tab", name="LoRA training").click()
    wait_js(page, "() => (document.querySelector('#lora-source input, #lora-source textarea')?.value ?? '')"
                  " == 'phantom:30'", "the LoRA tab's source after the reload", show="#lora-source")
    # the training still runs and the page shows it
    wait_js(page, "() => /step \\d+\\/400/.test(document.querySelector('#lora-status')?.innerText ?? '')",
            "the running training shown after the reload", show="#lora-status")
    # a second Start says it is already running (it did nothing visible before)
    page.locator("#lora-start").click()
    wait_for_toast(page, "already running")
    close_toasts(page)
    # Stop reaches the training started before the reload
    page.locator("#lora-stop").click()
    wait_js(page, "() => (document.querySelector('#lora-status')?.innerText ?? '').includes('stopped at step')",
            "the training stopped", timeout_s=120, show="#lora-status")
    # carry on: Start with the same name resumes (same source, no "other settings" refusal)
    set_input(page, "#lora-name input, #lora-name textarea", "reload")
    page.locator("#lora-start").click()
    wait_js(page, "() => /resuming|step \\d+\\/400/.test(document.body.innerText)", "the training resumed",
            timeout_s=180, show="#lora-status")
    page.locator("#lora-stop").click()
    wait_text(page, "#lora-status", "stopped at step", timeout_s=120)
    # Stop with nothing running says so
    page.locator("#lora-stop").click()
    wait_text(page, "#lora-status", "nothing is training")
