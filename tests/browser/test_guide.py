"""The Guide reads cleanly (issue 33): the glossary's word column broke words across lines ("Wor d", "LoR A")."""
from __future__ import annotations

import pytest

pytestmark = pytest.mark.browser

LINES_PER_CELL = """() => [...document.querySelectorAll('table')]
    .filter(t => (t.querySelector('th')?.innerText ?? '').trim() == 'Word')
    .flatMap(t => [...t.querySelectorAll('tr > :first-child')])
    .map(td => { const r = document.createRange(); r.selectNodeContents(td);
                 const tops = new Set([...r.getClientRects()].filter(x => x.width > 0).map(x => Math.round(x.top)));
                 return [td.innerText.trim(), tops.size, td.innerText.trim().split(/\\s+/).length]; })"""


def test_glossary_words_are_never_broken(page, app_url):
    page.goto(app_url)
    page.get_by_text("Words used on the tabs").first.wait_for(timeout=60_000)
    cells = page.evaluate(LINES_PER_CELL)
    assert len(cells) > 10, cells
    broken = [(word, lines) for word, lines, words in cells if lines > words]
    assert not broken, f"glossary words broken across lines: {broken}"
