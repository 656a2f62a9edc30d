"""Per-trimester report of generated samples vs real data: valid-ellipse rate, head size, a picture.

    python -m pipeline.diffusion.report --lora first=DIR --lora second=DIR --lora third=DIR \
        --real hc18:../shared/data/hc18 --n 32 --out docs/samples_per_trimester.png --json report.json

Head size is compared in the model's frame (images resized to 128², as the LoRAs see them): the mean
perimeter in pixels of the extracted ellipse, generated vs the real masks of the same trimester.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from ..fileio import atomic_write, atomic_write_json
from ..masks import TRIMESTERS


def evaluate(loras: dict[str, str | None], n: int = 32, seed: int = 1000, real: str | None = None,
             qc: bool = False, batch_size: int = 16, base: str | None = None,
             precision: str = "auto") -> tuple[dict, dict]:
    from .base import real_head_sizes
    from .generate import GenerateConfig, generate, summarize
    out, samples = {}, {}
    real_sizes = real_head_sizes(real) if real else {}
    for tri, lora in loras.items():
        t0 = time.time()
        cfg = GenerateConfig(trimester=tri, n=n, lora=lora, seed=seed, qc=qc, batch_size=batch_size, base=base,
                             precision=precision)
        smp = [e["sample"] for e in generate(cfg) if e["kind"] == "sample"]
        samples[tri] = smp
        s = summarize(smp)
        s["seconds"] = round(time.time() - t0, 1)
        s["lora"] = lora
        reasons: dict[str, int] = {}
        for x in smp:
            if not x.valid:
                key = x.extraction.reason.split(":")[0]
                reasons[key] = reasons.get(key, 0) + 1
        s["refusals"] = reasons
        if tri in real_sizes:
            s["real_mean_perimeter_px"], s["real_n"] = real_sizes[tri]
        out[tri] = s
    return out, samples


def picture(samples: dict, path: str | Path, per_row: int = 6, report: dict | None = None) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    rows = [t for t in TRIMESTERS if t in samples]
    fig, axes = plt.subplots(len(rows), per_row, figsize=(per_row * 1.9, len(rows) * 2.1), squeeze=False)
    for r, t in enumerate(rows):
        for c in range(per_row):
            ax = axes[r][c]
            ax.axis("off")
            if c < len(samples[t]):
                s = samples[t][c]
                ax.imshow(s.picture())
                ax.set_title(("✓" if s.valid else "✗") + f" seed {s.seed}", fontsize=7)
        rep = (report or {}).get(t, {})
        label = f"{t} trimester"
        if rep.get("valid_frac") is not None:
            label += f"\n{rep['valid_frac']:.0%} valid"
        axes[r][0].text(-0.08, 0.5, label, transform=axes[r][0].transAxes, ha="right", va="center", fontsize=9)
    fig.suptitle("Generated in-channel samples (tiny base + per-trimester LoRA): gray = mean(R,G), "
                 "yellow = ellipse extracted from B", fontsize=8)
    fig.tight_layout(rect=(0.08, 0, 1, 0.96))
    path = Path(path)
    atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=110), suffix=".png")
    plt.close(fig)
    return path


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--lora", action="append", default=[], help="TRIMESTER=DIR (repeatable); TRIMESTER= for the base")
    p.add_argument("--real", default=None, help="real data source for head sizes, e.g. hc18:../shared/data/hc18")
    p.add_argument("--n", type=int, default=32)
    p.add_argument("--seed", type=int, default=1000)
    p.add_argument("--qc", action="store_true", help="also compute SAM QC scores (slower)")
    p.add_argument("--base", default=None, help="diffusion base folder (default: the profile's)")
    from .generate import PRECISIONS
    p.add_argument("--precision", choices=PRECISIONS, default="auto")
    p.add_argument("--out", default=None, help="picture path (PNG)")
    p.add_argument("--json", default=None, help="write the report here")
    args = p.parse_args(argv)
    loras = {}
    for item in args.lora:
        t, _, d = item.partition("=")
        if t not in TRIMESTERS:
            p.error(f"--lora {item}: expected TRIMESTER=DIR")
        loras[t] = d or None
    import torch
    torch.set_num_threads(2)
    rep, samples = evaluate(loras, args.n, args.seed, args.real, args.qc, base=args.base, precision=args.precision)
    print(json.dumps(rep, indent=1))
    if args.json:
        atomic_write_json(args.json, rep)
    if args.out:
        print(f"picture: {picture(samples, args.out, report=rep)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
