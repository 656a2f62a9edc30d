"""python -m pipeline sweep: the same code as the Experiments tab."""
from __future__ import annotations

import json
import sys
from pathlib import Path

from ..arms import ARMS
from ..config import add_profile_argument, resolve_profile
from ..data import DataError
from ..fileio import atomic_write_text
from .config import PRESETS, SweepConfig, preset
from .folder import Sweep
from .grid import cells
from .report import report_markdown
from .runner import run_sweep


def add_arguments(p, command: str = "sweep") -> None:
    g = p.add_mutually_exclusive_group(required=True)
    g.add_argument("--config", help="a JSON file of SweepConfig settings")
    g.add_argument("--preset", choices=sorted(PRESETS), help="a named grid (paper, cpu-small, smoke)")
    p.add_argument("--out", required=True, help="the sweep folder (re-run the same command to resume)")
    p.add_argument("--train", help="train source spec (with --preset)")
    p.add_argument("--test", action="append", help="a test source spec (repeatable; default: heldout)")
    p.add_argument("--synthetic", help="folder: dataset of synthetic pairs for the SYN arm")
    p.add_argument("--loras", help="first=DIR,second=DIR,third=DIR: generate the SYN set with these LoRAs")
    p.add_argument("--detail-loras", help="first=DIR,...: LoRAs trained at 2x the base's size for the SYN set's "
                                          "detail pass (generate --detail-lora)")
    p.add_argument("--detail-resolution", type=int, default=None,
                   help="with --train-loras, also train detail LoRAs at this size (256 on the tiny base; 0 = none)")
    p.add_argument("--detail-strength", type=float, default=None,
                   help="share of the sampler's steps the detail pass runs (default 0.5)")
    p.add_argument("--restore-aspect", type=float, default=None,
                   help="write the SYN pairs at this width/height (0 = square; default: the train pool's median "
                        "width/height, 1.48 for HC18's 800x540)")
    p.add_argument("--train-loras", action="store_true",
                   help="train the trimester LoRAs on the train pool first (20 images each, the paper's recipe)")
    p.add_argument("--lora-steps", type=int,
                   help=f"steps per LoRA with --train-loras (default {SweepConfig.lora_steps})")
    p.add_argument("--segmenter", choices=("sam", "unet"),
                   help="sam: fine-tune the profile's SAM decoder (default); unet: a MONAI U-Net from random weights")
    p.add_argument("--unet-steps", type=int, help="optimizer steps per U-Net cell (default: the preset's)")
    p.add_argument("--augmentations", help="comma list of " + ", ".join(f"{k} ({a.label})" for k, a in ARMS.items())
                   + " (default: the preset's)")
    p.add_argument("--n-real", help="comma list of N_real values (real training pairs per cell; default: the preset's)")
    p.add_argument("--repeats", type=int, help="repeats per cell, each with its own seed (default: the preset's)")
    p.add_argument("--epochs", type=int, help="fine-tuning epochs per cell (default: the preset's)")
    p.add_argument("--shard", help="i/n: this worker runs only cells i, i+n, i+2n, ... (0 <= i < n); auto: from a "
                   "SLURM job array. Without it, several workers on one --out share the cells by lock files")
    p.add_argument("--report", help="write the markdown tables here when the sweep ends")
    p.add_argument("--figure", help="write the Figure-3 PNG here when the sweep ends")
    add_profile_argument(p)


def config_from_args(args) -> SweepConfig:
    """The sweep the CLI asks for, with the profile's models (--profile / SONOSYNTH_PROFILE) for every
    model setting the config file does not name."""
    profile = resolve_profile(getattr(args, "profile", None))
    over = {}
    if args.train:
        over["train"] = args.train
    if args.test:
        over["tests"] = args.test
    if args.synthetic:
        over["synthetic"] = args.synthetic
    if args.loras:
        try:
            over["loras"] = dict(kv.split("=", 1) for kv in args.loras.split(","))
        except ValueError:
            raise DataError("--loras expects first=DIR,second=DIR,third=DIR") from None
    if args.train_loras:
        over["train_loras"] = True
    if args.detail_loras:
        try:
            over["detail_loras"] = dict(kv.split("=", 1) for kv in args.detail_loras.split(","))
        except ValueError:
            raise DataError("--detail-loras expects first=DIR,second=DIR,third=DIR") from None
    for k in ("detail_resolution", "detail_strength", "restore_aspect"):
        if getattr(args, k) is not None:
            over[k] = getattr(args, k)
    if args.lora_steps is not None:
        over["lora_steps"] = args.lora_steps
    if args.augmentations:
        over["augmentations"] = [a.strip() for a in args.augmentations.split(",") if a.strip()]
    if args.n_real:
        try:
            over["n_real"] = [int(v) for v in args.n_real.split(",")]
        except ValueError:
            raise DataError("--n-real expects a comma list of integers") from None
    if args.repeats is not None:
        over["repeats"] = args.repeats
    if args.epochs is not None:
        over["epochs"] = args.epochs
    if getattr(args, "segmenter", None):
        over["segmenter"] = args.segmenter
    if getattr(args, "unet_steps", None) is not None:
        over["unet_steps"] = args.unet_steps
    if args.config:
        try:
            base = json.loads(Path(args.config).read_text())
        except FileNotFoundError:
            raise DataError(f"config file not found: {args.config}") from None
        except json.JSONDecodeError as exc:
            raise DataError(f"{args.config} is not valid JSON: {exc}") from None
        if not isinstance(base, dict):
            raise DataError(f"{args.config} must hold a JSON object of sweep settings")
        return SweepConfig.for_profile(profile, **{**base, **over})
    if "train" not in over:
        raise DataError("--train SPEC is needed with --preset")
    return preset(args.preset, profile, **over)


