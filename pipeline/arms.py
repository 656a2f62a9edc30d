"""The arms of a sweep (the paper's Table 1 rows and ours): what each trains on, and what its verdict compares.

One row per arm; the sweep's grid, its cells' training sets, the results table, chart and verdict all read
this table, so an arm is added here once.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Arm:
    key: str          # as typed in --augmentations and written in results.csv
    label: str        # as printed in tables and charts
    augment: str      # the augmentation the segmenter's training applies to every pair: none, weak, strong
    real: bool        # trains on the cell's N_real real pairs (False: no real pair; recorded with n_real 0)
    synthetic: bool   # trains on synthetic pairs: with real pairs up to `total`, without them `total` of them
    against: str | None  # the arm its verdict line compares it with (None: no verdict line)
    color: str
    paper: bool       # one of the paper's four arms (a sweep's default grid)

    @property
    def hybrid(self) -> bool:
        """The paper's hybrid dataset: N_real real + (total − N_real) synthetic pairs."""
        return self.real and self.synthetic


ARMS: dict[str, Arm] = {a.key: a for a in [
    Arm("none", "None", "none", True, False, None, "#636efa", True),
    Arm("weak", "WA", "weak", True, False, None, "#00cc96", True),
    Arm("strong", "SA", "strong", True, False, None, "#ab63fa", True),
    Arm("syn", "SYN", "none", True, True, "none", "#ef553b", True),
    # not in the paper: do the synthetic pairs add anything to the augmentation everyone already uses?
    Arm("syn-weak", "SYN + WA", "weak", True, True, "weak", "#19d3f3", False),
    # not in the paper: synthetic pairs only, as many as the SYN arm's total; one cell per repeat
    Arm("syn-only", "SYN only", "none", False, True, "none", "#ffa15a", False),
    # not in the paper: can WA on synthetic pairs alone stand in for WA on the N_real real ones?
    Arm("syn-only-weak", "SYN only + WA", "weak", False, True, "weak", "#ff6692", False),
]}

PAPER_ARMS = [k for k, a in ARMS.items() if a.paper]  # a sweep's default
AUG_ORDER = list(ARMS)
AUG_LABEL = {k: a.label for k, a in ARMS.items()}
SYN_ARMS = tuple(k for k, a in ARMS.items() if a.synthetic)  # the arms that train on the synthetic set
AUG_TO_FINETUNE = {k: a.augment for k, a in ARMS.items()}


def n_synthetic(arm: str, n_real: int, total: int) -> int | None:
    """How many synthetic pairs a cell trains on: a hybrid arm tops N_real up to `total`, a synthetic-only arm
    has `total`, the others none (None)."""
    a = ARMS[arm]
    if not a.synthetic:
        return None
    return total - n_real if a.real else total
