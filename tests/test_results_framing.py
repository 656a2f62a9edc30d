"""Honest framing of sweep results (issue 11): no "± 0.00" for a single repeat, whole-number N_real ticks."""
import pandas as pd

from pipeline.results import figure3, summarize, table1


def _rows(repeats):
    return pd.DataFrame([dict(test="heldout", augmentation=a, n_real=n, repeat=r, dice=90.0 + r + n / 10,
                              hc_abs_error_mm=2.0)
                         for a in ("none", "weak") for n in (5, 20) for r in range(repeats)])


def test_one_repeat_has_no_spread_shown():
    t = table1(summarize(_rows(1)), "heldout")
    cells = " ".join(t.astype(str).values.ravel())
    assert "±" not in cells and "(1 run)" in cells
    t3 = table1(summarize(_rows(3)), "heldout")
    assert "±" in " ".join(t3.astype(str).values.ravel())


def test_n_real_ticks_are_the_grid_values():
    fig = figure3(summarize(_rows(2)))
    assert list(fig.layout.xaxis.tickvals) == [5, 20] and list(fig.layout.xaxis.ticktext) == ["5", "20"]