def run(args) -> int:
    from tqdm import tqdm
    from ..locks import detach_from_launcher, parse_shard
    cfg = config_from_args(args)
    shard = parse_shard(getattr(args, "shard", None))  # before detaching: 'auto' may read RANK / WORLD_SIZE
    detach_from_launcher()
    bar = None
    busy: dict[str, dict | None] = {}
    for ev in run_sweep(cfg, args.out, shard=shard):
        k = ev["kind"]
        if k == "plan":
            mine = set(ev["mine"])
            bar = tqdm(total=len(mine), initial=len(mine & set(ev["done"])), unit="cell", file=sys.stderr,
                       desc="cells" if shard is None else f"cells of shard {shard[0]}/{shard[1]}")
        elif k == "cell_busy":
            busy[ev["cell"]] = ev["owner"]
        elif k == "waiting" and bar is not None:
            bar.set_postfix_str(f"{ev['cell']}: waiting for {ev['for']} (another worker makes it)")
        elif k == "cell_start" and bar is not None:
            bar.set_postfix_str(ev["cell"])
        elif k == "lora" and bar is not None:
            bar.set_postfix_str(f"{ev['cell']}: LoRA {ev['trimester']} step {ev['step']}/{ev['total']}")
        elif k == "generate" and bar is not None:
            bar.set_postfix_str(f"{ev['cell']}: generating {ev['trimester']} {ev['have']}/{ev['want']}")
        elif k == "train" and ev["event"] == "step" and "steps" in ev and bar is not None and ev["step"] % 10 == 0:
            bar.set_postfix_str(f"{ev['cell']}: step {ev['step']}/{ev['steps']}")
        elif k == "train" and ev["event"] == "epoch" and bar is not None:
            bar.set_postfix_str(f"{ev['cell']}: epoch {ev['epoch']} val Dice {100 * ev['val_dice']:.2f} %")
        elif k == "cell_done" and bar is not None:
            bar.update(1)
            r = ev["rows"][0]
            tqdm.write(f"{ev['cell']}: Dice {r['dice']:.2f} % on {r['test']} ({ev['seconds'] / 60:.1f} min)",
                       file=sys.stderr)
        elif k == "done":
            if bar is not None:
                bar.close()
            if ev["stopped"]:
                print("stopped: re-run the same command to resume", file=sys.stderr)
    by_name = {c.name: c for c in cells(cfg)}
    busy = {c: o for c, o in busy.items() if not Sweep(args.out).is_done(by_name[c])}
    if busy:
        who = ", ".join(f"{c} ({(o or {}).get('host', '?')}:{(o or {}).get('pid', '?')})" for c, o in sorted(busy.items()))
        print(f"{len(busy)} cell(s) were running in other workers and are left to them: {who}. The report below "
              "has what is finished; re-run this command after they end (a dead worker's cell is taken over "
              "then).", file=sys.stderr)
    md = report_markdown(args.out, command=" ".join(["python -m pipeline sweep", *sys.argv[2:]]))
    print(md)
    if args.report:
        atomic_write_text(args.report, md + "\n")
    if args.figure:
        from ..results import figure3_png, load_paper_reference, paper_comparison
        sw = Sweep(args.out)
        s = sw.summary()
        if not s.empty:
            paper = load_paper_reference()
            test = s["test"].iloc[0]
            figure3_png(s, args.figure, test=test, paper=paper,
                        comparison=paper_comparison(paper, sw.config().train, test))
    return 0
