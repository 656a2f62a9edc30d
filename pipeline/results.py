"""Sweep results: the tidy CSV, the Table-1-shaped summary, the Figure-3-shaped chart, the paper beside ours.

The tidy CSV has one row per (cell, test source):
    augmentation, n_real, repeat, test, n_test, dice, dice_std, hc_abs_error_mm, run
where `dice` is the mean Dice (%) over the test images of that cell.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from .config import ASSETS

# the arms' table (pipeline/arms.py), re-exported: results.csv's `augmentation` column holds its keys
from .arms import ARMS, AUG_LABEL, AUG_ORDER, PAPER_ARMS, SYN_ARMS  # noqa: F401
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
    return pd.read_csv(path, comment="#", dtype={"n_real": int})


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
            m = float(r["dice_mean"].iloc[0])
            cell = mean_std_text(r.iloc[0])  # "(1 run)", never "± 0.00" (issue 11)
            if markdown_bold and np.isclose(m, best[n]) and (s["n_real"] == n).sum() > 1:
                cell = f"**{cell}**"
            col.append(cell)
        data[f"N_real={n}"] = col
    return pd.DataFrame(data, index=[AUG_LABEL.get(a, a) for a in rows]).rename_axis("augmentation")


def verdict(summary: pd.DataFrame, test: str, n_real: int, arm: str = "syn", against: str = "none",
            arm_n_real: int | None = None) -> dict | None:
    """Does `arm` beat `against` at N_real on one test source? The difference of mean Dice (points) and its
    standard error sqrt(s_a²/n_a + s_b²/n_b) over repeats; "helps" beyond +2 SE, "hurts" below −2 SE, else
    "no difference"; "too few repeats" with fewer than 2 of either. `arm_n_real`: the arm's own N_real when it
    differs (SYN only is recorded at 0). None when either cell is missing."""
    s = summary[summary["test"] == test]
    a = s[(s["augmentation"] == arm) & (s["n_real"] == (n_real if arm_n_real is None else arm_n_real))]
    b = s[(s["augmentation"] == against) & (s["n_real"] == n_real)]
    if a.empty or b.empty:
        return None
    a, b = a.iloc[0], b.iloc[0]
    na, nb = int(a["repeats"]), int(b["repeats"])
    diff = float(a["dice_mean"] - b["dice_mean"])
    if min(na, nb) < 2:
        return {"diff": diff, "se": None, "n": (na, nb), "word": "too few repeats to tell"}
    se = float(np.sqrt(a["dice_std"] ** 2 / na + b["dice_std"] ** 2 / nb))
    word = "helps" if diff > 2 * se else ("hurts" if diff < -2 * se else "no difference")
    return {"diff": diff, "se": se, "n": (na, nb), "word": word}


def verdict_lines(summary: pd.DataFrame, test: str) -> list[str]:
    """One line per arm with a comparison (pipeline/arms.py: SYN and SYN only against None, SYN + WA and SYN
    only + WA against WA) and N_real where both ran (a synthetic-only arm against each N_real), e.g.
    'N_real 5: SYN − None = +1.20 ± 0.35 Dice points (SE, 3 vs 3 repeats): helps'."""
    s = summary[summary["test"] == test]
    out = []
    against_arms = {a.against for a in ARMS.values() if a.against}
    ns = sorted(int(n) for n in s.loc[s["augmentation"].isin(against_arms), "n_real"].unique())
    # grouped by what they are weighed against: SYN, SYN only (against None), then SYN + WA, SYN only + WA
    weighed = sorted((k for k, a in ARMS.items() if a.against), key=lambda k: AUG_ORDER.index(ARMS[k].against))
    for arm, against, arm_n in ((k, ARMS[k].against, None if ARMS[k].real else 0) for k in weighed):
        for n in ns:
            v = verdict(summary, test, n, arm, against, arm_n)
            if v is None:
                continue
            se = "SE unknown" if v["se"] is None else f"± {v['se']:.2f} (SE)"
            out.append(f"N_real {n}: {AUG_LABEL[arm]} − {AUG_LABEL[against]} = {v['diff']:+.2f} {se} Dice points over "
                       f"{v['n'][0]} vs {v['n'][1]} repeats: **{v['word']}**")
    return out


PAPER_DATASETS = ("HC18", "ES", "AF")  # the paper's three datasets, named as in its Table 1


def dataset_label(spec: str, train_spec: str | None = None) -> str:
    """The name a data source goes by in a Table-1 pair: `hc18:` -> HC18, a `folder:` whose last part is
    named ES / AF / HC18 (any case) -> that name, `heldout` -> the train source's name (it is a split
    of it), phantoms -> 'phantom', any other folder -> its folder name (never one of the paper's names)."""
    if spec == "heldout":
        return dataset_label(train_spec) if train_spec else "heldout"
    kind, _, arg = (spec or "").partition(":")
    kind = kind.lower()
    if kind == "hc18":
        return "HC18"
    if kind == "phantom":
        return "phantom"
    name = Path(arg.rstrip("/\\")).name if kind == "folder" else spec
    return name.upper() if name.upper() in PAPER_DATASETS else name


@dataclass(frozen=True)
class PaperComparison:
    """Which of the paper's train/test pairs stand beside one of our (train, test) pairs, and how alike
    they are: 'same' (the paper's own pair), 'other test set' (same train data, the paper tested
    elsewhere) or 'other data' (nothing of ours is in the paper)."""
    ours: tuple[str, str]
    pairs: tuple[tuple[str, str], ...]
    relation: str

    @property
    def note(self) -> str:
        ours = f"{self.ours[0]}→{self.ours[1]}"
        shown = ", ".join(f"{a}→{b}" for a, b in self.pairs)
        if self.relation == "same":
            return f"the paper's numbers for the same train/test pair ({shown})"
        if self.relation == "other test set":
            return (f"the paper has no {ours} numbers; shown: its {shown} (same train data, another test "
                    f"set: not like with like)")
        return f"the paper has no {ours} numbers; shown: all its pairs ({shown}), on other data than ours"


def paper_pairs(paper: pd.DataFrame) -> list[tuple[str, str]]:
    return list(dict.fromkeys(zip(paper["train"], paper["test"])))


def paper_comparison(paper: pd.DataFrame, train_spec: str, test: str) -> PaperComparison:
    """The paper's pairs to show beside our train source and one test source (a results.csv `test`)."""
    ours = (dataset_label(train_spec), dataset_label(test, train_spec))
    pairs = paper_pairs(paper)
    if ours in pairs:
        return PaperComparison(ours, (ours,), "same")
    same_train = tuple(p for p in pairs if p[0] == ours[0])
    if same_train:
        return PaperComparison(ours, same_train, "other test set")
    return PaperComparison(ours, tuple(pairs), "other data")


def paper_cell(paper: pd.DataFrame, pair: tuple[str, str], augmentation: str, n_real: int) -> str:
    """One Table-1 cell 'mean ± std' as printed, or '—' where the paper has none (the arms at 500, or an
    N_real it did not run)."""
    hit = paper[(paper["train"] == pair[0]) & (paper["test"] == pair[1]) & (paper["augmentation"] == augmentation)
                & (paper["n_real"] == int(n_real))]
    if hit.empty:
        return "—"
    m, sd = hit["dice_mean"].iloc[0], hit["dice_std"].iloc[0]
    return f"{m:.2f} ± {sd:.2f}" if pd.notna(sd) else f"{m:.2f}"


def mean_std_text(row) -> str:
    """One of our cells as 'mean ± std', or 'mean (1 run)': one repeat has no spread, and "± 0.00" would
    claim a measured zero."""
    if "repeats" in row and int(row["repeats"]) < 2:
        return f"{row['dice_mean']:.2f} (1 run)"
    return f"{row['dice_mean']:.2f} ± {row['dice_std']:.2f}"


def paper_beside(summary: pd.DataFrame, paper: pd.DataFrame, test: str, comparison: PaperComparison) -> pd.DataFrame:
    """Every cell of ours for one test source, and beside it the paper's same (augmentation, N_real) cell
    for each pair of the comparison, in its own column labelled by the paper's train/test pair."""
    s = summary[summary["test"] == test]
    rows = []
    for _, r in s.iterrows():
        row = {"augmentation": AUG_LABEL.get(r["augmentation"], r["augmentation"]), "n_real": int(r["n_real"]),
               f"ours ({comparison.ours[0]}→{comparison.ours[1]})": mean_std_text(r)}
        for pair in comparison.pairs:
            row[f"paper ({pair[0]}→{pair[1]})"] = paper_cell(paper, pair, r["augmentation"], r["n_real"])
        rows.append(row)
    return pd.DataFrame(rows)


_COLORS = {k: a.color for k, a in ARMS.items()}
_PLOTLY_SYMBOLS = ["diamond-open", "square-open", "triangle-up-open", "circle-open"]
_MPL_MARKERS = ["D", "s", "^", "o"]


def _paper_points(paper: pd.DataFrame, pair: tuple[str, str], augmentation: str, n_reals) -> pd.DataFrame:
    """The paper's points of one arm and pair at the N_real values our sweep has (like with like)."""
    p = paper[(paper["train"] == pair[0]) & (paper["test"] == pair[1]) & (paper["augmentation"] == augmentation)]
    return p[p["n_real"].isin([int(n) for n in n_reals])].sort_values("n_real")


def _title(test, comparison: PaperComparison | None) -> str:
    t = f"Dice vs number of real images (ours: {comparison.ours[0]}→{comparison.ours[1]})" if comparison \
        else f"Dice vs number of real images (test: {test})"
    if comparison is not None and comparison.relation != "same":
        t += (f"<br><sup>paper's points: {', '.join(a + '→' + b for a, b in comparison.pairs)} "
              f"({comparison.relation} than ours)</sup>")
    return t


def figure3(summary: pd.DataFrame, test: str | None = None, paper: pd.DataFrame | None = None,
            comparison: PaperComparison | None = None):
    """Figure-3 shape (plotly): our mean Dice ± std vs N_real, one line per augmentation; with `paper`
    and `comparison`, the paper's published points at our N_real values as hollow markers, one symbol
    per paper train/test pair, each named by its pair (and the title says when it is not our pair)."""
    import plotly.graph_objects as go
    fig = go.Figure()
    if test is None and not summary.empty:
        test = summary["test"].iloc[0]
    s = summary[summary["test"] == test] if test is not None else summary
    if s.empty:  # no finished cell: a note, not an empty log axis spanning 1 to 1M
        fig.update_layout(title="Dice vs number of real images", template="plotly_white", height=440,
                          xaxis=dict(visible=False), yaxis=dict(visible=False))
        fig.add_annotation(text="no finished cells yet: each cell's point appears here when it finishes",
                           showarrow=False, x=0.5, y=0.5, xref="paper", yref="paper")
        return fig
    ys = []  # every plotted value with its bar: the y-axis range is chosen from them
    # the no-real-pair levels take turns at a corner, so that two close levels' labels do not overlap
    corners = itertools.cycle(["bottom right", "top left", "top right", "bottom left"])
    for a in AUG_ORDER:
        d = s[s["augmentation"] == a].sort_values("n_real")
        if d.empty:
            continue
        if not ARMS[a].real:  # no real pair: one value whatever N_real, drawn as a level across the chart
            r = d.iloc[0]
            fig.add_hline(y=float(r["dice_mean"]), line=dict(color=_COLORS[a], dash="dash"),
                          annotation_text=f"{AUG_LABEL[a]} (ours, 0 real): {mean_std_text(r)}",
                          annotation_position=next(corners))
            ys += [float(r["dice_mean"])]
            continue
        runs = d["repeats"].astype(int) if "repeats" in d else pd.Series(2, index=d.index)
        # one run has no spread: no error bar, and the hover says "1 run" instead of "± 0.00"
        std = d["dice_std"].where(runs >= 2, 0.0)
        hover = [f"{m:.2f} %" + (f" ± {sd:.2f}" if n >= 2 else "") + f" ({n} run{'s' if n != 1 else ''})"
                 for m, sd, n in zip(d["dice_mean"], std, runs)]
        fig.add_trace(go.Scatter(x=d["n_real"], y=d["dice_mean"],
                                 error_y=dict(type="data", array=std, visible=bool((runs >= 2).any())),
                                 mode="lines+markers", name=f"{AUG_LABEL[a]} (ours)", line=dict(color=_COLORS[a]),
                                 text=hover, hovertemplate="N_real %{x}: %{text}<extra>%{fullData.name}</extra>"))
        ys += [*(d["dice_mean"] - std), *(d["dice_mean"] + std)]
        if paper is None or comparison is None:
            continue
        for k, pair in enumerate(comparison.pairs):
            p = _paper_points(paper, pair, a, d["n_real"])
            if p.empty:
                continue
            fig.add_trace(go.Scatter(
                x=p["n_real"], y=p["dice_mean"], error_y=dict(type="data", array=p["dice_std"].fillna(0)),
                mode="markers", name=f"{AUG_LABEL[a]} (paper {pair[0]}→{pair[1]})",
                marker=dict(symbol=_PLOTLY_SYMBOLS[k % len(_PLOTLY_SYMBOLS)], size=11, color=_COLORS[a])))
            ys += [*(p["dice_mean"] - p["dice_std"].fillna(0)), *(p["dice_mean"] + p["dice_std"].fillna(0))]
    fig.update_layout(title=_title(test, comparison), xaxis_title="N_real (log)",
                      yaxis_title="Dice (%)", xaxis_type="log", template="plotly_white", height=440,
                      legend=dict(orientation="h", y=-0.2))
    if not s.empty:  # ticks at the N_real values only: whole images, never 2.5 or 7.5 (issue 11)
        ns = sorted(int(n) for n in s["n_real"].unique() if n > 0)
        fig.update_xaxes(tickvals=ns, ticktext=[str(n) for n in ns])
    _dice_range(fig, ys)
    return fig


MIN_DICE_SPAN = 5.0  # Dice points: the y-axis never spans less, so 0.01 does not fill the chart


def _dice_range(fig, ys) -> None:
    """A y-axis of at least MIN_DICE_SPAN Dice points (plotly would stretch 94.50-94.51 over the whole
    height); when the points lie closer than that, a note says by how much they differ."""
    ys = [float(y) for y in ys if y == y]  # without NaN
    if not ys:
        return
    lo, hi = min(ys), max(ys)
    if hi - lo >= MIN_DICE_SPAN:
        return
    mid = (lo + hi) / 2
    lo, hi = mid - MIN_DICE_SPAN / 2, mid + MIN_DICE_SPAN / 2
    if hi > 100:  # Dice is a percentage: keep the range inside 0-100
        lo, hi = 100 - MIN_DICE_SPAN, 100.0
    elif lo < 0:
        lo, hi = 0.0, MIN_DICE_SPAN
    fig.update_yaxes(range=[lo, hi])
    spread = max(ys) - min(ys)
    fig.add_annotation(text=f"all points within {spread:.2f} Dice points (y-axis spans {MIN_DICE_SPAN:g})",
                       showarrow=False, x=0.01, y=0.99, xref="paper", yref="paper", xanchor="left",
                       yanchor="top", font=dict(size=11, color="#666"))


def figure3_png(summary: pd.DataFrame, path: str | Path, test: str | None = None,
                paper: pd.DataFrame | None = None, comparison: PaperComparison | None = None) -> Path:
    """The same chart as a static PNG (matplotlib, no browser needed) for docs/results.md."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .fileio import atomic_write
    if test is None and not summary.empty:
        test = summary["test"].iloc[0]
    s = summary[summary["test"] == test]
    fig, ax = plt.subplots(figsize=(7, 4.6), dpi=120)
    for a in AUG_ORDER:
        d = s[s["augmentation"] == a].sort_values("n_real")
        if d.empty:
            continue
        if not ARMS[a].real:
            ax.axhline(float(d["dice_mean"].iloc[0]), color=_COLORS[a], ls="--",
                       label=f"{AUG_LABEL[a]} (ours, 0 real)")
            continue
        ax.errorbar(d["n_real"], d["dice_mean"], yerr=d["dice_std"], marker="o", capsize=3,
                    label=f"{AUG_LABEL[a]} (ours)", color=_COLORS[a])
        if paper is None or comparison is None:
            continue
        for k, pair in enumerate(comparison.pairs):
            p = _paper_points(paper, pair, a, d["n_real"])
            if not p.empty:
                ax.scatter(p["n_real"], p["dice_mean"], marker=_MPL_MARKERS[k % len(_MPL_MARKERS)],
                           facecolors="none", edgecolors=_COLORS[a], s=60,
                           label=f"{AUG_LABEL[a]} (paper {pair[0]}→{pair[1]})")
    ax.set_xscale("log")
    ns = sorted(n for n in s["n_real"].unique() if n > 0)
    ax.set_xticks(ns)
    ax.set_xticklabels([str(int(n)) for n in ns])
    ax.minorticks_off()
    ax.set_xlabel("N_real (real training images)")
    ax.set_ylabel("Dice (%)")
    ax.set_title(_title(test, comparison).replace("<br><sup>", "\n").replace("</sup>", ""), fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
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
