"""The grid of a sweep: its cells (augmentation x N_real x repeat) in the order they run."""
from __future__ import annotations

from dataclasses import dataclass

from ..arms import ARMS, AUG_ORDER
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
    plain = [a for a in AUG_ORDER if a in cfg.augmentations and not ARMS[a].synthetic]
    hybrid = [a for a in AUG_ORDER if a in cfg.augmentations and ARMS[a].hybrid]
    syn_only = [a for a in AUG_ORDER if a in cfg.augmentations and ARMS[a].synthetic and not ARMS[a].real]
    out = []
    for r in range(cfg.repeats):
        out += [Cell(a, n, r) for a in plain + hybrid for n in sorted(cfg.n_real)]
        out += [Cell(a, 0, r) for a in syn_only]  # no real pair: one cell per repeat, whatever N_real
    return out
