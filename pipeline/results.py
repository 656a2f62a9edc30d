"""Sweep results: the tidy CSV, the Table-1-shaped summary, the Figure-3-shaped chart, the paper beside ours.

The tidy CSV has one row per (cell, test source):
    augmentation, n_real, repeat, test, n_test, dice, dice_std, hc_abs_error_mm, run
where `dice` is the mean Dice (%) over the test images of that cell.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from .config import ASSETS

AUG_ORDER = ["none", "weak", "strong", "syn"]
AUG_LABEL = {"none": "None", "weak": "WA", "strong": "SA", "syn": "SYN"}
RESULT_COLUMNS = ["augmentation", "n_real", "repeat", "test", "n_test", "dice", "dice_std",
                  "hc_abs_error_mm", "run"]
PAPER_TABLE = ASSETS / "reference" / "paper_table1.csv"


def load_results(path: str | Path) -> pd.DataFrame:
    path = Path(path)
    if not path.is_file():
        return pd.DataFrame(columns=RESULT_COLUMNS)
    return pd.read_csv(path)


def summarize(df: pd.DataFrame) -> pd.DataFrame:
    """Mean and std of Dice over repeats, per (test, augmentation, n_real)."""
    if df.empty:
        return pd.DataFrame(columns=["test", "augmentation", "n_real", "dice_mean", "dice_std", "repeats",
                                     "hc_abs_error_mm"])
    g = df.groupby(["test", "augmentation", "n_real"], sort=False)
    out = g.agg(dice_mean=("dice", "mean"), dice_std=("dice", "std"), repeats=("dice", "size"),
                hc_abs_error_mm=("hc_abs_error_mm", "mean")).reset_index()
    out["dice_std"] = out["dice_std"].fillna(0.0)  # one repeat: no spread yet
    out["aug_rank"] = out["augmentation"].map({a: i for i, a in enumerate(AUG_ORDER)})
    return out.sort_values(["test", "aug_rank", "n_real"]).drop(columns="aug_rank").reset_index(drop=True)


def load_paper_reference(path: str | Path = PAPER_TABLE) -> pd.DataFrame:
    return pd.read_csv(path, comment="#")


def table1(summary: pd.DataFrame, test: str, markdown_bold: bool = True) -> pd.DataFrame:
    """Table-1 shape for one test source: rows = augmentation, columns = N_real, cells 'mean ± std';
    the best mean per column in bold."""
    s = summary[summary["test"] == test]
    if s.empty:
        return pd.DataFrame()
    cols = sorted(s["n_real"].unique())
    rows = [a for a in AUG_ORDER if a in set(s["augmentation"])]
    best = s.groupby("n_real")["dice_mean"].max()
    data = {}
    for n in cols:
        col = []
        for a in rows:
            r = s[(s["augmentation"] == a) & (s["n_real"] == n)]
            if r.empty:
                col.append("—")
                continue
            m, sd = float(r["dice_mean"].iloc[0]), float(r["dice_std"].iloc[0])
            cell = f"{m:.2f} ± {sd:.2f}"
            if markdown_bold and np.isclose(m, best[n]):
                cell = f"**{cell}**"
            col.append(cell)
        data[f"N_real={n}"] = col
    return pd.DataFrame(data, index=[AUG_LABEL.get(a, a) for a in rows]).rename_axis("augmentation")


def paper_beside(summary: pd.DataFrame, paper: pd.DataFrame, test: str, paper_test: str,
                 paper_train: str = "HC18") -> pd.DataFrame:
    """Ours and the paper's Dice for the same (augmentation, N_real) cells; the paper's missing cells
    are shown as '—' (only the cells the paper states are stored)."""
    s = summary[summary["test"] == test]
    p = paper[(paper["test"] == paper_test) & (paper["train"] == paper_train)]
    rows = []
    for _, r in s.iterrows():
        hit = p[(p["augmentation"] == r["augmentation"]) & (p["n_real"] == r["n_real"])]
        rows.append({"augmentation": AUG_LABEL.get(r["augmentation"], r["augmentation"]),
                     "n_real": int(r["n_real"]),
                     "ours": f"{r['dice_mean']:.2f} ± {r['dice_std']:.2f}",
                     f"paper ({paper_train}→{paper_test})": f"{float(hit['dice_mean'].iloc[0]):.2f}"
                     if not hit.empty else "—"})
    return pd.DataFrame(rows)


def figure3(summary: pd.DataFrame, test: str | None = None, paper: pd.DataFrame | None = None,
            paper_test: str = "ES"):
    """Figure-3 shape (plotly): mean Dice ± std vs N_real, one line per augmentation; the paper's
    published points as hollow markers where stored."""
    import plotly.graph_objects as go
    fig = go.Figure()
    if test is None and not summary.empty:
        test = summary["test"].iloc[0]
    s = summary[summary["test"] == test] if test is not None else summary
    colors = {"none": "#636efa", "weak": "#00cc96", "strong": "#ab63fa", "syn": "#ef553b"}
    for a in AUG_ORDER:
        d = s[s["augmentation"] == a].sort_values("n_real")
        if d.empty:
            continue
        fig.add_trace(go.Scatter(x=d["n_real"], y=d["dice_mean"], error_y=dict(type="data", array=d["dice_std"]),
                                 mode="lines+markers", name=AUG_LABEL[a], line=dict(color=colors[a])))
        if paper is not None:
            p = paper[(paper["augmentation"] == a) & (paper["test"] == paper_test)]
            if not p.empty:
                fig.add_trace(go.Scatter(x=p["n_real"], y=p["dice_mean"], mode="markers",
                                         name=f"{AUG_LABEL[a]} (paper, →{paper_test})",
                                         marker=dict(symbol="diamond-open", size=11, color=colors[a])))
    fig.update_layout(title=f"Dice vs number of real images (test: {test})", xaxis_title="N_real (log)",
                      yaxis_title="Dice (%)", xaxis_type="log", template="plotly_white", height=420,
                      legend=dict(orientation="h", y=-0.2))
    return fig


def figure3_png(summary: pd.DataFrame, path: str | Path, test: str | None = None,
                paper: pd.DataFrame | None = None, paper_test: str = "ES") -> Path:
    """The same chart as a static PNG (matplotlib, no browser needed) for docs/results.md."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .fileio import atomic_write
    if test is None and not summary.empty:
        test = summary["test"].iloc[0]
    s = summary[summary["test"] == test]
    fig, ax = plt.subplots(figsize=(7, 4.2), dpi=120)
    colors = {"none": "#636efa", "weak": "#00cc96", "strong": "#ab63fa", "syn": "#ef553b"}
    for a in AUG_ORDER:
        d = s[s["augmentation"] == a].sort_values("n_real")
        if d.empty:
            continue
        ax.errorbar(d["n_real"], d["dice_mean"], yerr=d["dice_std"], marker="o", capsize=3,
                    label=AUG_LABEL[a], color=colors[a])
        if paper is not None:
            p = paper[(paper["augmentation"] == a) & (paper["test"] == paper_test)]
            if not p.empty:
                ax.scatter(p["n_real"], p["dice_mean"], marker="D", facecolors="none", edgecolors=colors[a],
                           s=60, label=f"{AUG_LABEL[a]} (paper, HC18→{paper_test})")
    ax.set_xscale("log")
    ns = sorted(s["n_real"].unique())
    ax.set_xticks(ns)
    ax.set_xticklabels([str(int(n)) for n in ns])
    ax.minorticks_off()
    ax.set_xlabel("N_real (real training images)")
    ax.set_ylabel("Dice (%)")
    ax.set_title(f"Dice vs N_real (test: {test})")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return Path(path)


def markdown_table(df: pd.DataFrame, index: bool = True) -> str:
    """A GitHub-markdown table (no extra dependency)."""
    if df.empty:
        return "_no results yet_"
    d = df.reset_index() if index else df
    head = "| " + " | ".join(str(c) for c in d.columns) + " |"
    sep = "|" + "|".join("---" for _ in d.columns) + "|"
    body = ["| " + " | ".join(str(v) for v in row) + " |" for row in d.itertuples(index=False)]
    return "\n".join([head, sep, *body])
