"""Every chart a page draws, in one place (issue 9): the Data tab's trimester / head-circumference chart and
the live training curves of the LoRA and Fine-tune SAM tabs. Plotly figures for gr.Plot; an empty one says
what will appear instead of showing bare axes.

One figure stays in the library: the Experiments tab's Figure 3 is pipeline.results.figure3, beside its
matplotlib twin (figure3_png, for docs/results.md) with which it shares the paper's points, colours and labels.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from pipeline.data import SampleMeta, trimester_counts
from pipeline.masks import TRIMESTERS

TRIMESTER_COLORS = {"first": "#4c9be8", "second": "#3cb371", "third": "#e8884c", "unknown": "#9e9e9e"}


def loss_figure(losses: list[float], title: str = "LoRA loss"):
    import plotly.graph_objects as go
    fig = go.Figure()
    if losses:
        x = np.arange(1, len(losses) + 1)
        fig.add_scatter(x=x, y=losses, mode="lines", name="loss", line=dict(width=1, color="#9bb"))
        k = max(1, min(25, len(losses) // 5))
        smooth = np.convolve(losses, np.ones(k) / k, mode="valid")
        fig.add_scatter(x=x[k - 1:], y=smooth, mode="lines", name=f"mean of {k}", line=dict(width=2.5, color="#d62"))
    fig.update_layout(title=title, xaxis_title="step", yaxis_title="MSE (noise)", height=320,
                      margin=dict(l=50, r=20, t=40, b=40), legend=dict(orientation="h", y=1.12))
    fig.update_xaxes(rangemode="nonnegative", tickformat="d")  # steps are whole numbers from 0
    if not losses:  # an empty plot says what will appear, instead of showing axes from -1 to 6
        fig.update_xaxes(range=[0, 1], showticklabels=False)
        fig.update_yaxes(range=[0, 1], showticklabels=False)
        fig.add_annotation(text="the loss curve appears here when training starts", showarrow=False,
                           x=0.5, y=0.5, xref="paper", yref="paper")
    return fig


def curves_figure(steps: list[tuple[int, float]], epochs: list[tuple[int, float]], title: str = ""):
    """Training loss per step (left axis) and validation Dice per epoch (right axis), one figure."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots
    fig = make_subplots(rows=1, cols=2, subplot_titles=("training loss (Dice + CE) per step",
                                                       "validation Dice per epoch"))
    if steps:
        fig.add_scatter(x=[s for s, _ in steps], y=[v for _, v in steps], mode="lines", name="loss",
                        line=dict(color="#d62", width=1.5), row=1, col=1)
    if epochs:
        fig.add_scatter(x=[e for e, _ in epochs], y=[v for _, v in epochs], mode="lines+markers",
                        name="val Dice", line=dict(color="#27a", width=2), row=1, col=2)
        fig.add_hline(y=epochs[0][1], line=dict(color="#888", dash="dash"), row=1, col=2,
                      annotation_text="zero-shot", annotation_position="bottom right")
    fig.update_xaxes(title_text="step", row=1, col=1, rangemode="nonnegative", tickformat="d")
    # whole epochs only (fractional ticks like 0.5 read as half an epoch)
    fig.update_xaxes(title_text="epoch (0 = zero-shot)", row=1, col=2, rangemode="nonnegative", tickformat="d",
                     dtick=1 if epochs and epochs[-1][0] <= 20 else None)
    for col, data, what in ((1, steps, "the loss curve"), (2, epochs, "validation Dice")):
        if not data:  # say what will appear, instead of empty axes from -1 to 6
            fig.update_xaxes(range=[0, 1], showticklabels=False, row=1, col=col)
            fig.update_yaxes(range=[0, 1], showticklabels=False, row=1, col=col)
            # on short lines: each sits in half the figure, and one long line ran into the other (issue 33)
            fig.add_annotation(text=f"{what}<br>appears here<br>during training", showarrow=False, x=0.5, y=0.5,
                               xref=f"x{'' if col == 1 else col} domain", yref=f"y{'' if col == 1 else col} domain")
    fig.update_layout(title=title, height=340, margin=dict(l=50, r=20, t=60, b=40), showlegend=False)
    return fig


def data_figure(metas: Sequence[SampleMeta], title: str = ""):
    """The Data tab's chart: trimester counts (bars) beside the head-circumference histogram per trimester."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    counts = trimester_counts(metas)
    n = max(1, len(metas))
    fig = make_subplots(rows=1, cols=2, column_widths=[0.35, 0.65], horizontal_spacing=0.1,
                        subplot_titles=("Trimester (Hadlock GA from HC)", "Head circumference (mm)"))
    cats = [t for t in (*TRIMESTERS, "unknown") if t != "unknown" or counts["unknown"]]
    fig.add_trace(go.Bar(x=cats, y=[counts[t] for t in cats],
                         marker_color=[TRIMESTER_COLORS[t] for t in cats],
                         text=[f"{counts[t]} ({100 * counts[t] / n:.0f}%)" for t in cats], textposition="auto",
                         showlegend=False, hovertemplate="%{x}: %{y}<extra></extra>"), row=1, col=1)
    any_hc = False
    for t in TRIMESTERS:
        hc = [m.hc_mm for m in metas if m.trimester == t and m.hc_mm is not None]
        if hc:
            any_hc = True
            fig.add_trace(go.Histogram(x=hc, name=t, marker_color=TRIMESTER_COLORS[t], xbins=dict(size=10),
                                       hovertemplate="HC %{x} mm: %{y}<extra>" + t + "</extra>"), row=1, col=2)
    if not any_hc:
        x0, x1 = fig.layout.xaxis2.domain  # the middle of the (empty) histogram panel
        fig.add_annotation(text="no head circumference known for this source", showarrow=False,
                           xref="paper", yref="paper", x=(x0 + x1) / 2, y=0.5)
    fig.update_layout(barmode="stack", height=320, margin=dict(l=40, r=20, t=60, b=40),
                      legend=dict(orientation="h", yanchor="bottom", y=1.12, xanchor="right", x=1,
                                  traceorder="normal"),
                      title=dict(text=title, x=0.01, y=0.98, font=dict(size=13)) if title else None,
                      template="plotly_white")
    fig.update_yaxes(title_text="images", row=1, col=1)
    fig.update_yaxes(title_text="images", row=1, col=2)
    return fig
