"""pages/charts.py: every chart a page draws, in one place (issue 9)."""
import ast
from pathlib import Path

import numpy as np

from pages.charts import curves_figure, loss_figure

PAGES = Path(__file__).resolve().parents[1] / "pages"


def test_no_page_builds_a_plotly_figure_of_its_own():
    """plotly is imported by pages/charts.py only: a chart written inside a page would drift from the others."""
    for path in sorted(PAGES.glob("*.py")):
        if path.name == "charts.py":
            continue
        mods = {a.name for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.Import) for a in n.names}
        mods |= {n.module or "" for n in ast.walk(ast.parse(path.read_text())) if isinstance(n, ast.ImportFrom)}
        assert not any(m.split(".")[0] == "plotly" for m in mods), path.name


def test_loss_curve_is_smoothed_and_an_empty_one_says_what_will_appear():
    empty = loss_figure([])
    assert not empty.data and "appears here" in empty.layout.annotations[0].text
    losses = list(np.linspace(1.0, 0.1, 50))
    fig = loss_figure(losses, "x loss")
    raw, smooth = fig.data
    assert list(raw.y) == losses and len(smooth.y) == 50 - 10 + 1  # a mean of 10 (a fifth of 50)
    assert np.isclose(smooth.y[0], np.mean(losses[:10])) and fig.layout.title.text == "x loss"


def test_finetune_curves_mark_the_zero_shot_dice():
    fig = curves_figure([(1, 0.9), (2, 0.7)], [(0, 0.6), (1, 0.8)], "run")
    assert [list(t.y) for t in fig.data] == [[0.9, 0.7], [0.6, 0.8]]
    assert any(s.y0 == 0.6 for s in fig.layout.shapes)  # the zero-shot line at epoch 0's Dice
    assert sum("appears here" in a.text for a in curves_figure([], []).layout.annotations) == 2
