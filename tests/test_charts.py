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


# ----------------------------------------------------------------------------- the Experiments tab's Figure 3
def _summary(means, repeats=1, std=0.0):
    """A sweep summary of one arm (None) at N_real 5, 20, ... with these mean Dice values."""
    import pandas as pd
    return pd.DataFrame([dict(test="heldout", augmentation="none", n_real=n, dice_mean=m, dice_std=std,
                              repeats=repeats, hc_abs_error_mm=2.0)
                         for n, m in zip((5, 20, 50, 100), means)])


def test_figure3_without_finished_cells_is_a_note_not_an_empty_log_axis():
    import pandas as pd
    from pipeline.results import figure3
    fig = figure3(pd.DataFrame(columns=["test", "augmentation", "n_real", "dice_mean", "dice_std", "repeats"]))
    assert not fig.data
    assert fig.layout.xaxis.visible is False and fig.layout.xaxis.type != "log"
    assert any("no finished cells yet" in a.text for a in fig.layout.annotations)


def test_figure3_one_run_has_no_error_bar_and_says_1_run():
    from pipeline.results import figure3
    (trace,) = figure3(_summary([80.0, 85.0], repeats=1)).data
    assert trace.error_y.visible is False
    assert all("1 run" in t and "±" not in t for t in trace.text)
    (trace3,) = figure3(_summary([80.0, 85.0], repeats=3, std=1.5)).data
    assert trace3.error_y.visible is not False and all("± 1.50" in t and "3 runs" in t for t in trace3.text)


def test_figure3_y_axis_spans_a_few_dice_points_and_labels_a_tiny_difference():
    from pipeline.results import MIN_DICE_SPAN, figure3
    fig = figure3(_summary([94.50, 94.51]))
    lo, hi = fig.layout.yaxis.range
    assert hi - lo >= MIN_DICE_SPAN >= 3 and lo <= 94.50 and hi >= 94.51 and hi <= 100
    assert any("within 0.01 Dice points" in a.text for a in fig.layout.annotations)
    near_top = figure3(_summary([99.9, 99.95])).layout.yaxis.range
    assert near_top[1] == 100 and near_top[1] - near_top[0] >= MIN_DICE_SPAN
    wide = figure3(_summary([40.0, 90.0]))  # a real spread keeps plotly's own range and no note
    assert wide.layout.yaxis.range is None and not wide.layout.annotations


def test_paper_beside_says_1_run_instead_of_plus_minus_zero():
    from pipeline.results import load_paper_reference, paper_beside, paper_comparison
    paper = load_paper_reference()
    cmp = paper_comparison(paper, "phantom:24", "heldout")
    one = paper_beside(_summary([80.0, 85.0], repeats=1), paper, "heldout", cmp)
    ours = one[[c for c in one.columns if c.startswith("ours")][0]]
    assert list(ours) == ["80.00 (1 run)", "85.00 (1 run)"]
    three = paper_beside(_summary([80.0], repeats=3, std=1.25), paper, "heldout", cmp)
    assert three[[c for c in three.columns if c.startswith("ours")][0]].iloc[0] == "80.00 ± 1.25"


def test_empty_finetune_curves_say_what_will_appear_without_overlapping():
    """Fine-tune's two placeholders sit in half the figure each: on short lines, so they cannot run into each
    other (one 45-character line each printed over the other, issue 33)."""
    from pages.charts import curves_figure
    notes = [a.text for a in curves_figure([], []).layout.annotations if "appears here" in (a.text or "")]
    assert len(notes) == 2
    assert all(max(len(line) for line in t.split("<br>")) <= 20 for t in notes), notes
