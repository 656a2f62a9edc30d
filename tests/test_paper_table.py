"""The paper's Table 1 as stored (all 100 cells, checked against the paper's text) and the renderer that
shows the paper's cells beside ours: labelled by the paper's train/test pair, never passed off as ours."""
import re
from pathlib import Path

import pandas as pd
import pytest

from pipeline.results import (PaperComparison, dataset_label, figure3, figure3_png, load_paper_reference,
                              markdown_table, paper_beside, paper_comparison, summarize)

PAPER_TEXT = Path(__file__).resolve().parents[1].parent / "shared" / "paper" / \
    "wang-2025-diffusion-augmentation-fetal-head.txt"
PAIRS = [("HC18", "ES"), ("HC18", "AF"), ("ES", "ES"), ("ES", "AF")]
N_REAL = [5, 10, 20, 50, 100, 300, 500]


@pytest.fixture(scope="module")
def paper():
    return load_paper_reference()


def test_all_100_cells_25_per_pair_no_arm_at_500(paper):
    assert len(paper) == 100
    assert not paper.duplicated(["train", "test", "augmentation", "n_real"]).any()
    assert paper[["dice_mean", "dice_std"]].notna().all().all()
    for pair in PAIRS:
        p = paper[(paper.train == pair[0]) & (paper.test == pair[1])]
        assert len(p) == 25, pair
        assert sorted(p[p.augmentation == "none"].n_real) == N_REAL
        for arm in ("weak", "strong", "syn"):
            assert sorted(p[p.augmentation == arm].n_real) == N_REAL[:-1], (pair, arm)


@pytest.mark.parametrize("train,test,aug,n,mean,std", [
    ("HC18", "ES", "syn", 5, 94.66, 0.03),      # the abstract's headline number
    ("HC18", "ES", "none", 5, 90.51, 0.05),
    ("HC18", "ES", "none", 500, 96.22, 0.01),
    ("HC18", "AF", "weak", 5, 90.60, 0.76),
    ("HC18", "AF", "syn", 300, 95.47, 0.12),
    ("ES", "ES", "strong", 100, 94.56, 0.04),
    ("ES", "AF", "none", 20, 82.18, 1.51),
    ("ES", "AF", "strong", 300, 94.63, 0.01),
])
def test_cells_as_printed(paper, train, test, aug, n, mean, std):
    hit = paper[(paper.train == train) & (paper.test == test) & (paper.augmentation == aug) & (paper.n_real == n)]
    assert len(hit) == 1
    assert hit.dice_mean.iloc[0] == pytest.approx(mean, abs=1e-9)
    assert hit.dice_std.iloc[0] == pytest.approx(std, abs=1e-9)


@pytest.mark.skipif(not PAPER_TEXT.is_file(), reason=f"the paper's text is not at {PAPER_TEXT}")
def test_every_cell_equals_the_paper_text(paper):
    """Parse Table 1 out of the paper's text (an independent reading from the stored CSV) and compare all
    cells, '-' included."""
    lines = PAPER_TEXT.read_text().splitlines()
    head = next(k for k, line in enumerate(lines) if line.startswith("DA\tTrain/Test"))
    arms = {"- (baseline)": "none", "WA": "weak", "SA": "strong", "SYN (Ours)": "syn"}
    seen, pair = 0, None
    for line in lines[head + 2: head + 18]:
        parts = line.split("\t")
        if parts[1].strip():
            pair = tuple(x.strip() for x in parts[1].split("/"))
        for n, text in zip(N_REAL, parts[2:], strict=True):
            hit = paper[(paper.train == pair[0]) & (paper.test == pair[1]) & (paper.augmentation == arms[parts[0]])
                        & (paper.n_real == n)]
            if text.strip() == "-":
                assert hit.empty, (pair, parts[0], n)
                continue
            mean, std = map(float, re.match(r"\s*([\d.]+)\s*\\pm\s*([\d.]+)", text).groups())
            assert (hit.dice_mean.iloc[0], hit.dice_std.iloc[0]) == (mean, std), (pair, parts[0], n)
            seen += 1
    assert seen == 100


def test_dataset_labels():
    assert dataset_label("hc18:../shared/data/hc18") == "HC18"
    assert dataset_label("heldout", "hc18:/data/hc18") == "HC18"
    assert dataset_label("folder:/data/es/") == "ES"
    assert dataset_label("folder:/data/AF") == "AF"
    assert dataset_label("folder:/data/my_scans") == "my_scans"
    assert dataset_label("heldout", "phantom:24") == "phantom"


