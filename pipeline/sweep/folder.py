"""A sweep folder on disk: sweep.json, cells/<cell>/ (run + result.json), results.csv, synthetic/, locks/."""
from __future__ import annotations

import json
from pathlib import Path

from ..data import DataError
from ..fileio import atomic_write_json, atomic_write_text
from ..locks import FileLock
from ..results import RESULT_COLUMNS, load_results, summarize
from ..runs import refuse_changed
from .config import SweepConfig
from .grid import Cell


class Sweep:
    """A sweep folder: sweep.json, cells/<cell>/ (run + result.json), results.csv, synthetic/."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    @property
    def config_path(self) -> Path:
        return self.path / "sweep.json"

    @property
    def results_path(self) -> Path:
        return self.path / "results.csv"

    def cell_dir(self, cell: Cell) -> Path:
        return self.path / "cells" / cell.name

    def config(self) -> SweepConfig:
        try:
            return SweepConfig.from_dict(json.loads(self.config_path.read_text()))
        except FileNotFoundError:
            raise DataError(f"{self.path} is not a sweep folder (no sweep.json)") from None

    def start(self, cfg: SweepConfig) -> None:
        """Create the folder, or check the identity settings of an existing one; the grid may grow."""
        if self.config_path.is_file():
            # the one resume rule (runs.refuse_changed), limited to the settings that define a finished cell;
            # a sweep.json written before a setting existed had its default (e.g. segmenter "sam")
            old = {**SweepConfig.defaults(), **json.loads(self.config_path.read_text())}
            refuse_changed(f"sweep {self.path.name}", old, cfg.as_dict(), may_change=(), only=SweepConfig.IDENTITY)
        self.path.mkdir(parents=True, exist_ok=True)
        atomic_write_json(self.config_path, cfg.as_dict())

    def result_rows(self) -> list[dict]:
        rows = []
        for p in sorted((self.path / "cells").glob("*/result.json")):
            try:
                rows += json.loads(p.read_text())["rows"]
            except (json.JSONDecodeError, KeyError):
                continue  # a damaged result is redone, never trusted
        return rows

    def rebuild_results(self) -> None:
        """results.csv from every cell's result.json. Under a lock: with several workers, a rebuild that read
        the cells before another worker's newest result could otherwise be written after that worker's."""
        import pandas as pd
        with FileLock(self.lock_path("results")):
            df = pd.DataFrame(self.result_rows(), columns=RESULT_COLUMNS)
            atomic_write_text(self.results_path, df.to_csv(index=False))

    def lock_path(self, name: str) -> Path:
        return self.path / "locks" / f"{name}.lock"

    @property
    def synthetic_marker(self) -> Path:
        return self.path / "synthetic" / "complete.json"

    def synthetic_ready(self, plan: dict[str, int] | None = None) -> str | None:
        """The SYN arm's generated set as a source spec once it is complete (its marker written) and, given the
        `plan` the sweep needs now, holds at least that many pairs per trimester (a grid grown with SYN only
        needs more than the set was made for: generation then continues), else None."""
        if not self.synthetic_marker.is_file():
            return None
        if plan is not None:
            try:
                made = json.loads(self.synthetic_marker.read_text()).get("plan") or {}
            except (OSError, ValueError):
                return None
            if any(int(made.get(t, 0)) < n for t, n in plan.items()):
                return None
        return f"folder:{self.path / 'synthetic'}"

    def is_done(self, cell: Cell) -> bool:
        p = self.cell_dir(cell) / "result.json"
        if not p.is_file():
            return False
        try:
            return bool(json.loads(p.read_text())["rows"])
        except (json.JSONDecodeError, KeyError):
            return False

    def results(self):
        return load_results(self.results_path)

    def summary(self):
        return summarize(self.results())

    def zero_shot(self) -> dict:
        p = self.path / "zero_shot.json"
        return json.loads(p.read_text()) if p.is_file() else {}
