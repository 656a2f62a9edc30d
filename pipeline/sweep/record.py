"""The published results: `docs/results.md` rebuilt from committed inputs by one command (issue 32).

A *study* is a finished sweep's record, committed under `docs/results/NAME/`: its `sweep.json` (the settings
it ran with: re-run it with `sweep --config docs/results/NAME/sweep.json --out DIR`), `results.csv` (one row
per cell and test source) and `zero_shot.json` (SAM's reference; absent for the U-Net), plus `study.json`
({"title", "note"}: what it measures, the one sentence a reader needs). Nothing is read from git-ignored
folders, so a clone rebuilds the page exactly:

    python -m pipeline results                      # docs/results.md from docs/results/*/
    python -m pipeline results --check              # fail if docs/results.md is not what the records give
    python -m pipeline results --export outputs/sweeps/sam-default --name sam-cpu-small --title "..."

A study folder has the layout of a sweep folder (pipeline/sweep/folder.py) without its cells, so the sweep's
own report (report.py) reads it.
"""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

from ..config import ROOT
from ..data import DataError
from ..fileio import atomic_write_json, atomic_write_text
from .folder import Sweep
from .report import report_markdown

RECORDS = ROOT / "docs" / "results"
PAGE = ROOT / "docs" / "results.md"
FILES = ("sweep.json", "results.csv", "zero_shot.json")

HEADER = """# Results

Every table below is rebuilt from the committed records in `docs/results/` by one command,
`python -m pipeline results` (a test checks the page equals its output). Each study names the command that
re-runs it from scratch; its numbers then come out within the spread shown (seeded, but CPU threading is not
bit-exact). Dice is on the test part of the train source's seeded split (`heldout`): never trained on and never
used to choose a checkpoint (the best-validation checkpoint is chosen on the val part). The verdict compares
SYN with None at each N_real: the difference of the means and its standard error over repeats; beyond 2 SE
counts as "helps" or "hurts". Dated records of earlier experiments are in `docs/lab/`.
"""


def export_study(sweep_dir: str | Path, name: str, title: str, note: str = "", root: Path = RECORDS) -> Path:
    """Copy a finished sweep's record into `root/name` (the study's files only, never the cells or images)."""
    from ..validate import check_name
    name = check_name(name, "study name")
    sw = Sweep(sweep_dir)
    if not sw.config_path.is_file() or not sw.results_path.is_file():
        raise DataError(f"{sweep_dir} is not a sweep folder with results (no sweep.json or results.csv)")
    if not title.strip():
        raise DataError("study title is empty: say in a few words what the study measures")
    out = Path(root) / name
    out.mkdir(parents=True, exist_ok=True)
    for f in FILES:
        src = sw.path / f
        if f == "sweep.json":  # a clone elsewhere re-runs it: paths inside the project are kept relative
            atomic_write_json(out / f, _portable(json.loads(src.read_text())))
        elif src.is_file():
            shutil.copyfile(src, out / f)
        else:
            (out / f).unlink(missing_ok=True)
    atomic_write_json(out / "study.json", {"title": title.strip(), "note": note.strip()})
    return out


def _portable(settings: dict) -> dict:
    """`settings` with every absolute path inside the project (e.g. the tiny base, which for_profile writes
    absolute) made relative to the project root, where the re-run command is typed."""
    out = {}
    for k, v in settings.items():
        if isinstance(v, str) and Path(v).is_absolute() and Path(v).is_relative_to(ROOT):
            v = Path(v).relative_to(ROOT).as_posix()
        out[k] = v
    return out


def studies(root: Path = RECORDS) -> list[Path]:
    root = Path(root)
    return sorted(p for p in root.iterdir() if (p / "study.json").is_file()) if root.is_dir() else []


def results_page(root: Path = RECORDS) -> str:
    """The page: the header, then per study its title, note, re-run command and the sweep report's tables."""
    parts = [HEADER]
    for d in studies(root):
        info = json.loads((d / "study.json").read_text())
        rel = d.relative_to(ROOT) if d.is_relative_to(ROOT) else d
        parts.append(f"## {info['title']}\n")
        if info.get("note"):
            parts.append(info["note"] + "\n")
        body = report_markdown(d, command=f"python -m pipeline sweep --config {rel}/sweep.json "
                                          f"--out outputs/sweeps/{d.name}")
        parts.append(body.replace("### Test:", "#### Test:") + "\n")
    if len(parts) == 1:
        parts.append("_no studies recorded yet_\n")
    return "\n".join(parts).rstrip() + "\n"


def add_arguments(p, command: str = "results") -> None:
    p.add_argument("--check", action="store_true", help="exit 1 if docs/results.md differs from the records")
    p.add_argument("--export", metavar="SWEEP_DIR", help="record a finished sweep as a study first")
    p.add_argument("--name", help="the study's folder name under docs/results/ (with --export)")
    p.add_argument("--title", default="", help="what the study measures, in a few words (with --export)")
    p.add_argument("--note", default="", help="one paragraph a reader needs (with --export)")


def run(args) -> int:
    if args.export:
        if not args.name:
            raise DataError("--export needs --name NAME (the study's folder under docs/results/)")
        print(f"recorded {export_study(args.export, args.name, args.title, args.note)}")
    page = results_page()
    if args.check:
        if not PAGE.is_file() or PAGE.read_text() != page:
            print("docs/results.md is not what docs/results/ gives: run `python -m pipeline results`",
                  file=sys.stderr)
            return 1
        print("docs/results.md matches its records")
        return 0
    atomic_write_text(PAGE, page)
    print(f"wrote {PAGE.relative_to(ROOT)} from {len(studies())} stud{'y' if len(studies()) == 1 else 'ies'}")
    return 0
