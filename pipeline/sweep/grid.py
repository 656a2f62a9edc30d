"""The grid of a sweep: its cells (augmentation x N_real x repeat) in the order they run."""
from __future__ import annotations

from dataclasses import dataclass

from ..results import AUG_ORDER, SYN_ARMS
from .config import SweepConfig


@dataclass(frozen=True)
class Cell:
    augmentation: str
    n_real: int
    repeat: int

    @property
    def name(self) -> str:
        return f"{self.augmentation}-n{self.n_real}-r{self.repeat}"


def cells(cfg: SweepConfig) -> list[Cell]:
    """Repeat by repeat, so a partly finished sweep already holds whole repeats of every arm; within a
    repeat the cheap arms (none/WA/SA) first and SYN last, whose synthetic set (or LoRAs) is only needed,
    or made, when its first cell runs."""
    order = [a for a in AUG_ORDER if a in cfg.augmentations and a not in SYN_ARMS]
    out = []
    for r in range(cfg.repeats):
        out += [Cell(a, n, r) for a in order for n in sorted(cfg.n_real)]
        for a in ("syn", "syn-weak"):
            if a in cfg.augmentations:
                out += [Cell(a, n, r) for n in sorted(cfg.n_real)]
        if "syn-only" in cfg.augmentations:  # no real pair: one cell per repeat, whatever N_real
            out.append(Cell("syn-only", 0, r))
    return out
