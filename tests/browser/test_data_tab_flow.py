"""The Data tab walked as a person does (issue 11): filter, then look at the detail panel; read the summary;
open a new browser page and be offered the source loaded before."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser


def test_filter_then_detail_summary_and_new_page(page, app_url, set_input):
    from pipeline.data import open_source
    metas = open_source("phantom:24").metas
    page.goto(app_url)
    page.get_by_role("tab", name="Data").click()
    page.wait_for_function("() => document.querySelectorAll('#data-gallery img').length >= 24")
    # look at a sample, then filter to another trimester: the panel must not keep the filtered-out sample
    first = metas[0]
    other = next(m.trimester for m in metas if m.trimester and m.trimester != first.trimester)
    page.wait_for_function("(n) => (document.querySelector('#data-headline')?.innerText ?? '').includes(n)", arg=first.name)
    page.locator("#data-gallery").get_by_text("Show trimester").count()  # the radio sits above the gallery
    page.get_by_label(other, exact=True).check()
    want = next(m.name for m in metas if m.trimester == other)
    page.wait_for_function("(n) => (document.querySelector('#data-headline')?.innerText ?? '').includes(n)", arg=want,
                           timeout=60_000)
    assert f"{other} trimester" in page.locator("#data-headline").inner_text()

    # the summary reads as sentences and a table, not JSON
    page.get_by_text("Summary and HC check").click()
    page.wait_for_function("() => (document.querySelector('#data-summary-text')?.innerText ?? '').includes('images')")
    text = page.locator("#data-summary-text").inner_text()
    assert "24 images" in text and "{" not in text and "trimester" in text

    # load another source; a new page of this browser offers it instead of silently showing phantoms
    set_input(page, "#data-source input", "phantom:7:3", commit="Enter")
    page.locator("#data-load").click()
    page.wait_for_function("() => (document.querySelector('#data-status')?.innerText ?? '').includes('phantom:7:3')")
    page.wait_for_timeout(1000)  # the browser stores the source after the load finishes
    second = page.context.new_page()
    second.goto(app_url)
    second.get_by_role("tab", name="Data").click()
    second.wait_for_function("() => (document.querySelector('#data-status')?.innerText ?? '').includes('phantom:7:3')",
                             timeout=60_000)
    assert "Load" in second.locator("#data-status").inner_text()
    assert second.locator("#data-source input").input_value() == "phantom:7:3"
