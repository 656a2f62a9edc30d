"""The U-Net's validation Dice against its training length, per arm: how many steps should a cell train?

    python scripts/unet_val_curve.py --arm syn --synthetic DIR [--total 85] --steps 400 [--n-real 5] [--repeat 0] [--out DIR]

Trains one U-Net cell as `sweep --preset cpu-unet` builds it (`SweepConfig.unet_config`, `pipeline.unet.train_unet`)
with only its length and validation interval changed, and prints the validation Dice (the val part of the train source's
split, 30 pairs: the part the sweep chooses its checkpoint on) every 50 steps, with the seconds so far. It
never touches the test part: choosing the steps from it would tune to the test split.
Arms: those of the sweep (pipeline/arms.py; an arm with synthetic pairs needs --synthetic). Recorded:
docs/lab/2026-12-07-unet-steps.md, docs/lab/2026-12-08-unet-longer-and-stricter-qc.md.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main(argv=None) -> int:
    from pipeline.arms import ARMS
    from pipeline.sweep.config import preset
    from pipeline.unet import train_unet

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--arm", required=True, choices=list(ARMS))
    p.add_argument("--train", default="hc18:../shared/data/hc18", help="the real source (data spec)")
    p.add_argument("--synthetic", default=None, help="a generated dataset folder (the arms with synthetic pairs)")
    p.add_argument("--n-real", type=int, default=5)
    p.add_argument("--total", type=int, default=None,
                   help="real + synthetic pairs of a SYN cell (default: the preset's 100; 85 for an 80-pair folder)")
    p.add_argument("--steps", type=int, default=400)
    p.add_argument("--val-every", type=int, default=50)
    p.add_argument("--repeat", type=int, default=0, help="the sweep's repeat (its seed is the preset's + repeat)")
    p.add_argument("--real-share", type=float, default=None,
                   help="share of each batch drawn from the real pairs (default: uniform over the hybrid set)")
    p.add_argument("--out", default=None, help="the run folder (default: a temporary one)")
    a = p.parse_args(argv)

    syn = None
    if ARMS[a.arm].synthetic:
        if not a.synthetic:
            p.error(f"--arm {a.arm} needs --synthetic")
        syn = a.synthetic if ":" in a.synthetic else f"folder:{a.synthetic}"
    # the cell exactly as `sweep --preset cpu-unet` builds it, only its length and validation interval changed
    sweep = preset("cpu-unet", train=a.train, total=a.total, unet_steps=a.steps, unet_val_every=a.val_every)
    cfg = sweep.unet_config(a.n_real if ARMS[a.arm].real else 0, a.arm, syn, a.repeat)
    if a.real_share is not None:
        cfg.real_share = a.real_share
    out = a.out or tempfile.mkdtemp(prefix=f"unet-{a.arm}-")
    t0 = time.time()
    print(f"arm {a.arm}, repeat {a.repeat}, {a.steps} steps -> {out}")
    print(f"{'step':>5} {'val Dice':>9} {'s':>6}")
    for ev in train_unet(cfg, out, resume=False):
        if ev["kind"] == "epoch":
            print(f"{ev['step']:>5} {ev['val_dice']:>9.4f} {time.time() - t0:>6.0f}", flush=True)
        elif ev["kind"] == "done":
            print(f"best val Dice {ev['best_val_dice']:.4f} at validation {ev['best_epoch']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