def _summary(test: str, cells):
    return summarize(pd.DataFrame([dict(augmentation=a, n_real=n, repeat=0, test=test, n_test=3, dice=d, dice_std=0.0,
                                        hc_abs_error_mm=1.0, run="x") for a, n, d in cells]))


def test_hc18_heldout_shows_hc18_pairs_labelled_as_another_test_set(paper):
    """Our HC18 held-out split is not a pair of the paper's: its HC18→ES and HC18→AF cells are shown, each
    in a column named by its pair, and the note says they were tested elsewhere; ES-trained pairs never."""
    s = _summary("heldout", [("syn", 5, 91.0), ("weak", 5, 90.0), ("none", 500, 96.5), ("weak", 500, 96.0),
                             ("none", 3, 88.0)])
    cmp = paper_comparison(paper, "hc18:/data/hc18", "heldout")
    assert cmp.ours == ("HC18", "HC18") and cmp.relation == "other test set"
    assert cmp.pairs == (("HC18", "ES"), ("HC18", "AF"))
    assert "no HC18→HC18 numbers" in cmp.note and "not like with like" in cmp.note
    side = paper_beside(s, paper, "heldout", cmp).set_index(["augmentation", "n_real"])
    assert list(side.columns) == ["ours (HC18→HC18)", "paper (HC18→ES)", "paper (HC18→AF)"]
    assert len(side) == 5  # every cell of ours, once
    assert side.loc[("SYN", 5), "ours (HC18→HC18)"] == "91.00 (1 run)"  # one repeat: no "± 0.00" (issue 33)
    assert side.loc[("SYN", 5), "paper (HC18→ES)"] == "94.66 ± 0.03"
    assert side.loc[("SYN", 5), "paper (HC18→AF)"] == "94.38 ± 0.23"
    assert side.loc[("WA", 5), "paper (HC18→AF)"] == "90.60 ± 0.76"
    assert side.loc[("None", 500), "paper (HC18→ES)"] == "96.22 ± 0.01"
    assert side.loc[("WA", 500), "paper (HC18→ES)"] == "—"  # the arms have no N_real=500 cell
    assert side.loc[("None", 3), "paper (HC18→AF)"] == "—"  # an N_real the paper did not run
    md = markdown_table(side.reset_index(), index=False)
    assert "ES→ES" not in md and "ES→AF" not in md

    fig = figure3(s, test="heldout", paper=paper, comparison=cmp)
    traces = {tr.name: tr for tr in fig.data}
    assert {"SYN (ours)", "WA (ours)", "None (ours)"} <= set(traces)
    assert list(traces["SYN (paper HC18→ES)"].y) == [94.66]
    assert list(traces["SYN (paper HC18→AF)"].y) == [94.38]
    assert list(traces["None (paper HC18→ES)"].x) == [500]  # only our N_real values; the paper has no N_real=3
    assert not any(n.startswith(("SA", "SYN (paper ES", "None (paper ES")) for n in traces)
    assert "other test set" in fig.layout.title.text and "HC18→ES" in fig.layout.title.text


def test_hc18_to_es_run_gets_exactly_its_pair(paper, tmp_path):
    s = _summary("folder:/data/ES", [("syn", 10, 94.0), ("strong", 10, 93.0)])
    cmp = paper_comparison(paper, "hc18:/data/hc18", "folder:/data/ES")
    assert cmp == PaperComparison(("HC18", "ES"), (("HC18", "ES"),), "same")
    side = paper_beside(s, paper, "folder:/data/ES", cmp).set_index("augmentation")
    assert list(side.columns) == ["n_real", "ours (HC18→ES)", "paper (HC18→ES)"]
    assert side.loc["SYN", "paper (HC18→ES)"] == "94.44 ± 0.02"
    assert side.loc["SA", "paper (HC18→ES)"] == "91.49 ± 0.05"
    fig = figure3(s, paper=paper, comparison=cmp)
    assert {tr.name for tr in fig.data} == {"SA (ours)", "SYN (ours)", "SA (paper HC18→ES)", "SYN (paper HC18→ES)"}
    assert "<br>" not in fig.layout.title.text  # the same pair: no warning line
    png = figure3_png(s, tmp_path / "f.png", paper=paper, comparison=cmp)
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_es_trained_run_on_af(paper):
    cmp = paper_comparison(paper, "folder:/data/ES", "folder:/data/AF")
    assert cmp.pairs == (("ES", "AF"),) and cmp.relation == "same"
    cmp = paper_comparison(paper, "folder:/data/ES", "heldout")
    assert cmp.pairs == (("ES", "ES"),) and cmp.relation == "same"
