"""A sweep's report: Table-1-shaped markdown, ours beside the paper's."""
from __future__ import annotations

from pathlib import Path

from .folder import Sweep


def report_markdown(sweep_dir: str | Path, command: str | None = None) -> str:
    """Table-1-shaped tables (ours, then the paper's cells beside ours) for every test source of a sweep.
    The paper's columns are labelled by its train/test pair, and a sentence says how alike the pairs are
    (results.paper_comparison: a HC18 held-out run is never shown as if it were the paper's HC18→ES)."""
    from ..results import load_paper_reference, markdown_table, paper_beside, paper_comparison, table1, verdict_lines
    sweep = Sweep(sweep_dir)
    summ = sweep.summary()
    paper = load_paper_reference()
    zs = sweep.zero_shot()
    train = sweep.config().train if sweep.config_path.is_file() else ""
    parts = []
    if command:
        parts.append(f"Command:\n\n```\n{command}\n```\n")
    for test in (summ["test"].unique() if not summ.empty else []):
        parts.append(f"### Test: {test}\n\nDice (%) mean ± std over repeats; best per column in bold.\n")
        parts.append(markdown_table(table1(summ, test)))
        lines = verdict_lines(summ, test)
        if lines:
            seg = sweep.config().segmenter if sweep.config_path.is_file() else "sam"
            parts.append(f"\nVerdict ({'U-Net from scratch' if seg == 'unet' else 'SAM'}; difference of means ± its "
                         "standard error; beyond 2 SE counts):\n\n" + "\n".join(f"- {ln}" for ln in lines) + "\n")
        if test in zs:
            parts.append(f"\nZero-shot (no fine-tuning): {zs[test]['dice']:.2f} % Dice on "
                         f"{zs[test]['n_test']} images.\n")
        cmp = paper_comparison(paper, train, test)
        parts.append(f"\nBeside ours, {cmp.note} (Table 1, mean ± std as printed; — = no such cell):\n")
        parts.append(markdown_table(paper_beside(summ, paper, test, cmp), index=False))
    return "\n".join(parts) if parts else "_no finished cells yet_"
