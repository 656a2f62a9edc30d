"""The Experiments tab in a real browser: start a tiny sweep and watch the table and chart fill in."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser


def test_experiments_tab_runs_a_tiny_sweep(page, app_url, app_work_dir, wait_text, set_input):
    page.goto(app_url)
    page.get_by_role("tab", name="Experiments").click()
    page.locator("#sw-start").wait_for()
    set_input(page, "#sw-name textarea, #sw-name input", "browser-smoke")
    # the smoke preset: two cells (None, WA) with N_real 3, one epoch, 4 test images
    page.locator("#sw-preset input").click()
    page.get_by_role("option", name="smoke").click()
    set_input(page, "#sw-train textarea, #sw-train input", "phantom:24")
    page.locator("#sw-start").click()
    # the first finished cell fills the table and draws the chart; the sweep then finishes
    wait_text(page, "#sw-table", "N_real=3", timeout_s=300)
    page.wait_for_function("() => document.querySelectorAll('#sw-chart .main-svg .scatterlayer .trace').length > 0",
                           timeout=60_000)
    wait_text(page, "#sw-status", "sweep finished", timeout_s=300)
    table = page.locator("#sw-table").inner_text()
    assert "None" in table and "WA" in table and "Zero-shot" in table
    # the paper's cells stand beside ours, each column named by the paper's own train/test pair
    assert "ours (phantom→phantom)" in table and "paper (HC18→ES)" in table and "paper (ES→AF)" in table
    assert (app_work_dir / "sweeps" / "browser-smoke" / "results.csv").is_file()
    assert "Traceback" not in page.content()
