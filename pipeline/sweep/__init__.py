"""The paper's Table 1 as a reproducible, resumable sweep.

    python -m pipeline sweep --preset cpu-small --train hc18:../shared/data/hc18 --loras first=L1,second=L2,third=L3 --out DIR
    python -m pipeline sweep --config sweep.json --out DIR

A sweep is a grid of cells: augmentation in {none, weak (WA), strong (SA), syn (SYN)} x N_real x repeat.
Each cell is an ordinary SAM mask-decoder fine-tuning run (pipeline/sam/finetune.py) in
DIR/cells/<cell>/ with its own seed, then evaluated on every test source:
- none/weak/strong train on N_real real pairs only (WA/SA with the seed code's albumentations);
- syn trains on N_real real + (total - N_real) synthetic pairs from a `folder:` dataset, or generates
  that dataset first with the trimester LoRAs, in the trimester proportions of the real training pool.
Real pairs come from the `train` part of the train source's seeded split; nested subsets make
5 ⊂ 10 ⊂ 20 ... within a repeat. The validation part picks each run's best checkpoint. The test source
`heldout` is the `test` part of the same split: never trained on, never used to choose anything.

One module per job: config.py (SweepConfig, presets), grid.py (the cells), folder.py (the sweep
folder), testset.py (test sets, scored by sam/evaluate.py's batched evaluator), synthetic.py (the SYN arm's
LoRAs and synthetic set), runner.py (run_sweep), report.py (Table-1 markdown), cli.py (`python -m pipeline
sweep`).

Resumable: a finished cell has DIR/cells/<cell>/result.json and is skipped; an interrupted cell resumes
from its last checkpoint; results.csv is rebuilt from the result files, so re-running does no work.
The grid may grow (more N_real, repeats, augmentations) in the same folder; the settings that change what
a cell means (train source, split, epochs, ...) may not.
"""
from .config import AUG_TO_FINETUNE, HELDOUT, PRESETS, SweepConfig, preset
from .folder import Sweep
from .grid import Cell, cells
from .report import report_markdown
from .runner import run_sweep
from .synthetic import generate_synthetic, synthetic_plan, train_trimester_loras
from .testset import TestSet

__all__ = ["AUG_TO_FINETUNE", "HELDOUT", "PRESETS", "Cell", "Sweep", "SweepConfig", "TestSet", "cells",
           "generate_synthetic", "preset", "report_markdown", "run_sweep", "synthetic_plan", "train_trimester_loras"]
