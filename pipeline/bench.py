"""`python -m pipeline bench sam|diffusion|paper|upload [--json]`: the benchmarks the issues ask for.

Speed goals are checked here, on demand, never in timed unit tests. Each suite lives beside its code
(pipeline/sam/bench.py, pipeline/diffusion/bench.py; the paper profile at full size with random weights:
pipeline/paper_bench.py; what a refused dataset upload costs: pipeline/upload_bench.py) and exposes `run_bench(args) -> dict`.
"""
from __future__ import annotations

import importlib
import json

SUITES = {"sam": "pipeline.sam.bench", "diffusion": "pipeline.diffusion.bench", "paper": "pipeline.paper_bench",
          "upload": "pipeline.upload_bench"}


def add_arguments(p, command: str = "bench") -> None:
    p.add_argument("suite", choices=sorted(SUITES), help="sam (SAM encoder, boxes, training step), diffusion, paper, or upload "
                                                             "(memory and disk of a refused zip upload)")
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--repeats", type=int, default=5, help="timed repetitions per figure (median reported)")
    from .diffusion.generate import PRECISIONS
    p.add_argument("--precision", choices=PRECISIONS, default="auto",
                   help="diffusion: generation precision for both modes (auto: bf16 autocast on CPUs with native bf16)")
    p.add_argument("--base", default=None, help="diffusion: a diffusers base folder (default: the profile's)")
    p.add_argument("--resolution", type=int, default=None,
                   help="diffusion: train and sample at this square size instead of the base's own (what a larger "
                        "working size would cost; timings only: the base learned its own size)")
    p.add_argument("--size", choices=("full", "reduced"), default="full",
                   help="paper: SD v1.5 + SAM ViT-B at full size, or architecture-true at widths / 10")
    p.add_argument("--lora-batch", type=int, default=None,
                   help="paper: LoRA batch size (default: the paper's 4 on a GPU, 1 on a CPU, estimated from there)")
    p.add_argument("--no-checkpointing", action="store_true",
                   help="paper: skip the second LoRA step with gradient checkpointing")
    p.add_argument("--progress", default=None,
                   help="paper: write the figures so far to this JSON file after every phase")


def run(args) -> int:
    figures = importlib.import_module(SUITES[args.suite]).run_bench(args)
    if args.json:
        print(json.dumps(figures))
    else:
        for k, v in figures.items():
            print(f"{k:>28}: {v:.4g}" if isinstance(v, float) else f"{k:>28}: {v}")
    return 0
